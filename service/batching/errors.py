"""What the batcher raises to a waiting caller; plain exceptions, no transport attached."""

from __future__ import annotations


class BatchingError(Exception):
    """Base of the batcher's own errors."""


class QueueFull(BatchingError):
    """The queue had no room for the request's items; nothing was queued."""


class DeadlineExceeded(BatchingError):
    """The request's deadline passed before all its items ran."""


class BatcherClosed(BatchingError):
    """The batcher is draining or closed and takes no new work, or dropped this work at close."""


class BatchSizeMismatch(BatchingError):
    """The batch function broke its contract: it must return one result per item."""


class SchedulerFailed(BatchingError):
    """The batcher's scheduling thread failed (not a batch); this request was waiting in it."""


class SchedulerRestarting(BatchingError):
    """The scheduler failed a moment ago and is being restarted; nothing was queued."""
