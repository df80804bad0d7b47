"""Graceful shutdown: SIGTERM during sustained load loses no accepted request.

Every request is sent with `Expect: 100-continue`, so the server itself tells the client
when it has read the request and started on it (uvicorn answers `100 Continue` when the
route first reads the body). "Accepted before the signal" is then a fact, not a guess
from timing: those requests must all get their whole answer.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.reliability.conftest import SLOW, Launcher
from tests.reliability.harness import Outcome, is_png, request, warnings_in
from tests.reliability.report import record

CLIENTS = 24
LOAD_BEFORE_SIGNAL_S = 3.0
GRACE_S = 20.0
REFUSED = {"ConnectionRefusedError", "ConnectionResetError", "no response"}


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_under_load_answers_every_accepted_request_then_exits_0(
    serve: Launcher, workers: int
) -> None:
    server = serve(max_batch_size=8, max_queue_size=256, shutdown_grace_s=GRACE_S, workers=workers)
    port = server.port
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    signal_at: float | None = None

    async def client(index: int) -> None:
        seed = index * 1_000_000
        while not stop.is_set():
            seed += 1
            body = json.dumps({"seed": seed}).encode()
            outcome = await request(
                "POST",
                port,
                f"/v1/models/{SLOW}/generate",
                body,
                expect_continue=True,
                timeout_s=GRACE_S * 2,
            )
            outcomes.append(outcome)
            if not outcome.complete:
                await asyncio.sleep(0.02)  # refused: do not spin

    clients = [asyncio.create_task(client(index)) for index in range(CLIENTS)]
    await asyncio.sleep(LOAD_BEFORE_SIGNAL_S)
    signal_at = server.terminate()
    exit_code = await asyncio.to_thread(server.process.wait, GRACE_S * 2)
    exited_s = time.monotonic() - signal_at
    await asyncio.sleep(0.5)  # a moment of knocking on the closed port
    stop.set()
    await asyncio.gather(*clients)

    assert exit_code == 0, server.log()
    assert exited_s <= GRACE_S, f"exit took {exited_s:.1f} s, grace is {GRACE_S} s"
    accepted_before = [o for o in outcomes if o.continued_at and o.continued_at < signal_at]
    accepted_after = [o for o in outcomes if o.continued_at and o.continued_at >= signal_at]
    never_accepted = [o for o in outcomes if o.continued_at is None]
    assert accepted_before, "no load was accepted before the signal"
    for outcome in accepted_before + accepted_after:
        assert outcome.complete and outcome.status == 200, (outcome.status, outcome.error)
        assert is_png(outcome.body)
    for outcome in never_accepted:
        # Refused outright, or an answer that says so; never half an answer, never a hang.
        assert outcome.error in REFUSED or (outcome.complete and outcome.status == 503), (
            outcome.error,
            outcome.status,
        )
    sent_after = [o for o in outcomes if o.started_at > signal_at + 0.5]
    assert sent_after and all(o.error == "ConnectionRefusedError" for o in sent_after)

    log = server.log()
    assert "draining" in log
    assert "timeout graceful shutdown exceeded" not in log
    assert not warnings_in(log), warnings_in(log)

    in_flight_at_signal = [o for o in accepted_before if o.done_at and o.done_at > signal_at]
    record(
        "shutdown" if workers == 1 else f"shutdown, {workers} workers",
        clients=CLIENTS,
        requests=len(outcomes),
        accepted_before_signal=len(accepted_before),
        in_flight_at_signal=len(in_flight_at_signal),
        accepted_after_signal=len(accepted_after),
        refused=len(never_accepted),
        lost=0,
        exit_code=exit_code,
        exit_after_signal_s=round(exited_s, 2),
        grace_s=GRACE_S,
    )
    # The fixture's stop() must not find a process to kill.
    assert server.process.poll() is not None
