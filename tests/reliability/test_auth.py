"""Auth: with an API key set, every /v1 route needs `Authorization: Bearer <key>`.

Health, readiness and metrics stay open; a wrong or missing key is a 401 in the one error
shape; the comparison is constant-time; the key never shows in logs, metrics or answers.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

import service.auth as auth
from service.app import create_app
from service.redaction import REDACTED, RedactSecret
from service.settings import Settings
from tests.reliability.conftest import TINY, Launcher
from tests.reliability.report import record

API_KEY = "rel-7f3c9a1e-key"
OPEN_PATHS = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"]
PATH_VALUES = {"model": TINY, "seed": "3"}
BODIES: dict[str, Any] = {
    "generate": {"seed": 1},
    "batch": {"count": 2, "seed": 0},
    "interpolate": {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 3},
}


def _v1_operations(schema: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(method, concrete path, JSON body or None) for every /v1 operation in the schema."""
    operations = []
    for template, methods in schema["paths"].items():
        if not template.startswith("/v1"):
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], template)
        for method in methods:
            body = next((b for name, b in BODIES.items() if path.endswith(name)), None)
            operations.append((method.upper(), path, body))
    return operations


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "unauthorized"
    assert API_KEY not in response.text


def test_every_v1_route_needs_the_key_and_the_key_never_leaks(
    serve: Launcher, tmp_path: Path
) -> None:
    # A trailing newline, as a key read from a mounted secret file often has.
    server = serve(log_level="debug", env={"IMAGEGEN_API_KEY": API_KEY + "\n"})
    good = {"Authorization": f"Bearer {API_KEY}"}
    wrong_credentials = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {API_KEY[:-1]}"},
        {"Authorization": f"Bearer {API_KEY}x"},
        {"Authorization": f"Bearer {API_KEY.upper()}"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
        {"X-API-Key": API_KEY},
    ]
    checked = 0
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        schema = http.get("/openapi.json", headers=good).json()
        operations = _v1_operations(schema)
        assert len(operations) >= 5, operations
        for method, path, body in operations:
            for headers in wrong_credentials:
                _assert_401(http.request(method, path, json=body, headers=headers))
                checked += 1
            _assert_401(http.request(method, f"{path}?api_key={API_KEY}", json=body))
            allowed = http.request(method, path, json=body, headers=good)
            assert allowed.status_code == 200, (method, path, allowed.text)
            lower = http.request(
                method, path, json=body, headers={"authorization": f"bearer {API_KEY}"}
            )
            assert lower.status_code == 200
        # Routes that do not exist are 401 too: no probing for what exists without the key.
        for path in ["/v1/nothing", "/v1/models/", "//v1/models", "/healthz/../v1/models"]:
            _assert_401(http.get(path))
        # The open prefixes do not open anything else.
        for path in ["/static/../v1/models", "/static/%2e%2e/v1/models", "/metrics/../v1/models"]:
            response = http.get(path)
            assert response.status_code in (401, 404), (path, response.status_code)
            assert "latent_dim" not in response.text
        for path in OPEN_PATHS:
            assert http.get(path).status_code == 200, path
        metrics = http.get("/metrics").text
        assert 'reason="unauthorized"' in metrics
        assert API_KEY not in metrics
    server.stop()
    log = server.log()
    assert "401" in log  # the access log was on, and saw the refusals
    assert API_KEY not in log
    record(
        "auth",
        v1_operations=len(operations),
        refused_401=checked + len(operations) + 4,
        open_paths=len(OPEN_PATHS),
        key_in_logs=False,
    )


@pytest.mark.parametrize(
    "header", [f"Bearer {API_KEY}", "Bearer nope", f"Bearer {API_KEY}{API_KEY}"]
)
async def test_the_key_is_compared_in_constant_time(
    header: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check goes through hmac.compare_digest, whatever the token looks like."""
    from tests.reliability.models import write_tiny

    write_tiny(tmp_path / "models")
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    app = create_app(Settings(models_dir=tmp_path / "models", api_key=API_KEY))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/v1/models", headers={"Authorization": header})
    assert response.status_code == (200 if header == f"Bearer {API_KEY}" else 401)
    assert len(calls) == 1


def test_the_redaction_filter_rewrites_only_records_holding_the_key() -> None:
    redact = RedactSecret(API_KEY)
    holding = logging.LogRecord("x", logging.INFO, "f", 1, "GET /?api_key=%s", (API_KEY,), None)
    plain = logging.LogRecord("x", logging.INFO, "f", 1, "GET /healthz %d", (200,), None)
    broken = logging.LogRecord("x", logging.INFO, "f", 1, "%d %d", ("one",), None)
    assert all(redact.filter(record) for record in (holding, plain, broken))
    assert holding.getMessage() == f"GET /?api_key={REDACTED}"
    assert plain.getMessage() == "GET /healthz 200"
