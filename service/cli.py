"""The `imagegen` command line: `serve` runs the HTTP service under uvicorn.

Options mirror the `IMAGEGEN_*` settings; an option given on the command line wins over
the environment.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from service.settings import Settings

app = typer.Typer(
    name="imagegen",
    help="Serve ONNX GAN and VAE image generators over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STARTUP_FAILURE_EXIT_CODE = 3  # what uvicorn uses when the app cannot start


def _help(field: str) -> str:
    description = Settings.model_fields[field].description or ""
    return f"{description} [env: IMAGEGEN_{field.upper()}]"


@app.callback()
def main() -> None:
    """Serve ONNX GAN and VAE image generators over HTTP."""


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def run_server(settings: Settings) -> int:
    """Run uvicorn (or, with workers > 1, a supervisor of several) until SIGTERM or SIGINT;
    the exit status of the process."""
    if settings.workers > 1:
        from service.supervisor import run_workers

        return run_workers(settings)
    return serve_on_socket(settings, None)


def serve_on_socket(settings: Settings, sock: socket.socket | None) -> int:
    """One server process: on `sock` (a supervisor's worker) or on host:port of its own."""
    from service.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        # On SIGTERM uvicorn stops accepting, then waits this long for requests in flight.
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        log_config=None,
        # uvicorn formats each access line's arguments before the logger drops them: only ask
        # for access lines when they are shown (a few per cent of the event loop's time).
        access_log=settings.log_level in ("debug", "info"),
    )
    server = uvicorn.Server(config)
    # The imported libraries and the app are here for good: take them out of the collector's
    # sight, so a full collection under load scans only what requests made (over the ~70k
    # objects of a loaded server it stalled the event loop for tens of milliseconds).
    gc.collect()
    gc.freeze()
    # uvicorn handles SIGTERM/SIGINT itself, then re-raises the signal to the handler that was
    # installed before it. A no-op handler there makes a graceful stop exit with status 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        return STARTUP_FAILURE_EXIT_CODE
    return 0


@app.command()
def serve(
    models_dir: Annotated[Path | None, typer.Option(help=_help("models_dir"))] = None,
    host: Annotated[str | None, typer.Option(help=_help("host"))] = None,
    port: Annotated[int | None, typer.Option(help=_help("port"))] = None,
    workers: Annotated[int | None, typer.Option(help=_help("workers"))] = None,
    providers: Annotated[str | None, typer.Option(help=_help("providers"))] = None,
    device_id: Annotated[int | None, typer.Option(help=_help("device_id"))] = None,
    intra_op_threads: Annotated[int | None, typer.Option(help=_help("intra_op_threads"))] = None,
    max_batch_size: Annotated[int | None, typer.Option(help=_help("max_batch_size"))] = None,
    max_batch_delay_ms: Annotated[
        float | None, typer.Option(help=_help("max_batch_delay_ms"))
    ] = None,
    max_queue_size: Annotated[int | None, typer.Option(help=_help("max_queue_size"))] = None,
    request_timeout_ms: Annotated[
        float | None, typer.Option(help=_help("request_timeout_ms"))
    ] = None,
    max_items_per_request: Annotated[
        int | None, typer.Option(help=_help("max_items_per_request"))
    ] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help=_help("max_body_bytes"))] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help=_help("api_key") + " Prefer the environment: argv is visible."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help=_help("log_level"))] = None,
    shutdown_grace_s: Annotated[float | None, typer.Option(help=_help("shutdown_grace_s"))] = None,
    skip_invalid_models: Annotated[
        bool | None,
        typer.Option(
            "--skip-invalid-models/--refuse-invalid-models", help=_help("skip_invalid_models")
        ),
    ] = None,
    batch_padding: Annotated[str | None, typer.Option(help=_help("batch_padding"))] = None,
) -> None:
    """Load, verify and warm up the models, then serve HTTP until SIGTERM or Ctrl-C."""
    given: dict[str, Any] = {name: value for name, value in locals().items() if value is not None}
    try:
        settings = Settings(**given)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "settings"
            typer.echo(f"invalid setting {field}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    raise typer.Exit(run_server(settings))


from service.loadtest.cli import loadtest_command  # noqa: E402 (typer and stdlib only)

app.command("loadtest")(loadtest_command)

from service.fp16_cli import fp16_command  # noqa: E402 (onnx is imported only when it runs)

app.command("fp16")(fp16_command)

try:
    from training.cli import register as _register_training
except ImportError:  # the train extra is optional
    pass
else:
    _register_training(app)
