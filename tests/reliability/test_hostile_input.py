"""Hostile input, written by hand, against a real server: every case is a quick 4xx in the
one error shape with a short, clear message, nothing reaches the model, and memory holds.

Huge bodies, deep nesting, a million-float latent, NaN and Infinity tokens, wrong content
types, invalid UTF-8, out-of-range seeds, absurd scale, count, steps and columns, ...
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from tests.reliability.conftest import TINY, Launcher
from tests.reliability.harness import HOST, Outcome, metric_sum, request, warnings_in
from tests.reliability.models import LATENT_DIM
from tests.reliability.report import record

MAX_BODY_BYTES = 1_048_576
MAX_ITEMS = 64
SLOW_ANSWER_S = 10.0  # far above any honest answer here; a hang or a blow-up is far above it
MAX_RSS_GROWTH_BYTES = 30 * 2**20
GENERATE = f"/v1/models/{TINY}/generate"
BATCH = f"/v1/models/{TINY}/generate/batch"
INTERPOLATE = f"/v1/models/{TINY}/interpolate"
JSON_TYPE = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes = b""
    status: int = 422
    error_type: str | None = None  # defaults from the status
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


TYPES = {
    400: "malformed_json",
    404: "model_not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def _latent(*values: str) -> bytes:
    padded = list(values) + ["0.5"] * (LATENT_DIM - len(values))
    return ('{"latent": [' + ", ".join(padded) + "]}").encode()


def _cases() -> list[Case]:
    deep = 200_000
    cases = [
        # Structure.
        Case("deep nesting", GENERATE, b'{"seed": ' + b"[" * deep + b"]" * deep + b"}", 400),
        Case("deep objects", GENERATE, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400),
        Case("top-level null", GENERATE, b"null"),
        Case("top-level array", GENERATE, b"[1, 2, 3]"),
        Case("top-level string", GENERATE, b'"seed"'),
        Case("truncated JSON", GENERATE, b'{"seed": 1', 400),
        Case("trailing garbage", GENERATE, b'{"seed": 1} {"seed": 2}', 400),
        Case("NUL byte", GENERATE, b'{"seed": 1}\x00', 400),
        Case("unknown field", GENERATE, b'{"seed": 1, "sneaky": true}'),
        Case(
            "50k unknown fields", GENERATE, json.dumps({f"k{i}": 1 for i in range(50_000)}).encode()
        ),
        Case("both seed and latent", GENERATE, b'{"seed": 1, "latent": [0.5]}'),
        # Numbers.
        Case("NaN latent", GENERATE, _latent("NaN")),
        Case("Infinity latent", GENERATE, _latent("Infinity")),
        Case("-Infinity latent", GENERATE, _latent("0", "-Infinity")),
        Case("latent beyond float32", GENERATE, _latent("1e39")),
        Case("latent 1e300", GENERATE, _latent("-1e300")),
        Case("latent overflowing double", GENERATE, _latent("1e999999")),
        Case("latent wrong length", GENERATE, b'{"latent": [0.5, 0.5]}'),
        Case("latent of strings", GENERATE, _latent('"0.5"')),
        Case("empty latent", GENERATE, b'{"latent": []}'),
        Case("200k-float latent", GENERATE, b'{"latent": [' + b"0," * 199_999 + b"0]}"),
        Case("million-float latent", GENERATE, b'{"latent": [' + b"0.1," * 999_999 + b"0.1]}", 413),
        Case("NaN truncation", GENERATE, b'{"truncation": NaN}'),
        Case("Infinity truncation", GENERATE, b'{"truncation": Infinity}'),
        Case("zero truncation", GENERATE, b'{"truncation": 0}'),
        Case("negative truncation", GENERATE, b'{"truncation": -0.5}'),
        # Seeds.
        Case("negative seed", GENERATE, b'{"seed": -1}'),
        Case("seed 2**63", GENERATE, b'{"seed": 9223372036854775808}'),
        Case("seed 10**30", GENERATE, b'{"seed": 1000000000000000000000000000000}'),
        Case("seed of 5000 digits", GENERATE, b'{"seed": ' + b"9" * 5000 + b"}", 400),
        Case("seed 1e400", GENERATE, b'{"seed": 1e400}'),
        Case("seed NaN", GENERATE, b'{"seed": NaN}'),
        Case("seed 7.5", GENERATE, b'{"seed": 7.5}'),
        Case("seed as string", GENERATE, b'{"seed": "7"}'),
        Case("seed true", GENERATE, b'{"seed": true}'),
        Case("seed in path negative", f"/v1/models/{TINY}/images/-1.png", method="GET"),
        Case(
            "seed in path 2**63", f"/v1/models/{TINY}/images/9223372036854775808.png", method="GET"
        ),
        Case("seed in path 30 digits", f"/v1/models/{TINY}/images/{'9' * 30}.png", method="GET"),
        Case("seed in path hex", f"/v1/models/{TINY}/images/0x10.png", method="GET"),
        Case("seed in path unicode digits", f"/v1/models/{TINY}/images/%D9%A3.png", method="GET"),
        # Scale, count, columns, steps.
        Case("scale 0", GENERATE, b'{"scale": 0}'),
        Case("scale -1", GENERATE, b'{"scale": -1}'),
        Case("scale 17", GENERATE, b'{"scale": 17}'),
        Case("scale 10**30", GENERATE, b'{"scale": 1000000000000000000000000000000}'),
        Case("scale 2.5", GENERATE, b'{"scale": 2.5}'),
        Case("scale 2.0 (integers are written as integers)", GENERATE, b'{"scale": 2.0}'),
        Case("scale in query 1e400", f"/v1/models/{TINY}/images/1.png?scale=1e400", method="GET"),
        Case(
            "truncation in query nan",
            f"/v1/models/{TINY}/images/1.png?truncation=nan",
            method="GET",
        ),
        Case("count 0", BATCH, b'{"count": 0}'),
        Case("count -5", BATCH, b'{"count": -5}'),
        Case(
            "count 10**30",
            BATCH,
            b'{"count": 1000000000000000000000000000000}',
            413,
            "too_many_items",
        ),
        Case(
            "count 1e9 near the last seed",
            BATCH,
            b'{"count": 1000000000, "seed": 9223372036854775000}',
        ),
        Case("count over the item limit", BATCH, b'{"count": 65}', 413, "too_many_items"),
        Case("100k seeds", BATCH, b'{"seeds": [' + b"1," * 99_999 + b"1]}", 413, "too_many_items"),
        Case("columns 0", BATCH, b'{"count": 4, "columns": 0}'),
        Case("steps 0", INTERPOLATE, b'{"start": {"seed": 1}, "end": {"seed": 2}, "steps": 0}'),
        Case("steps 1", INTERPOLATE, b'{"start": {"seed": 1}, "end": {"seed": 2}, "steps": 1}'),
        Case(
            "steps 10**9",
            INTERPOLATE,
            b'{"start": {"seed": 1}, "end": {"seed": 2}, "steps": 1000000000}',
        ),
        Case("interpolate without ends", INTERPOLATE, b'{"steps": 4}'),
        # Content types, encodings, negotiation, methods.
        Case(
            "text/plain JSON",
            GENERATE,
            b'{"seed": 1}',
            415,
            headers=(("Content-Type", "text/plain"),),
        ),
        Case(
            "form-encoded",
            GENERATE,
            b"seed=1",
            415,
            headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        ),
        Case(
            "multipart",
            GENERATE,
            b'--x\r\nContent-Disposition: form-data; name="seed"\r\n\r\n1\r\n--x--\r\n',
            415,
            headers=(("Content-Type", "multipart/form-data; boundary=x"),),
        ),
        Case("invalid UTF-8 in a string", GENERATE, b'{"seed": "\xff\xfe"}', 400),
        Case("invalid UTF-8 in a key", GENERATE, b'{"\xc3\x28": 1}', 400),
        Case("UTF-16 body", GENERATE, '{"seed": 1}'.encode("utf-16"), 400),
        Case("lone surrogate escape", GENERATE, b'{"seed": "\\ud800"}', 400),
        Case("unknown model", f"/v1/models/{'x' * 5000}/generate", b"{}", 404),
        Case("invalid UTF-8 model name", "/v1/models/%FF%FE/generate", b"{}", 404),
        Case(
            "Accept image/gif on generate",
            GENERATE,
            b'{"seed": 1}',
            406,
            headers=(("Content-Type", "application/json"), ("Accept", "image/gif")),
        ),
        Case("PUT on generate", GENERATE, b'{"seed": 1}', 405, method="PUT"),
        Case(
            "5000-character Accept",
            GENERATE,
            b'{"seed": 1}',
            406,
            headers=(("Content-Type", "application/json"), ("Accept", "image/x-" + "y" * 5000)),
        ),
        Case("5000-character seed", f"/v1/models/{TINY}/images/{'7' * 5000}.png", method="GET"),
    ]
    return cases


async def _huge_body(port: int, *, expect_continue: bool) -> Outcome:
    """8 MiB announced by Content-Length: refused before the body is read."""
    size = 8 * MAX_BODY_BYTES
    headers = {"Content-Length": str(size), **JSON_TYPE}
    if expect_continue:
        return await request("POST", port, GENERATE, b"", headers=headers, expect_continue=True)
    # Without Expect the client starts sending; the answer must come while it still sends.
    started = time.monotonic()
    outcome = Outcome(started_at=started)
    reader, writer = await asyncio.open_connection(HOST, port)
    head = f"POST {GENERATE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    writer.write((head + f"Content-Length: {size}\r\n\r\n").encode() + b"[" * 65536)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 30)
    outcome.status = int(line.split()[1])
    headers_text = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = int(headers_text.lower().split("content-length:")[1].split("\r\n")[0])
    outcome.body = await reader.readexactly(length)
    outcome.complete = True
    outcome.done_at = time.monotonic()
    writer.close()
    return outcome


async def _chunked_over_limit(port: int) -> Outcome:
    """A chunked body with no length, growing past the limit: refused while streaming."""
    outcome = Outcome(started_at=time.monotonic())
    reader, writer = await asyncio.open_connection(HOST, port)
    head = f"POST {GENERATE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    writer.write((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
    chunk = b"[" * 65536
    answer = asyncio.create_task(reader.readline())
    for _ in range(64):  # up to 4 MiB, stopping as soon as the server answers
        if answer.done():
            break
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.005)
    line = await asyncio.wait_for(answer, 30)
    outcome.status = int(line.split()[1])
    headers_text = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = int(headers_text.lower().split("content-length:")[1].split("\r\n")[0])
    outcome.body = await reader.readexactly(length)
    outcome.complete = True
    outcome.done_at = time.monotonic()
    writer.close()
    return outcome


async def _send(http: httpx.AsyncClient, case: Case) -> Outcome:
    """Through httpx, as a real client sends: it also reads an early answer (413) to a body
    still being sent."""
    outcome = Outcome(started_at=time.monotonic())
    headers = dict(case.headers)
    request = http.build_request(case.method, case.path, content=case.body, headers=headers)
    if "Content-Type" in headers and not headers["Content-Type"]:
        del request.headers["Content-Type"]
    response = await http.send(request)
    outcome.done_at = time.monotonic()
    outcome.status, outcome.body, outcome.complete = response.status_code, response.content, True
    outcome.headers = {name.lower(): value for name, value in response.headers.items()}
    return outcome


def _check(name: str, outcome: Outcome, status: int, error_type: str) -> None:
    assert outcome.complete, (name, outcome.error)
    assert outcome.status == status, (name, outcome.status, outcome.body[:300])
    body = json.loads(outcome.body)
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, (name, body)
    assert body["error"]["type"] == error_type, (name, body)
    message = body["error"]["message"]
    assert 10 <= len(message) <= 600, (name, message)  # says something, echoes nothing huge
    assert outcome.latency_s < SLOW_ANSWER_S, (name, outcome.latency_s)


async def test_hostile_requests_get_quick_clear_4xx_and_memory_holds(serve: Launcher) -> None:
    server = serve(
        max_body_bytes=MAX_BODY_BYTES, max_items_per_request=MAX_ITEMS, log_level="warning"
    )
    port = server.port
    cases = _cases()
    before = server.metrics()
    rss: list[int] = []
    slowest: dict[str, float] = {}
    http = httpx.AsyncClient(base_url=server.base_url, timeout=60)
    for round_ in range(3):  # memory must not grow from one round to the next
        for case in cases:
            outcome = await _send(http, case)
            _check(case.name, outcome, case.status, case.error_type or TYPES[case.status])
            slowest[case.name] = max(slowest.get(case.name, 0.0), outcome.latency_s)
        for expect_continue in (True, False):
            huge = await _huge_body(port, expect_continue=expect_continue)
            _check("8 MiB body", huge, 413, "payload_too_large")
            assert huge.continued_at is None  # refused before the client sent the body
        _check("chunked over limit", await _chunked_over_limit(port), 413, "payload_too_large")
        rss.append(server.rss_bytes())
        assert round_ == 0 or rss[-1] - rss[1 if round_ > 1 else 0] < MAX_RSS_GROWTH_BYTES, rss

    await http.aclose()
    after = server.metrics()
    images = metric_sum(after, "imagegen_images_generated_total") - metric_sum(
        before, "imagegen_images_generated_total"
    )
    assert images == 0  # no hostile request reached the model
    assert not warnings_in(server.log()), warnings_in(server.log())
    # No Content-Type at all is taken as JSON (curl -d with -H is not needed for that).
    fine = await request("POST", port, GENERATE, b'{"seed": 7}', headers={"Content-Type": ""})
    assert fine.status == 200 and fine.headers["x-seed"] == "7", (fine.status, fine.body)
    record(
        "hostile_input",
        cases=len(cases) + 3,
        rounds=3,
        requests=3 * (len(cases) + 3),
        slowest_case=max(slowest, key=lambda name: slowest[name]),
        slowest_s=round(max(slowest.values()), 3),
        rss_mib=[round(value / 2**20, 1) for value in rss],
        images_computed=images,
    )
