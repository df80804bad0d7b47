"""One load-test run: the client pool, the preflight, the tool's ceiling, then every step."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, cast

import httpx

from service.loadtest.report import ProgressLine, Report
from service.loadtest.runner import Arrivals, LoadRunner
from service.loadtest.target import Endpoint, Protocol, RequestFactory, Target, preflight
from service.loadtest.transport import LeanTransport

if TYPE_CHECKING:
    from service.loadtest.cli import RunSettings

CEILING_MAX_S = 5.0


def pool_size(settings: RunSettings) -> int:
    """Keep-alive connections the load needs: one per client, or the open loop's cap."""
    if settings.clients:
        return max(settings.clients)
    return settings.max_in_flight


def make_client(
    settings: RunSettings,
    transport: httpx.AsyncBaseTransport | None = None,
    connections: int | None = None,
) -> httpx.AsyncClient:
    connections = connections if connections is not None else pool_size(settings)
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=60.0,
        ),
        timeout=httpx.Timeout(settings.timeout_s),
        trust_env=False,  # loopback targets: no proxies from the environment
        transport=transport,
    )


async def run_async(
    settings: RunSettings, transport: httpx.AsyncBaseTransport | None = None
) -> Report:
    from service.loadtest.cli import machine_info

    target = Target(
        base_url=settings.url.rstrip("/"),
        model=settings.model,
        endpoint=cast(Endpoint, settings.endpoint),
        items=settings.items,
        api_key=settings.api_key,
        protocol=cast(Protocol, settings.protocol),
        class_choice=settings.class_choice,
    )
    report = Report(
        target={
            "url": target.base_url,
            "model": target.model,
            "endpoint": target.endpoint,
            "protocol": target.protocol,
            "items": target.items,
            "class": target.class_choice,
            "mode": "closed" if settings.clients else "open",
            "arrivals": settings.arrivals if settings.rates else None,
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "client": settings.client if target.base_url.startswith("http://") else "httpx",
        },
        machine=machine_info(),
    )
    progress = ProgressLine() if settings.progress else None
    lean = None
    # The lean transport speaks plain HTTP only; https targets go through httpx's own.
    if transport is None and settings.client == "lean" and target.base_url.startswith("http://"):
        lean = LeanTransport(pool_size(settings))
        transport = lean
    async with (
        make_client(settings, transport) as client,
        # Preflight and scrapes: httpx's own transport, on a connection of their own.
        make_client(settings, None if lean else transport, connections=1) as side_client,
    ):
        classes = await preflight(side_client, target)
        runner = LoadRunner(
            client,
            target,
            progress=progress,
            factory=RequestFactory(target, first_seed=settings.seed, classes=classes),
            metrics_client=side_client,
            lean=lean,
            timeout_s=settings.timeout_s,
        )
        await runner.scrape()  # opens the scrapes' connection, so no step waits for that
        if settings.ceiling:
            clients = max(settings.clients) if settings.clients else min(settings.max_in_flight, 32)
            report.ceiling = await runner.ceiling(
                clients, min(settings.duration_s, CEILING_MAX_S), min(settings.warmup_s, 1.0)
            )
        for clients in settings.clients:
            report.steps.append(
                await runner.closed_step(clients, settings.duration_s, settings.warmup_s)
            )
        rng = random.Random(settings.seed)
        for rate in settings.rates:
            report.steps.append(
                await runner.open_step(
                    rate,
                    settings.duration_s,
                    settings.warmup_s,
                    arrivals=cast(Arrivals, settings.arrivals),
                    max_in_flight=settings.max_in_flight,
                    rng=rng,
                )
            )
    return report
