"""Dynamic batching, free of HTTP and ONNX: scheduling in `batcher`, model calls in `executor`."""

from service.batching.batcher import BatchFunction, BatchObserver, DynamicBatcher, FinishFunction
from service.batching.errors import (
    BatcherClosed,
    BatchingError,
    BatchSizeMismatch,
    DeadlineExceeded,
    QueueFull,
    SchedulerFailed,
    SchedulerRestarting,
)
from service.batching.executor import threaded_batch_function

__all__ = [
    "BatchFunction",
    "BatchObserver",
    "BatchSizeMismatch",
    "BatcherClosed",
    "BatchingError",
    "DeadlineExceeded",
    "DynamicBatcher",
    "FinishFunction",
    "QueueFull",
    "SchedulerFailed",
    "SchedulerRestarting",
    "threaded_batch_function",
]
