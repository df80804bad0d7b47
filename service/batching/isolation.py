"""Failure isolation: when a batch fails, retry its items one by one to find whose it was.

Without it, one poisoned input (one that makes the runtime raise) fails every caller that
happened to share its batch. With it, a failed batch of n items costs n more single runs,
the items that run alone succeed, and only the failing ones come back as `ItemFailed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

from service.batching.batcher import BatchFunction

logger = logging.getLogger(__name__)

InT = TypeVar("InT")
OutT = TypeVar("OutT")


@dataclass(frozen=True)
class ItemFailed:
    """The result of an item that failed even when run alone."""

    error: Exception


def isolate_failures(
    batch_fn: BatchFunction[InT, OutT], *, name: str = "batch"
) -> BatchFunction[InT, OutT | ItemFailed]:
    """`batch_fn`, but a failed batch of several items is retried one item at a time."""

    def run(items: list[InT]) -> list[OutT | ItemFailed]:
        try:
            return list(batch_fn(items))
        except Exception as error:
            if len(items) == 1:
                raise
            logger.warning(
                "%s: batch of %d failed (%s); retrying its items one by one",
                name,
                len(items),
                error,
            )
        results: list[OutT | ItemFailed] = []
        for item in items:
            try:
                (output,) = batch_fn([item])
            except Exception as error:
                results.append(ItemFailed(error))
            else:
                results.append(output)
        return results

    return run
