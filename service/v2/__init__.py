"""The Open Inference Protocol ("KServe v2") over REST and gRPC: thin adapters over the data plane.

`codec` turns the protocol's tensors (JSON, Triton's binary extension, protobuf) into the
inputs of `inference`, which runs them through the same data plane and batchers as v1;
`rest` and `grpc_server` are the two transports.
"""

from __future__ import annotations

import importlib.util
import logging

from service.settings import Settings

logger = logging.getLogger(__name__)


def grpc_installed() -> bool:
    """Whether grpcio (the `grpc` extra) can be imported."""
    return importlib.util.find_spec("grpc") is not None


class GrpcUnavailable(Exception):
    """gRPC was asked for explicitly, and grpcio is not installed."""


def grpc_port_to_serve(settings: Settings) -> int | None:
    """The gRPC port this process should serve, or None (off).

    0 is off. Left at its default without grpcio installed, gRPC is off (logged once), so a
    plain serving install still starts; set explicitly (option or IMAGEGEN_GRPC_PORT) without
    grpcio, GrpcUnavailable says how to install it.
    """
    if settings.grpc_port == 0:
        return None
    if grpc_installed():
        return settings.grpc_port
    install = "pip install 'imagegen-service[grpc]'"
    if "grpc_port" in settings.model_fields_set:
        raise GrpcUnavailable(
            f"gRPC port {settings.grpc_port} was set, but grpcio is not installed: {install}, "
            "or set the gRPC port to 0"
        )
    logger.info(
        "gRPC off: grpcio is not installed (%s to serve it on %d)", install, settings.grpc_port
    )
    return None
