"""Settings come from IMAGEGEN_* variables, are documented, and fail fast naming the bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings

DESIGN_FIELDS = [
    "models_dir", "host", "port", "providers", "device_id", "intra_op_threads",
    "max_batch_size", "max_batch_delay_ms", "max_queue_size", "request_timeout_ms",
    "max_items_per_request", "max_body_bytes", "api_key", "log_level",
]  # fmt: skip


def test_every_design_field_exists_and_is_documented() -> None:
    fields = Settings.model_fields
    for name in DESIGN_FIELDS:
        assert name in fields, name
    for name, field in fields.items():
        assert field.description, f"{name} has no description"


def test_environment_variables_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_PORT", "9123")
    monkeypatch.setenv("IMAGEGEN_PROVIDERS", "CPU")
    monkeypatch.setenv("IMAGEGEN_MAX_BATCH_DELAY_MS", "2.5")
    monkeypatch.setenv("IMAGEGEN_API_KEY", "s3cret")
    settings = Settings()
    assert settings.port == 9123
    assert settings.providers == "cpu"
    assert settings.max_batch_delay_s == pytest.approx(0.0025)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_defaults_serve_on_cpu_or_cuda_locally() -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.providers) == ("127.0.0.1", 8000, "auto")
    assert settings.api_key is None
    assert settings.skip_invalid_models is False


def test_empty_api_key_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_API_KEY", "")
    assert Settings().api_key is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"providers": "tpu"}, "providers"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"port": 70000}, "port"),
        ({"max_items_per_request": 100, "max_queue_size": 10}, "max_items_per_request \\(100\\)"),
    ],
)
def test_bad_values_fail_naming_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]
