"""`imagegen serve`: options generated from Settings; one clear line for what a user got wrong."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import service.cli as cli
from service.settings import Settings

# Modules of the train extra (and matplotlib, of the loadtest extra), made unimportable.
BLOCK_TRAIN_EXTRA = (
    "import sys\n"
    "for name in ['tensorflow', 'keras', 'tf2onnx', 'tensorboard', 'onnx', 'scipy', 'tqdm',\n"
    "             'mlxtend']:\n"
    "    sys.modules[name] = None\n"
)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.stdout, result.stderr


def words(text: str) -> str:
    """The help text with its line wrapping undone."""
    return " ".join(text.split())


def squashed(text: str) -> str:
    """The text without any whitespace (click also wraps after hyphens: `start-` `up`)."""
    return "".join(text.split())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Settings that reached run_server (which then returns 0 instead of serving)."""
    seen: list[Settings] = []

    def fake_run_server(settings: Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(cli, "run_server", fake_run_server)
    # basicConfig(force=True) would bind the root logger to CliRunner's stream, closed after
    # the test: later tests' log lines would fail on it.
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    return seen


def test_serve_help_lists_every_setting_with_its_default_and_environment_name() -> None:
    code, stdout, _ = invoke("serve", "--help")
    assert code == 0
    text = squashed(stdout)
    for name, field in Settings.model_fields.items():
        option = "--" + name.replace("_", "-")
        assert option in text, option
        description = squashed(field.description or "")
        default = field.default
        shown = (
            "unset"
            if default is None
            else str(default).lower()
            if isinstance(default, bool)
            else f"{default:g}"
            if isinstance(default, float)
            else str(default)
        )
        assert description in text, name
        assert squashed(f"[default: {shown}; env: IMAGEGEN_{name.upper()}]") in text, name
    assert " ." not in words(stdout)  # nothing was swallowed as markup


def test_every_command_help_keeps_its_bracketed_text() -> None:
    """Rich markup used to eat `[runs/<dataset>-<kind>]`, `[1,8,32]`, ... leaving " ."."""
    for command in ["serve", "loadtest", "fp16", "train", "evaluate", "export"]:
        code, stdout, _ = invoke(command, "--help")
        assert code == 0, command
        assert " ." not in words(stdout), command
    assert "[runs/<dataset>-<kind>]" in words(invoke("train", "--help")[1])
    assert "[1,8,32]" in words(invoke("loadtest", "--help")[1])


def test_options_reach_settings_and_win_over_the_environment(
    models_dir: Path, captured: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEGEN_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("IMAGEGEN_MAX_QUEUE_SIZE", "100")
    port = free_port()
    code, _, stderr = invoke(
        "serve", "--models-dir", str(models_dir), "--port", str(port), "--providers", "CPU",
        "--max-queue-size", "200", "--max-batch-delay-ms", "2.5", "--skip-invalid-models",
        "--cudnn-conv-algo-search", "heuristic", "--tensorrt-cache-dir", "/tmp/trt",
        "--api-key", "k3y", "--log-level", "warning",
    )  # fmt: skip
    assert code == 0, stderr
    (settings,) = captured
    assert (settings.models_dir, settings.port, settings.providers) == (models_dir, port, "cpu")
    assert settings.max_batch_size == 7  # from the environment
    assert settings.max_queue_size == 200  # the option wins
    assert settings.max_batch_delay_ms == 2.5
    assert settings.skip_invalid_models is True
    assert settings.cudnn_conv_algo_search == "HEURISTIC"
    assert settings.tensorrt_cache_dir == Path("/tmp/trt")
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k3y"


def test_a_new_setting_gets_its_option_with_no_other_change(models_dir: Path) -> None:
    """A field added to Settings (as `workers` and `grpc_port` will be) is an option at once."""
    script = textwrap.dedent(
        f"""
        from pydantic import Field
        import service.settings

        class Extended(service.settings.Settings):
            grpc_port: int = Field(default=8001, ge=0, description="gRPC port; 0 = off.")
            workers: int = Field(default=1, ge=1, description="Server processes (processes).")

        service.settings.Settings = Extended
        import service.cli as cli

        cli.run_server = lambda settings: print("got", settings.grpc_port, settings.workers) or 0
        cli.app(["serve", "--help"], standalone_mode=False)
        cli.app(["serve", "--models-dir", {str(models_dir)!r}, "--port", "{free_port()}",
                 "--grpc-port", "9001", "--workers", "3"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    text = words(result.stdout)
    assert "--grpc-port <int> gRPC port; 0 = off. [default: 8001; env: IMAGEGEN_GRPC_PORT]" in text
    assert "--workers <int> Server processes (processes). [default: 1; env: IMAGEGEN_WORKERS]" in (
        text
    )
    assert "got 9001 3" in text


def test_an_invalid_setting_is_one_line_naming_option_and_variable() -> None:
    code, _, stderr = invoke("serve", "--port", "70000")
    assert code == 2
    assert stderr.strip().splitlines() == [
        "imagegen: invalid setting port (--port or IMAGEGEN_PORT): "
        "Input should be less than or equal to 65535"
    ]


@pytest.mark.parametrize("kind", ["missing", "a file", "empty"])
def test_a_models_dir_without_models_is_one_line_and_status_2(
    kind: str, tmp_path: Path, captured: list[Settings]
) -> None:
    folder = tmp_path / "models"
    if kind == "a file":
        folder.write_text("not a folder")
    elif kind == "empty":
        folder.mkdir()
    code, _, stderr = invoke("serve", "--models-dir", str(folder), "--port", str(free_port()))
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert str(folder) in line and "IMAGEGEN_MODELS_DIR" in line
    assert not captured  # nothing was loaded


def test_a_taken_port_is_refused_before_any_model_loads(
    models_dir: Path, captured: list[Settings]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _, stderr = invoke("serve", "--models-dir", str(models_dir), "--port", str(port))
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "Address already in use" in line
    assert "--port or IMAGEGEN_PORT" in line
    assert not captured  # run_server, which loads and warms the models, never ran


def test_a_free_port_is_released_for_the_server(models_dir: Path, captured: list[Settings]) -> None:
    port = free_port()
    code, _, stderr = invoke("serve", "--models-dir", str(models_dir), "--port", str(port))
    assert code == 0, stderr
    with socket.socket() as sock:  # the check left nothing bound
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["train", "gan", "--max-train-images", "10"], "tensorflow"),
        (["evaluate", "models/mnist-gan", "--num-samples", "100"], None),
    ],
)
def test_training_without_the_train_extra_is_one_line_and_status_2(
    args: list[str], missing: str | None
) -> None:
    script = BLOCK_TRAIN_EXTRA + f"from service.cli import app\napp({args!r})\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert f"imagegen {args[0]} needs the train extra" in line
    if missing:
        assert f"({missing} is missing)" in line
    assert "make install-dev" in line and ".venv/bin/pip install" in line and "'.[train]'" in line
    assert "pip install 'imagegen" not in line


def test_loadtest_chart_without_matplotlib_says_so_before_sending_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # Port 9 (discard) on loopback refuses: a run would end with the target error, status 1.
    code, _, stderr = invoke(
        "loadtest", "--url", "http://127.0.0.1:9", "--chart", "out.png", "--duration", "0.1"
    )
    assert code == 2
    assert "--chart needs matplotlib" in stderr
    assert "make install-dev" in stderr and "'.[loadtest]'" in stderr


def test_the_server_process_runs_with_the_configured_switch_interval(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GIL switch interval is set in the process that serves, before it serves."""
    seen: list[float] = []

    def fake_run(self: object, sockets: object = None) -> None:
        seen.append(sys.getswitchinterval())

    monkeypatch.setattr(cli._Server, "run", fake_run)
    monkeypatch.setattr(cli.signal, "signal", lambda signum, handler: None)
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)
    before = sys.getswitchinterval()
    try:
        settings = Settings(models_dir=models_dir, switch_interval_ms=0.5)
        assert cli.serve_on_socket(settings, None) == cli.STARTUP_FAILURE_EXIT_CODE  # never ran
        assert seen == [pytest.approx(0.0005)]
        assert Settings(models_dir=models_dir).switch_interval_ms == 0.2
    finally:
        sys.setswitchinterval(before)
