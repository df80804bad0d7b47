"""Dynamic batching, free of HTTP and ONNX: scheduling in `batcher`, array merging in `arrays`."""

from service.batching.arrays import array_batch_function, split_rows, stack_items
from service.batching.batcher import BatchFunction, BatchObserver, DynamicBatcher
from service.batching.errors import (
    BatcherClosed,
    BatchingError,
    BatchSizeMismatch,
    DeadlineExceeded,
    QueueFull,
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
    "array_batch_function",
    "split_rows",
    "stack_items",
]
