"""Dynamic batching, free of HTTP and ONNX: scheduling in `batcher`, array merging in `arrays`."""

from service.batching.arrays import (
    array_batch_function,
    split_rows,
    stack_items,
    threaded_batch_function,
)
from service.batching.batcher import BatchFunction, BatchObserver, DynamicBatcher
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
    "QueueFull",
    "SchedulerFailed",
    "SchedulerRestarting",
    "array_batch_function",
    "split_rows",
    "stack_items",
    "threaded_batch_function",
]
