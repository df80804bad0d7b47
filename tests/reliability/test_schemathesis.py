"""Schemathesis against a real server, over the service's own OpenAPI document.

Every operation gets generated valid and invalid requests (bounded example counts, fixed
randomness), with the model path parameter pinned to the served model so the bodies are
really validated, and once left free (unknown models). No answer may be a 5xx, and every
answer must match the document: status codes, content types, headers and bodies, error
bodies included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.reliability.conftest import TINY
from tests.reliability.harness import Server, launch, warnings_in
from tests.reliability.models import write_tiny
from tests.reliability.report import record

EXAMPLES = 50  # per operation and generation mode


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    write_tiny(root / "models", TINY)
    server = launch(
        root / "models",
        root / "server.log",
        max_items_per_request=16,
        max_body_bytes=65536,
        log_level="warning",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_every_operation_answers_within_its_schema(api_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server.base_url}/openapi.json")
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    unnegatable = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        pins: list[dict[str, str] | None] = [None]
        if "{model}" in operation.path:
            pins.insert(0, {"model": TINY})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for pin in pins:
                strategy = operation.as_strategy(mode, path_parameters=pin)

                @given(case=strategy)
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                )
                def check(case: Case) -> None:
                    response = case.call_and_validate(
                        base_url=api_server.base_url,
                        timeout=60,
                        excluded_checks=[positive_data_acceptance],
                    )
                    statuses[response.status_code] += 1

                try:
                    check()
                except Unsatisfiable:
                    # Nothing to negate (no body, only free-form string parameters).
                    assert mode is GenerationMode.NEGATIVE, operation.path
                    unnegatable += 1
                except BaseException as error:  # FailureGroup: one report per case set
                    if isinstance(error, (KeyboardInterrupt, SystemExit)):
                        raise
                    where = f"{operation.method.upper()} {operation.path} {mode.value}"
                    failures.append(f"{where} model={pin}: {error}")
    record(
        "schemathesis",
        operations=len(operations),
        requests=sum(statuses.values()),
        statuses=dict(sorted(statuses.items())),
        failures=len(failures),
        case_sets_without_negative_data=unnegatable,
    )
    assert not failures, "\n\n".join(failures)
    assert not warnings_in(api_server.log()), warnings_in(api_server.log())
