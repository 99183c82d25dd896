"""Schemathesis against the app's own OpenAPI schema: no server errors, no schema violations."""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import Settings
from tests.conftest import FakeEncoder

CHECKS: dict[GenerationMode, list[Any]] = {
    GenerationMode.POSITIVE: [not_a_server_error, status_code_conformance,
                              content_type_conformance, response_schema_conformance,
                              response_headers_conformance],
    GenerationMode.NEGATIVE: [not_a_server_error, status_code_conformance,
                              content_type_conformance, response_schema_conformance,
                              response_headers_conformance, negative_data_rejection],
}


def fuzz(app: FastAPI, mode: GenerationMode, examples: int) -> dict[str, Any]:
    """Run `examples` generated requests over every operation; count calls, statuses, failures."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    calls: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    @hypothesis_settings(max_examples=examples, deadline=None, database=None,
                         phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy(generation_mode=mode))
    def run(case: Case[Any]) -> None:
        calls[case.operation.label] += 1
        try:
            response = case.call_and_validate(checks=CHECKS[mode])
            statuses[response.status_code] += 1
        except (FailureGroup, AssertionError, OSError) as exc:
            failures.append(f"{case.operation.label}: {type(exc).__name__}: {exc}"[:2000])

    run()
    return {"mode": mode.value, "calls": dict(calls), "statuses": dict(statuses),
            "failures": failures}


def _app(settings: Settings, encoder: FakeEncoder) -> FastAPI:
    # Schemathesis keeps an app's lifespan running for the rest of the process: no watcher
    # or writer thread may outlive the test (feedback with a store is tested in test_feedback).
    return create_app(settings.model_copy(update={"cache_size": 0, "reload_interval": 0,
                                                  "recording": False}), encoder=encoder)


def test_positive_mode_finds_no_server_error_and_no_schema_violation(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    result = fuzz(_app(fake_settings, fake_encoder), GenerationMode.POSITIVE, 250)
    assert result["failures"] == []
    assert {"POST /api/ask", "POST /api/chat", "GET /api/documents/{doc_id}"} <= set(
        result["calls"])
    assert result["statuses"].get(200, 0) > 0, "some generated questions reach an answer"


def test_negative_mode_finds_no_server_error_and_no_schema_violation(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    result = fuzz(_app(fake_settings, fake_encoder), GenerationMode.NEGATIVE, 250)
    assert result["failures"] == []
    assert sum(result["calls"].values()) >= 100
    assert not [s for s in result["statuses"] if s >= 500]
