"""Keeps a secret (the API key) out of every log line, whoever writes it, in any URL encoding.

A client may put the key where it does not belong (`?api_key=...`, a path segment), and the
access log writes what clients send; so the filter sits on the handlers, where every record
passes, and replaces the secret wherever it appears in the formatted message.

In a URL the key may arrive in many spellings: uvicorn logs the query string as sent and the
path re-quoted (`+` -> `%2B`), and a client may percent-encode any character or none, with
upper- or lower-case hex, write a space as `+`, or encode twice (`%252B`; `%2B` for a space).
The filter matches all of them with one pattern built from the secret: each character is
itself or any of those encodings of its UTF-8 bytes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

REDACTED = "[redacted]"
_LOGGERS_WITH_HANDLERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def _encoded_byte(byte: int) -> str:
    """`%XX` for one byte, hex in either case, `%` itself possibly encoded again (`%25XX`)."""
    hex_digits = "".join(
        f"[{digit}{digit.upper()}]" if digit.isalpha() else digit for digit in f"{byte:02x}"
    )
    return f"%(?:25)?{hex_digits}"


def _character(character: str) -> str:
    spellings = [re.escape(character), "".join(map(_encoded_byte, character.encode("utf-8")))]
    if character == " ":  # form encoding writes it `+`, which may be encoded in turn
        spellings += [r"\+", _encoded_byte(ord("+"))]
    return "(?:" + "|".join(spellings) + ")"


def secret_pattern(secret: str) -> re.Pattern[str]:
    """A pattern matching `secret` as written, or in any URL encoding of any of its characters."""
    return re.compile("".join(_character(character) for character in secret))


class RedactSecret(logging.Filter):
    """Rewrites records whose message contains `secret` (in any URL encoding); never drops one."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.pattern = secret_pattern(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        redacted, count = self.pattern.subn(REDACTED, message)
        if count:
            record.msg = redacted
            record.args = None
        return True


@contextmanager
def secret_redacted_in_logs(secret: str | None) -> Iterator[None]:
    """While inside, the handlers of the root and uvicorn loggers never print `secret`."""
    if not secret:
        yield
        return
    redact = RedactSecret(secret)
    handlers = {
        handler for name in _LOGGERS_WITH_HANDLERS for handler in logging.getLogger(name).handlers
    }
    for handler in handlers:
        handler.addFilter(redact)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redact)
