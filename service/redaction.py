"""Keeps a secret (the API key) out of every log line, whoever writes it.

A client may put the key where it does not belong (`?api_key=...`, a path segment), and the
access log writes what clients send; so the filter sits on the handlers, where every record
passes, and replaces the secret wherever it appears in the formatted message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

REDACTED = "[redacted]"
_LOGGERS_WITH_HANDLERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


class RedactSecret(logging.Filter):
    """Rewrites records whose message contains `secret`; never drops a record."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        if self.secret in message:
            record.msg = message.replace(self.secret, REDACTED)
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
