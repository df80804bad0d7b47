"""Service configuration: one pydantic-settings class read from `IMAGEGEN_*` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderChoice = Literal["auto", "cpu", "cuda", "tensorrt"]
CudnnConvAlgoSearch = Literal["DEFAULT", "HEURISTIC", "EXHAUSTIVE"]
BatchPadding = Literal["auto", "always", "never"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Every knob of the serving process; each field's description states its unit."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEGEN_", extra="ignore", validate_default=True, frozen=True
    )

    models_dir: Path = Field(
        default=Path("models"),
        description="Folder with one sub-folder per model (model.onnx + model.json).",
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port of the HTTP server.")
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="TCP port of the Open Inference Protocol (KServe v2) gRPC server, beside "
        "HTTP in the same process; 0 = off. Needs grpcio (the 'grpc' extra): left at its "
        "default without grpcio, gRPC is off (logged); set explicitly without it, start-up fails.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Server processes sharing the port (processes), each with its own models "
        "and batchers under one supervisor; 1 = a single process.",
    )
    providers: ProviderChoice = Field(
        default="auto",
        description="onnxruntime execution providers: 'auto' (CUDA when usable, else CPU), "
        "'cpu', 'cuda' (start-up fails when CUDA is unusable; never a silent fallback), or "
        "'tensorrt' (opt-in: TensorRT, then CUDA for what it cannot run; fails when unusable).",
    )
    device_id: int = Field(default=0, ge=0, description="CUDA device index (GPU ordinal).")
    cuda_mem_limit_mb: int = Field(
        default=0,
        ge=0,
        description="Cap on the CUDA memory arena of each model's session (MiB); 0 = no cap.",
    )
    cudnn_conv_algo_search: CudnnConvAlgoSearch = Field(
        default="DEFAULT",
        description="cuDNN convolution algorithm choice: 'DEFAULT' (fixed, so a seed's bytes "
        "are the same after every restart), 'HEURISTIC', or 'EXHAUSTIVE' (benchmarks at "
        "start-up and may pick other kernels in another process).",
    )
    tensorrt_cache_dir: Path | None = Field(
        default=None,
        description="providers=tensorrt: folder that keeps built TensorRT engines between "
        "starts (and so the same engine, and bytes); unset = build them at every start.",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime intra-op threads per model; 0 = its default."
    )
    switch_interval_ms: float = Field(
        default=0.2,
        gt=0,
        le=100,
        description="Python's thread switch interval in each server process (milliseconds; "
        "sys.setswitchinterval, Python's default is 5): the longest the busy event loop keeps "
        "the GIL from an inference thread that onnxruntime has just handed a batch back to.",
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=1024, description="Most images in one model run (images)."
    )
    max_batch_delay_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="Longest time the oldest queued image waits for a batch to fill "
        "(milliseconds); a lone request on an idle model never waits.",
    )
    max_queue_size: int = Field(
        default=512,
        ge=1,
        description="Images that may wait per model (images); beyond it requests get 503.",
    )
    priority_max_items: int = Field(
        default=1,
        ge=0,
        description="Requests of at most this many images (images) wait in a lane of their own "
        "that each model's batches serve first, so a one-image request never queues behind "
        "another client's bulk work; each lane holds up to max_queue_size images. 0 = one "
        "queue for all.",
    )
    request_timeout_ms: float = Field(
        default=30_000,
        gt=0,
        description="Deadline of one request from entering the queue (milliseconds); 504 after.",
    )
    max_items_per_request: int = Field(
        default=64, ge=1, description="Most images one request may ask for (images); 413 beyond."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest accepted request body (bytes); 413 beyond."
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        description="Open HTTP connections one server process holds (connections); a new "
        "connection beyond it is answered 503 and closed at once.",
    )
    max_header_bytes: int = Field(
        default=32_768,
        ge=1024,
        description="Largest request line plus headers (bytes); 431 beyond, then the "
        "connection is closed.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Time a client has to send a request's line and headers, from their first "
        "byte or from connecting (seconds); 408 after (a connection that sent nothing is just "
        "closed).",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Time a client has to send a request's whole body once its headers are in "
        "(seconds); 408 after, then the connection is closed.",
    )
    keep_alive_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long an idle connection stays open between requests (seconds).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, every route except health, readiness and metrics needs "
        "'Authorization: Bearer <key>'. Empty means no key.",
    )
    log_level: LogLevel = Field(default="info", description="Log level of the service and uvicorn.")
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, time to finish in-flight and queued work (seconds).",
    )
    skip_invalid_models: bool = Field(
        default=False,
        description="False (default): any invalid model stops start-up. True: invalid models "
        "are logged and skipped, the valid ones are served.",
    )
    batch_padding: BatchPadding = Field(
        default="auto",
        description="Zero-pad every model run to max_batch_size rows so kernels never change "
        "with the batch: 'auto' pads on CUDA only (CPU kernels were measured row-invariant), "
        "'always', or 'never'.",
    )

    @field_validator("providers", "log_level", "batch_padding", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cudnn_conv_algo_search", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        # Header values lose surrounding whitespace on the wire, so a key read from a secret
        # file with its trailing newline could never match: strip it here.
        if isinstance(value, str):
            return value.strip() or None
        return value

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> Settings:
        if self.max_items_per_request > self.max_queue_size:
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) must not exceed "
                f"max_queue_size ({self.max_queue_size}): such a request could never be queued"
            )
        return self

    @property
    def switch_interval_s(self) -> float:
        return self.switch_interval_ms / 1000.0

    @property
    def max_batch_delay_s(self) -> float:
        return self.max_batch_delay_ms / 1000.0

    @property
    def request_timeout_s(self) -> float:
        return self.request_timeout_ms / 1000.0
