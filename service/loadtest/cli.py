"""`imagegen loadtest`: the command line of the load-test tool.

Only typer and the standard library load with this module, so registering the command costs
`imagegen serve` nothing; httpx, rich and matplotlib load when a test runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.extras import install_hint

if TYPE_CHECKING:
    from service.loadtest.report import Report

TARGET_ERROR_EXIT_CODE = 1


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _parse_levels(text: str | None, what: str, kind: type[float] | type[int]) -> list[Any]:
    if text is None:
        return []
    try:
        levels = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} must be a comma-separated list of numbers") from None
    if not levels or any(level <= 0 for level in levels):
        raise typer.BadParameter(f"{what} must list numbers above 0")
    return levels


def loadtest_command(
    url: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:8000",
    model: Annotated[str, typer.Option(help="Model to load.")] = "fashion-gan",
    endpoint: Annotated[
        str,
        typer.Option(
            help="'single' (POST generate), 'batch' (POST generate/batch with --items), "
            "or 'get' (GET images/{seed}.png)."
        ),
    ] = "single",
    items: Annotated[
        int, typer.Option(min=1, help="Images per request on the batch endpoint.")
    ] = 64,
    class_choice: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="Class-conditional models: a class name or index for every image, or "
            "'random' (a random class per image); default none (each seed's own class).",
        ),
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option(help="Closed loop: comma-separated client counts, one step each [1,8,32]."),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(help="Open loop instead: comma-separated arrival rates (requests/s)."),
    ] = None,
    arrivals: Annotated[
        str, typer.Option(help="Open loop arrivals: 'constant' spacing or 'poisson'.")
    ] = "constant",
    duration: Annotated[float, typer.Option(min=0.1, help="Measured seconds per step.")] = 10.0,
    warmup: Annotated[
        float, typer.Option(min=0.0, help="Unmeasured seconds before each step.")
    ] = 2.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Per-request timeout (seconds).")] = 30.0,
    max_in_flight: Annotated[
        int,
        typer.Option(min=1, help="Open loop: most requests outstanding; beyond, not sent."),
    ] = 1024,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="IMAGEGEN_API_KEY", help="Bearer key, when the service needs one."),
    ] = None,
    ceiling: Annotated[
        bool,
        typer.Option(help="First measure the tool's own ceiling against /healthz."),
    ] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write one CSV row per step.")
    ] = None,
    chart: Annotated[
        Path | None,
        typer.Option(help="Write a PNG of latency percentiles against throughput (matplotlib)."),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(help="Live progress line [on when stderr is a terminal]."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the Poisson arrivals (and the first image seed).")
    ] = None,
    client: Annotated[
        str,
        typer.Option(
            help="'lean': httpx's transport interface over a minimal HTTP/1.1 keep-alive pool "
            "(~20x less CPU per request); 'httpx': httpx's stock client, for comparison."
        ),
    ] = "lean",
    protocol: Annotated[
        str,
        typer.Option(
            help="'v1': this service's routes; 'v2': the Open Inference Protocol's REST infer "
            "(seeds as a JSON tensor, PNGs as binary data), to compare both on one model."
        ),
    ] = "v1",
) -> None:
    """Load-test the image endpoints: a concurrency sweep or fixed arrival rates."""
    from service.loadtest.target import ENDPOINTS

    if endpoint not in ENDPOINTS:
        raise typer.BadParameter(f"must be one of {', '.join(ENDPOINTS)}", param_hint="--endpoint")
    if protocol not in ("v1", "v2"):
        raise typer.BadParameter("must be 'v1' or 'v2'", param_hint="--protocol")
    if protocol == "v2" and endpoint == "get":
        raise typer.BadParameter(
            "v2 has no GET image route: use single or batch", param_hint="--endpoint"
        )
    if client not in ("lean", "httpx"):
        raise typer.BadParameter("must be 'lean' or 'httpx'", param_hint="--client")
    if arrivals not in ("constant", "poisson"):
        raise typer.BadParameter("must be 'constant' or 'poisson'", param_hint="--arrivals")
    if concurrency is not None and rate is not None:
        raise typer.BadParameter("give --concurrency or --rate, not both")
    if chart is not None and not _importable("matplotlib"):
        # Said before the run, not after minutes of load.
        typer.echo(f"loadtest: --chart needs matplotlib; {install_hint('loadtest')}", err=True)
        raise typer.Exit(2)
    clients = _parse_levels(concurrency, "--concurrency", int)
    rates = _parse_levels(rate, "--rate", float)
    if not clients and not rates:
        clients = [1, 8, 32]
    settings = RunSettings(
        url=url,
        model=model,
        endpoint=endpoint,
        items=items if endpoint == "batch" else 1,
        class_choice=class_choice,
        clients=clients,
        rates=rates,
        arrivals=arrivals,
        duration_s=duration,
        warmup_s=warmup,
        timeout_s=timeout,
        max_in_flight=max_in_flight,
        api_key=api_key or None,
        ceiling=ceiling,
        progress=sys.stderr.isatty() if progress is None else progress,
        seed=seed,
        client=client,
        protocol=protocol,
    )
    from service.loadtest.target import TargetError

    try:
        report = run(settings)
    except TargetError as error:
        typer.echo(f"loadtest: {error}", err=True)
        raise typer.Exit(TARGET_ERROR_EXIT_CODE) from None
    except KeyboardInterrupt:
        typer.echo("loadtest: interrupted", err=True)
        raise typer.Exit(130) from None
    from service.loadtest import report as reporting

    reporting.print_table(report)
    if json_path is not None:
        reporting.write_json(report, json_path)
    if csv_path is not None:
        reporting.write_csv(report, csv_path)
    if chart is not None:
        try:
            reporting.write_chart(report.steps, chart, _chart_title(report))
        except RuntimeError as error:
            typer.echo(f"loadtest: {error}", err=True)
            raise typer.Exit(2) from None


class RunSettings:
    """The parsed options of one run."""

    def __init__(self, **values: Any) -> None:
        self.url: str = values["url"]
        self.model: str = values["model"]
        self.endpoint: str = values["endpoint"]
        self.items: int = values["items"]
        self.class_choice: str | None = values.get("class_choice")
        self.clients: list[int] = values["clients"]
        self.rates: list[float] = values["rates"]
        self.arrivals: str = values["arrivals"]
        self.duration_s: float = values["duration_s"]
        self.warmup_s: float = values["warmup_s"]
        self.timeout_s: float = values["timeout_s"]
        self.max_in_flight: int = values["max_in_flight"]
        self.api_key: str | None = values["api_key"]
        self.ceiling: bool = values["ceiling"]
        self.progress: bool = values["progress"]
        self.seed: int | None = values["seed"]
        self.client: str = values.get("client", "lean")
        self.protocol: str = values.get("protocol", "v1")


def _chart_title(report: Report) -> str:
    target = report.target
    protocol = " (v2)" if target.get("protocol") == "v2" else ""
    return (
        f"imagegen loadtest: {target['endpoint']}{protocol} on {target['model']} ({target['url']})"
    )


def run(settings: RunSettings) -> Report:
    """Run every step (after the preflight and the ceiling) on a fresh event loop."""
    from service.loadtest.engine import run_async

    try:
        import uvloop
    except ImportError:  # uvloop is optional; the default loop only raises the tool's cost
        import asyncio

        return asyncio.run(run_async(settings))
    return uvloop.run(run_async(settings))


def machine_info() -> dict[str, Any]:
    """Cores and CPU model of this machine (the tool shares it with the server under test)."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {"cpu_model": model or "unknown", "cores": os.cpu_count(), "usable_cores": usable}
