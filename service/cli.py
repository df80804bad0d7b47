"""The `imagegen` command line: `serve` runs the HTTP service under uvicorn.

`serve`'s options are generated from the `Settings` class: every field is an option with its
description, default and `IMAGEGEN_*` variable, so a new setting needs no change here. An
option given on the command line wins over the environment.
"""

from __future__ import annotations

import errno
import gc
import inspect
import logging
import signal
import socket
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import uvicorn
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from service.settings import Settings

app = typer.Typer(
    name="imagegen",
    help="Serve ONNX GAN and VAE image generators over HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text: rich markup would swallow every `[...]` in it (the env names, the
    # defaults, `[runs/<dataset>-<kind>]`), leaving a stray " ." behind.
    rich_markup_mode=None,
)

STARTUP_FAILURE_EXIT_CODE = 3  # what uvicorn uses when the app cannot start
USAGE_EXIT_CODE = 2  # a bad setting, a missing folder, a taken port: fixed by the caller

# Options whose flag names read better than the generated `--x/--no-x`.
_FLAG_NAMES = {"skip_invalid_models": "--skip-invalid-models/--refuse-invalid-models"}
_EXTRA_HELP = {"api_key": "Prefer the environment: argv is visible."}


def env_name(field: str) -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    return f"{prefix}{field}".upper()


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _shown_default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()  # as the environment spells it
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help(name: str, field: FieldInfo) -> str:
    text = " ".join((field.description or "").split())
    if name in _EXTRA_HELP:
        text = f"{text} {_EXTRA_HELP[name]}"
    return f"{text} [default: {_shown_default(field)}; env: {env_name(name)}]"


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _setting_option(name: str, field: FieldInfo) -> inspect.Parameter:
    """The `serve` parameter for one setting: its option, type, help; None = not given."""
    annotation = _without_none(field.annotation)
    declaration = _FLAG_NAMES.get(name, _option_name(name))
    extra: dict[str, Any] = {}
    option_type: Any = str  # anything else (SecretStr, ...) is text that pydantic parses
    if typing.get_origin(annotation) is Literal:
        option_type = annotation  # typer shows and checks the choices
        extra["case_sensitive"] = False
    elif annotation is bool:
        option_type = bool
        if name not in _FLAG_NAMES:
            declaration = f"{declaration}/--no-{declaration.removeprefix('--')}"
    elif annotation in (int, float, Path):
        option_type = annotation
    option = typer.Option(declaration, help=_help(name, field), show_default=False, **extra)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[option_type | None, option],
    )


def serve_parameters() -> list[inspect.Parameter]:
    """One option per Settings field, in the class's order."""
    return [_setting_option(name, field) for name, field in Settings.model_fields.items()]


@app.callback()
def main() -> None:
    """Serve ONNX GAN and VAE image generators over HTTP."""


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def fail(message: str) -> typer.Exit:
    """Print one line for the user (no traceback); raise the result to exit with status 2."""
    typer.echo(f"imagegen: {message}", err=True)
    return typer.Exit(USAGE_EXIT_CODE)


def check_models_dir(settings: Settings) -> None:
    """The models folder exists and holds at least one model folder (nothing is loaded)."""
    from service.runtime.card import CARD_FILENAME
    from service.runtime.registry import ModelLoadError, discover_model_dirs

    where = f"set --models-dir or {env_name('models_dir')}"
    try:
        found = discover_model_dirs(settings.models_dir)
    except ModelLoadError as error:
        raise fail(f"{error} ({where})") from None
    if not found:
        raise fail(f"no models in {settings.models_dir} (expected <name>/{CARD_FILENAME}; {where})")


def check_port_free(settings: Settings, field: str = "port") -> None:
    """Bind and release the address the server will use (`field`: the HTTP or the gRPC port),
    before any model is warmed up.

    The same socket options as uvicorn's bind, so a port left in TIME_WAIT is not refused.
    """
    port = getattr(settings, field)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, port))
        except (OSError, OverflowError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            option = _option_name(field)
            hint = (
                f"another process holds it; choose another with {option} or {env_name(field)}"
                if getattr(error, "errno", None) == errno.EADDRINUSE
                else f"check --host/{option} or {env_name('host')}/{env_name(field)}"
            )
            what = "gRPC " if field == "grpc_port" else ""
            where = f"{settings.host}:{port}"
            raise fail(f"cannot listen {what}on {where}: {reason} ({hint})") from None


def check_grpc(settings: Settings) -> None:
    """gRPC is off, or grpcio is there and its port free (0 = off)."""
    from service.v2 import GrpcUnavailable, grpc_port_to_serve

    try:
        port = grpc_port_to_serve(settings)
    except GrpcUnavailable as error:
        raise fail(f"{error} ({_option_name('grpc_port')} or {env_name('grpc_port')})") from None
    if port is not None:
        check_port_free(settings, "grpc_port")


def run_server(settings: Settings) -> int:
    """Run uvicorn (or, with workers > 1, a supervisor of several) until SIGTERM or SIGINT;
    the exit status of the process."""
    if settings.workers > 1:
        from service.supervisor import run_workers

        return run_workers(settings)
    return serve_on_socket(settings, None)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when a stop signal arrives (so the gRPC server stops
    taking calls at the same moment as HTTP stops taking connections)."""

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        super().handle_exit(sig, frame)
        state = getattr(self.config.app, "state", None)
        on_exit_signal = getattr(state, "on_exit_signal", None)
        if on_exit_signal is not None:
            on_exit_signal()


def serve_on_socket(settings: Settings, sock: socket.socket | None) -> int:
    """One server process: on `sock` (a supervisor's worker) or on host:port of its own."""
    from service.app import create_app
    from service.connections import ConnectionLimits, ensure_descriptors, limited_protocol

    app = create_app(settings)
    closed = app.state.metrics.connections_closed
    limits = ConnectionLimits(
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
    )
    ensure_descriptors(settings.max_connections)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # httptools with our header cap, head and body deadlines and connection cap.
        http=limited_protocol(limits, lambda reason: closed.labels(reason=reason).inc()),
        ws="none",  # no WebSocket routes: an Upgrade is never taken
        # Idle keep-alive connections are closed by the protocol's sweep (see above).
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
        log_level=settings.log_level,
        lifespan="on",
        # On SIGTERM uvicorn stops accepting, then waits this long for requests in flight.
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        log_config=None,
        # uvicorn formats each access line's arguments before the logger drops them: only ask
        # for access lines when they are shown (a few per cent of the event loop's time).
        access_log=settings.log_level in ("debug", "info"),
    )
    server = _Server(config)
    # Back from onnxruntime, the inference thread needs the GIL to hand its batch over and take
    # the next; under load the event loop holds it until the switch interval forces a switch
    # (Python's default 5 ms, about a batch's model time here). 0.2 ms measured level or
    # better on every load in alternated runs (docs/benchmarks.md).
    sys.setswitchinterval(settings.switch_interval_s)
    # The imported libraries and the app are here for good: take them out of the collector's
    # sight, so a full collection under load scans only what requests made (over the ~70k
    # objects of a loaded server it stalled the event loop for tens of milliseconds).
    gc.collect()
    gc.freeze()
    # uvicorn handles SIGTERM/SIGINT itself, then re-raises the signal to the handler that was
    # installed before it. A no-op handler there makes a graceful stop exit with status 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    try:
        server.run(sockets=[sock] if sock is not None else None)
    except SystemExit:
        # uvicorn exits with 3 when the app cannot start; an invalid model or an unavailable
        # provider is the operator's to fix, like a missing folder: status 2 (the message
        # was printed as one error, see ImagegenApp).
        if getattr(app.state, "startup_error", None) is not None:
            return USAGE_EXIT_CODE
        raise
    if not server.started:
        return STARTUP_FAILURE_EXIT_CODE
    return 0


def serve(**given: Any) -> None:
    """Load, verify and warm up the models, then serve HTTP until SIGTERM or Ctrl-C."""
    options = {name: value for name, value in given.items() if value is not None}
    try:
        settings = Settings(**options)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            where = f" ({_option_name(field)} or {env_name(field)})" if field else ""
            typer.echo(
                f"imagegen: invalid setting {field or 'settings'}{where}: {problem['msg']}",
                err=True,
            )
        raise typer.Exit(USAGE_EXIT_CODE) from None
    check_models_dir(settings)
    check_port_free(settings)
    check_grpc(settings)
    configure_logging(settings.log_level)
    raise typer.Exit(run_server(settings))


# typer reads the options from the signature: give `serve` one keyword per setting.
serve.__signature__ = inspect.Signature(serve_parameters())  # type: ignore[attr-defined]
app.command()(serve)


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
