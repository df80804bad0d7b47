"""The server's own view of a step, from two `/metrics` scrapes: mean batch size, queue wait."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.loadtest.stats import ServerFigures

BATCH_SIZE = "imagegen_batch_size_images"
QUEUE_WAIT = "imagegen_queue_wait_seconds"
INFERENCE = "imagegen_inference_seconds"
_WANTED = frozenset(
    f"{family}_{part}"
    for family in (BATCH_SIZE, QUEUE_WAIT, INFERENCE)
    for part in ("sum", "count")
)

Snapshot = dict[str, float]


def parse_model_sums(text: str, model: str) -> Snapshot:
    """The `_sum` and `_count` of the batching histograms for one model, by sample name
    (prometheus-client's own parser; a scrape it cannot parse gives nothing)."""
    found: Snapshot = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:  # without a TYPE line a sample is its own family
                if sample.name in _WANTED and sample.labels.get("model") == model:
                    found[sample.name] = float(sample.value)
    except ValueError:
        return {}
    return found


def _mean(before: Snapshot, after: Snapshot, family: str) -> tuple[float | None, float]:
    total_key, count_key = f"{family}_sum", f"{family}_count"
    if total_key not in after or count_key not in after:
        return None, 0.0
    count = after[count_key] - before.get(count_key, 0.0)
    if count <= 0:
        return None, 0.0
    return (after[total_key] - before.get(total_key, 0.0)) / count, count


def server_figures(before: Snapshot | None, after: Snapshot | None) -> ServerFigures:
    """Means over the step from the difference of two scrapes; None where either is missing."""
    if before is None or after is None:
        return ServerFigures()
    batch_size, batches = _mean(before, after, BATCH_SIZE)
    queue_wait_s, _ = _mean(before, after, QUEUE_WAIT)
    inference_s, _ = _mean(before, after, INFERENCE)
    return ServerFigures(
        mean_batch_size=batch_size,
        mean_queue_wait_ms=None if queue_wait_s is None else queue_wait_s * 1000.0,
        mean_inference_ms=None if inference_s is None else inference_s * 1000.0,
        batches=int(batches) if batch_size is not None else None,
    )
