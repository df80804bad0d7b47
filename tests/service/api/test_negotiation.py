"""Accept header negotiation with quality values and wildcards."""

from __future__ import annotations

import pytest

from service.api.negotiation import negotiate
from service.errors import NotAcceptable

OFFERED = ["image/png", "application/json"]


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "image/png"),
        ("", "image/png"),
        ("*/*", "image/png"),
        ("application/json", "application/json"),
        ("APPLICATION/JSON; charset=utf-8", "application/json"),
        ("image/png;q=0.4, application/json;q=0.9", "application/json"),
        ("application/*, image/png;q=0.1", "application/json"),
        ("text/html, */*;q=0.1", "image/png"),
        ("image/*;q=0, */*", "application/json"),
        ("image/png;q=bogus, application/json", "application/json"),
    ],
)
def test_preferred_type_wins(accept: str | None, chosen: str) -> None:
    assert negotiate(accept, OFFERED) == chosen


@pytest.mark.parametrize("accept", ["text/html", "image/gif", "*/*;q=0", "image/png;q=0"])
def test_nothing_acceptable_is_406(accept: str) -> None:
    with pytest.raises(NotAcceptable, match="offers image/png"):
        negotiate(accept, ["image/png"])
