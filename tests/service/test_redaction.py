"""The API key never reaches a log line, however a client spells it in a URL."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest

from service.redaction import REDACTED, RedactSecret, secret_redacted_in_logs

# Base64-like, with the characters URLs treat specially; a space and a non-ASCII letter too.
KEYS = ["Zm9v+YmFy/YmF6==", "s3cr3t key+with=odd&chars é", "plain-key_123"]


def _every_byte_encoded(text: str, *, lower: bool = False) -> str:
    return "".join(f"%{byte:02x}" if lower else f"%{byte:02X}" for byte in text.encode("utf-8"))


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda match: match.group().lower(), text)


def _partially_encoded(text: str) -> str:
    return "".join(
        quote(character, safe="") if index % 2 else character
        for index, character in enumerate(text)
    )


SPELLINGS: dict[str, Callable[[str], str]] = {
    "verbatim": lambda key: key,
    "quote (uvicorn's path form)": quote,
    "quote, nothing safe": lambda key: quote(key, safe=""),
    "quote_plus (form encoding)": quote_plus,
    "lower-case hex": lambda key: _lower_hex(quote(key, safe="")),
    "every byte encoded": _every_byte_encoded,
    "every byte encoded, lower-case": lambda key: _every_byte_encoded(key, lower=True),
    "every other character encoded": _partially_encoded,
    "encoded twice": lambda key: quote(quote(key, safe=""), safe=""),
    "form-encoded twice": lambda key: quote_plus(quote_plus(key)),
}


def _decodings(message: str) -> list[str]:
    """Every reading of the message a person or a tool might apply to recover the key."""
    once = [message, unquote(message), unquote_plus(message)]
    return once + [unquote(text) for text in once] + [unquote_plus(text) for text in once]


def _redacted(redact: RedactSecret, message: str) -> str:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "f", 1, "%s", (message,), None)
    assert redact.filter(record) is True
    return record.getMessage()


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_the_key_is_redacted_in_every_url_spelling(key: str, spelling: str) -> None:
    written = SPELLINGS[spelling](key)
    line = f'127.0.0.1:5000 - "GET /v1/models/{written}/x?api_key={written}&n=1 HTTP/1.1" 401'
    out = _redacted(RedactSecret(key), line)
    assert out.count(REDACTED) == 2, out
    assert out.endswith('&n=1 HTTP/1.1" 401')
    for reading in _decodings(out):
        assert key not in reading, (spelling, out)


@pytest.mark.parametrize("key", KEYS)
def test_random_mixtures_of_spellings_are_redacted(key: str) -> None:
    rng = random.Random(13)
    redact = RedactSecret(key)

    def spell(character: str) -> str:
        raw = character.encode("utf-8")
        choice = rng.randrange(5)
        if choice == 0:
            return character
        if choice == 4 and character == " ":
            return "+"
        hex_bytes = [f"{byte:02x}" for byte in raw]
        if choice == 1:
            hex_bytes = [pair.upper() for pair in hex_bytes]
        elif choice == 2:
            hex_bytes = [rng.choice([pair[0].upper(), pair[0]]) + pair[1] for pair in hex_bytes]
        prefix = "%25" if choice == 3 else "%"
        return "".join(prefix + pair for pair in hex_bytes)

    for _ in range(300):
        written = "".join(spell(character) for character in key)
        out = _redacted(redact, f"GET /?k={written} 200")
        assert out == f"GET /?k={REDACTED} 200", written


def test_near_misses_and_other_lines_are_left_alone() -> None:
    key = KEYS[0]
    redact = RedactSecret(key)
    near = key[:-1] + "x"
    for line in [f"GET /?k={near}", f"GET /?k={quote(near, safe='')}", "GET /healthz 200"]:
        assert _redacted(redact, line) == line
    plain = logging.LogRecord("x", logging.INFO, "f", 1, "GET /healthz %d", (200,), None)
    assert redact.filter(plain)
    assert plain.args == (200,)  # untouched records keep their arguments


def test_a_malformed_record_is_passed_on() -> None:
    broken = logging.LogRecord("x", logging.INFO, "f", 1, "%d %d", ("one",), None)
    assert RedactSecret(KEYS[0]).filter(broken) is True


def test_the_handlers_redact_while_inside_and_stop_after() -> None:
    key = KEYS[0]
    handler = logging.StreamHandler()
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(handler)
    try:
        with secret_redacted_in_logs(key):
            assert any(isinstance(f, RedactSecret) for f in handler.filters)
        assert not handler.filters
    finally:
        logger.removeHandler(handler)
