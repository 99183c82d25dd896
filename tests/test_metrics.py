"""Observability: /metrics in Prometheus format, JSON log lines, request ids, private questions."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from service.app import create_app
from service.http.logging_config import REQUEST_ID, JsonFormatter
from service.index import store
from service.settings import Settings
from tests.conftest import ROOT, FakeEncoder

QUESTION = "What does a VP of Product focus on?"


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_and_status(fake_client: TestClient) -> None:
    fake_client.post("/api/ask", json={"question": QUESTION})
    fake_client.post("/api/ask", json={"question": ""})
    fake_client.get("/api/documents/head-of-product.txt")
    fake_client.get("/api/documents/no-such.txt")
    fake_client.get("/wp-login.php")
    fake_client.request("PROPFIND", "/healthz")
    s = _samples(fake_client)
    total = "qa_http_requests_total"
    assert _value(s, total, method="POST", route="/api/ask", status="200") == 1
    assert _value(s, total, method="POST", route="/api/ask", status="422") == 1
    docs = "/api/documents/{doc_id:path}"
    assert _value(s, total, method="GET", route=docs, status="200") == 1
    assert _value(s, total, method="GET", route=docs, status="404") == 1
    # Scanners' paths and made-up methods collapse into one label each.
    assert _value(s, total, method="GET", route="<unmatched>", status="404") == 1
    assert _value(s, total, method="OTHER", route="/healthz", status="405") == 1
    assert not any("no-such" in str(key) or "wp-login" in str(key) for key in s)


def test_latency_histograms_per_route(fake_client: TestClient) -> None:
    for _ in range(3):
        fake_client.post("/api/ask", json={"question": QUESTION})
    s = _samples(fake_client)
    name = "qa_http_request_duration_seconds"
    assert _value(s, name + "_count", method="POST", route="/api/ask") == 3
    assert _value(s, name + "_bucket", method="POST", route="/api/ask", le="+Inf") == 3
    assert 0 < _value(s, name + "_sum", method="POST", route="/api/ask") < 30
    buckets = [float(dict(labels)["le"]) for (n, labels) in s
               if n == name + "_bucket" and dict(labels)["route"] == "/api/ask"]
    assert min(buckets) <= 0.001, "buckets resolve millisecond answers"


def test_answered_and_declined_are_counted(fake_client: TestClient) -> None:
    outcomes = {"answered": 0, "declined": 0}
    for question in (QUESTION, "Who chairs Bloomberg's new board?", "qwxz vbnm plok zzyx",
                     "What is the boiling point of mercury on Mars?"):
        body = fake_client.post("/api/ask", json={"question": question}).json()
        outcomes["answered" if body["answered"] else "declined"] += 1
    chat = fake_client.post("/api/chat", json={"messages": [
        {"role": "user", "content": QUESTION}]}).json()
    s = _samples(fake_client)
    for outcome, n in outcomes.items():
        assert _value(s, "qa_answers_total", route="/api/ask", outcome=outcome) == n
    chat_outcome = "answered" if chat["answered"] else "declined"
    assert _value(s, "qa_answers_total", route="/api/chat", outcome=chat_outcome) == 1
    assert outcomes["answered"] >= 1


def test_index_version_documents_chunks_and_build_time(fake_client: TestClient,
                                                       fake_settings: Settings) -> None:
    ready = fake_client.get("/readyz").json()
    s = _samples(fake_client)
    assert _value(s, "qa_index_ready") == 1
    assert _value(s, "qa_index_info", version=ready["index_version"], model="fake",
                  encoder="fake") == 1
    assert _value(s, "qa_index_documents") == ready["documents"]
    assert _value(s, "qa_index_chunks") == ready["chunks"]
    report = fake_settings.index_dir / "versions" / ready["index_version"] / "build.json"
    seconds = json.loads(report.read_text("utf-8"))["seconds"]
    assert _value(s, "qa_index_build_seconds", version=ready["index_version"]) == seconds
    assert _value(s, "qa_answers_in_flight") == 0
    assert _value(s, "process_resident_memory_bytes") > 0


def test_build_times_follow_the_versions_on_disk(fake_client: TestClient,
                                                 fake_settings: Settings) -> None:
    version = str(store.current_version(fake_settings.index_dir))
    other = fake_settings.index_dir / "versions" / "20990101T000000000Z-1"
    other.mkdir()
    (other / "build.json").write_text(json.dumps({"seconds": 12.5}), "utf-8")
    s = _samples(fake_client)
    assert _value(s, "qa_index_build_seconds", version="20990101T000000000Z-1") == 12.5
    (other / "build.json").unlink()
    other.rmdir()
    s = _samples(fake_client)
    assert ("qa_index_build_seconds", (("version", "20990101T000000000Z-1"),)) not in s
    assert _value(s, "qa_index_build_seconds", version=version) > 0


def test_each_app_has_its_own_registry(fake_settings: Settings,
                                       fake_encoder: FakeEncoder) -> None:
    with TestClient(create_app(fake_settings, encoder=fake_encoder)) as first:
        first.get("/healthz")
        first.get("/healthz")
        with TestClient(create_app(fake_settings, encoder=fake_encoder)) as second:
            second.get("/healthz")
            total = "qa_http_requests_total"
            labels = {"method": "GET", "route": "/healthz", "status": "200"}
            assert _value(_samples(first), total, **labels) == 2
            assert _value(_samples(second), total, **labels) == 1


def test_refusals_are_counted_under_the_route_they_were_meant_for(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    settings = fake_settings.model_copy(update={"rate_limit": 1})
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        client.get("/api/documents/head-of-product.txt")
        client.get("/api/documents/head-of-product.txt")
        client.post("/api/chat", content=b"x" * 70_000)
        s = _samples(client)
    docs = "/api/documents/{doc_id:path}"
    total = "qa_http_requests_total"
    assert _value(s, total, method="GET", route=docs, status="429") == 1
    assert _value(s, total, method="POST", route="/api/chat", status="429") == 1


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the access and service loggers write, through the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_access_log_is_json_with_the_request_id(fake_client: TestClient,
                                                log_lines: io.StringIO) -> None:
    r = fake_client.post("/api/ask", json={"question": QUESTION},
                         headers={"X-Request-ID": "trace-42"})
    health = fake_client.get("/healthz")
    access = [e for e in _records(log_lines) if e["logger"] == "service.access"]
    assert len(access) == 2
    first = access[0]
    assert first["request_id"] == "trace-42" == r.headers["x-request-id"]
    assert {k: first[k] for k in ("level", "method", "path", "route", "status", "client")} == {
        "level": "INFO", "method": "POST", "path": "/api/ask", "route": "/api/ask",
        "status": 200, "client": "testclient"}
    assert first["outcome"] in ("answered", "declined")
    assert isinstance(first["ms"], float) and isinstance(first["time"], str)
    assert access[1]["request_id"] == health.headers["x-request-id"] != "trace-42"


def test_questions_are_not_logged_unless_enabled(fake_settings: Settings,
                                                 fake_encoder: FakeEncoder,
                                                 log_lines: io.StringIO,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    private = "Is my colleague Jane Roe on a performance plan?"
    with TestClient(create_app(fake_settings, encoder=fake_encoder)) as client:
        client.post("/api/ask", json={"question": private})
        client.post("/api/chat", json={"messages": [{"role": "user", "content": private}]})
        client.post("/api/ask", json={"question": private + "\x00"})
    assert private not in log_lines.getvalue()
    assert not [r for r in caplog.records if private in r.getMessage() + repr(r.__dict__)]

    enabled = fake_settings.model_copy(update={"log_questions": True})
    with TestClient(create_app(enabled, encoder=fake_encoder)) as client:
        client.post("/api/ask", json={"question": private})
        client.post("/api/chat", json={"messages": [
            {"role": "user", "content": "hello"}, {"role": "user", "content": private}]})
    logged = [e.get("question") for e in _records(log_lines) if e["logger"] == "service.access"]
    assert logged[-2:] == [private, private]


def test_the_formatter_survives_unencodable_values() -> None:
    record = logging.LogRecord("service.x", logging.WARNING, __file__, 1, "bad %s", ("\ud800",),
                               None)
    record.question = "lone \udfff surrogate"
    token = REQUEST_ID.set("r-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    line.encode("utf-8")  # would raise if a surrogate slipped through
    entry = json.loads(line)
    assert entry["request_id"] == "r-1" and entry["level"] == "WARNING"
    assert entry["question"] == "lone \udfff surrogate"


def test_the_uvicorn_log_config_writes_json_and_silences_the_plain_access_log() -> None:
    script = (
        "import json, logging, logging.config\n"
        "logging.config.dictConfig(json.load(open('service/http/log_config.json')))\n"
        "logging.getLogger('uvicorn.access').info('plain access line')\n"
        "logging.getLogger('uvicorn.error').info('Started server process')\n"
        "logging.getLogger('service.access').info('POST /api/ask 200', extra={'status': 200})\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["message"] for e in entries] == ["Started server process", "POST /api/ask 200"]
    assert entries[1]["status"] == 200


def test_make_serve_uses_the_log_config() -> None:
    serve = [line for line in (ROOT / "Makefile").read_text("utf-8").splitlines()
             if line.startswith("\t") and "scripts/serve.py" in line]
    assert len(serve) == 1 and "--log-config service/http/log_config.json" in serve[0]
    assert Path(ROOT / "service" / "http" / "log_config.json").is_file()


def test_rate_limited_requests_are_logged_only_at_debug(
        fake_settings: Settings, fake_encoder: FakeEncoder,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="service.access")
    settings = fake_settings.model_copy(update={"rate_limit": 1, "log_level": "DEBUG"})
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        client.get("/healthz")
        client.get("/api/documents/head-of-product.txt")
        client.get("/api/documents/head-of-product.txt")
    levels = [(r.getMessage().split()[-1], r.levelname) for r in caplog.records
              if r.name == "service.access"]
    assert levels == [("200", "INFO"), ("200", "INFO"), ("429", "DEBUG")]


def test_a_client_that_leaves_mid_body_is_499_not_a_server_error(
        fake_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="service.access")
    app = fake_client.app
    sent: list[Message] = []

    async def one_request() -> None:
        queue: list[Message] = [
            {"type": "http.request", "body": b'{"question": "wh', "more_body": True}]

        async def receive() -> Message:
            return queue.pop(0) if queue else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "path": "/api/ask", "raw_path": b"/api/ask",
                 "query_string": b"", "headers": [(b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "scheme": "http"}
        await app(scope, receive, send)

    for _ in range(3):
        anyio.run(one_request)
    assert sent == []  # nobody to answer
    s = _samples(fake_client)
    total = "qa_http_requests_total"
    assert _value(s, total, method="POST", route="/api/ask", status="499") == 3
    assert _value(s, total, method="POST", route="/api/ask", status="500") == 0
    aborted = [r for r in caplog.records if r.name == "service.access" and "499" in r.getMessage()]
    assert len(aborted) == 3 and all(r.levelname == "DEBUG" for r in aborted)


def test_the_access_log_line_cuts_a_long_path(fake_client: TestClient,
                                              log_lines: io.StringIO) -> None:
    fake_client.get("/x" * 30_000)
    access = [e for e in _records(log_lines) if e["logger"] == "service.access"]
    assert len(access) == 1
    assert len(str(access[0]["path"])) == 200
    assert len(str(access[0]["message"])) < 220
