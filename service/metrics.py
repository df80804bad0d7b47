"""Prometheus metrics of one app, in its own registry so several apps can share a process."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Methods that get their own label; any other method a client sends is counted as "other", so
# arbitrary method names cannot grow the number of series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def protocol_label(path: str) -> str:
    """The protocol label of an HTTP request: v2 for the Open Inference Protocol's /v2 paths."""
    return "v2" if path.startswith("/v2") else "v1"


_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """All service metrics; the batcher sees a model's slice through `ModelBatchObserver`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "imagegen_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_latency_seconds = Histogram(
            "imagegen_http_request_duration_seconds",
            "Time from request start to the end of the response (seconds).",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.protocol_requests = Counter(
            "imagegen_protocol_requests",
            "Requests answered, by protocol (v1: this service's HTTP API and its operations "
            "routes; v2: the Open Inference Protocol over REST; grpc: the same over gRPC) and "
            "status (the HTTP status code, or the gRPC status code's name).",
            ["protocol", "status"],
            registry=r,
        )
        self.grpc_request_latency_seconds = Histogram(
            "imagegen_grpc_request_duration_seconds",
            "Time from a gRPC call's start to its answer (seconds), by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size_images = Histogram(
            "imagegen_batch_size_images",
            "Images in one model run.",
            ["model"],
            buckets=_BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth_images = Gauge(
            "imagegen_queue_depth_images",
            "Images waiting in a model's queue (summed over live workers).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.process_requests = Gauge(
            "imagegen_process_requests",
            "HTTP requests answered by this server process (with --workers, one series per "
            "live worker, labelled by pid).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.queue_wait_seconds = Histogram(
            "imagegen_queue_wait_seconds",
            "Time an image waited in the queue before its batch ran (seconds).",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "imagegen_inference_seconds",
            "Time of one model run, latents to uint8 images (seconds).",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.images_generated = Counter(
            "imagegen_images_generated",
            "Images produced by the models.",
            ["model"],
            registry=r,
        )
        self.rejections = Counter(
            "imagegen_rejections",
            "Requests refused, by reason (the error type of the response).",
            ["reason"],
            registry=r,
        )

        self.connections_closed = Counter(
            "imagegen_connections_closed",
            "HTTP connections a connection limit refused or closed, by reason (the error type "
            "sent: too_many_connections, header_too_large, header_timeout, body_timeout).",
            ["reason"],
            registry=r,
        )

    def batch_observer(self, model: str) -> ModelBatchObserver:
        return ModelBatchObserver(self, model)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type; with several worker processes
        (PROMETHEUS_MULTIPROC_DIR set), the sum of all of them."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ModelBatchObserver:
    """What one model's batcher reports, written into the app's metrics."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._queue_depth = metrics.queue_depth_images.labels(model=model)
        self._batch_size = metrics.batch_size_images.labels(model=model)
        self._queue_wait = metrics.queue_wait_seconds.labels(model=model)
        self._queue_depth.set(0)

    def queue_depth(self, images: int) -> None:
        self._queue_depth.set(images)

    def batch_started(self, queue_waits_s: list[float]) -> None:
        self._batch_size.observe(len(queue_waits_s))
        for wait_s in queue_waits_s:
            self._queue_wait.observe(wait_s)
