"""The API key check, shared by every front end (v1 and v2 REST, gRPC)."""

from __future__ import annotations

import hmac

from service.errors import Unauthorized

HTTP_HINT = "send 'Authorization: Bearer <key>'"


def check_bearer(header: bytes | None, expected: bytes, hint: str = HTTP_HINT) -> None:
    """Return if `header` is `Bearer <expected>` (scheme in any case); Unauthorized otherwise."""
    scheme, _, token = (header or b"").partition(b" ")
    # compare_digest takes the same time wherever the first difference is.
    if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected):
        return
    problem = "missing API key" if not header else "wrong API key"
    raise Unauthorized(f"{problem}: {hint}")
