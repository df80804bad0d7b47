"""Dynamic batching, free of HTTP and ONNX: scheduling (in a thread of its own) in `batcher`,
failure isolation in `isolation`."""

from service.batching.batcher import (
    BatchFunction,
    BatchObserver,
    DynamicBatcher,
    FinishFunction,
    NeedsFinish,
)
from service.batching.errors import (
    BatcherClosed,
    BatchingError,
    BatchSizeMismatch,
    DeadlineExceeded,
    QueueFull,
    SchedulerFailed,
    SchedulerRestarting,
)

__all__ = [
    "BatchFunction",
    "BatchObserver",
    "BatchSizeMismatch",
    "BatcherClosed",
    "BatchingError",
    "DeadlineExceeded",
    "DynamicBatcher",
    "FinishFunction",
    "NeedsFinish",
    "QueueFull",
    "SchedulerFailed",
    "SchedulerRestarting",
]
