"""Limits, headers, CORS, docs switch, secrets and index integrity, through the real app."""

from __future__ import annotations

import hmac
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from starlette.types import Message, Receive, Scope, Send

from service.app import StartupError, create_app, load_settings
from service.http.limits import AnswerLimitMiddleware, BodyLimitMiddleware, Capacity
from service.index import store
from service.index.indexing import VECTORS
from service.qa.retrieval import load_index
from service.settings import Settings
from tests.conftest import ROOT, FakeEncoder

ORIGIN = "https://intranet.example.com"


def _app(settings: Settings, encoder: FakeEncoder, **update: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update), encoder=encoder))


# --- body limit (unit: the middleware alone, so every edge of the stream is under control) ---

async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _run(app: Any, messages: Sequence[Message], *, method: str = "POST", path: str = "/api/ask",
         headers: Sequence[tuple[bytes, bytes]] = ()) -> list[Message]:
    sent: list[Message] = []
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    anyio.run(app, scope, receive, send)
    return sent


def _chunks(*sizes: int) -> list[Message]:
    return [{"type": "http.request", "body": b"a" * n, "more_body": i < len(sizes) - 1}
            for i, n in enumerate(sizes)]


def test_body_at_the_limit_passes_one_byte_over_is_413() -> None:
    limited = BodyLimitMiddleware(_echo, limit=1000)
    ok = _run(limited, _chunks(1000))
    assert ok[0]["status"] == 200 and ok[1]["body"] == b"1000"
    over = _run(limited, _chunks(1001))
    assert over[0]["status"] == 413
    assert json.loads(over[1]["body"]) == {"detail": "request body is over the 1,000-byte limit"}


def test_chunked_body_is_counted_as_it_arrives() -> None:
    limited = BodyLimitMiddleware(_echo, limit=1000)
    assert _run(limited, _chunks(400, 400, 200))[1]["body"] == b"1000"
    assert _run(limited, _chunks(400, 400, 201))[0]["status"] == 413
    # A body that lies low in Content-Length is still cut at the limit.
    lying = _run(limited, _chunks(600, 600), headers=[(b"content-length", b"10")])
    assert lying[0]["status"] == 413


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    limited = BodyLimitMiddleware(_echo, limit=1000)
    sent = _run(limited, [], headers=[(b"content-length", b"5000")])
    assert sent[0]["status"] == 413


def test_per_prefix_overrides_and_bodyless_methods() -> None:
    limited = BodyLimitMiddleware(_echo, limit=1000, overrides={"/api/admin/": 10})
    assert _run(limited, _chunks(11), path="/api/admin/reload")[0]["status"] == 413
    assert _run(limited, _chunks(11), path="/api/ask")[0]["status"] == 200
    assert _run(limited, _chunks(5000), method="GET")[0]["status"] == 200


def test_an_override_applies_only_to_requests_the_check_trusts() -> None:
    seen: list[bool] = []

    def trusted(scope: Scope) -> bool:
        seen.append(True)
        return dict(scope["headers"]).get(b"authorization") == b"Bearer right"

    limited = BodyLimitMiddleware(_echo, limit=1000, overrides={"/api/admin/": 5000},
                                  trusted=trusted)
    path = "/api/admin/documents/a.txt"
    ok = _run(limited, _chunks(3000), path=path, headers=[(b"authorization", b"Bearer right")])
    assert ok[1]["body"] == b"3000"
    # Without the right token the small limit holds, declared or streamed.
    for headers in ([], [(b"authorization", b"Bearer wrong")]):
        assert _run(limited, _chunks(1001), path=path, headers=headers)[0]["status"] == 413
        declared = [*headers, (b"content-length", b"4000")]
        assert _run(limited, [], path=path, headers=declared)[0]["status"] == 413
    # Without a check, no request gets the override.
    assert _run(BodyLimitMiddleware(_echo, limit=1000, overrides={"/api/admin/": 5000}),
                _chunks(3000), path=path)[0]["status"] == 413
    assert seen


def test_a_client_that_disconnects_mid_body_gets_nothing() -> None:
    limited = BodyLimitMiddleware(_echo, limit=1000)
    assert _run(limited, [{"type": "http.request", "body": b"a", "more_body": True}]) == []


def test_body_limit_through_the_app(fake_client: TestClient) -> None:
    big = b'{"question": "' + b"a" * 65_536 + b'"}'
    r = fake_client.post("/api/chat", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "65,536-byte limit" in r.json()["detail"]
    assert r.headers["x-content-type-options"] == "nosniff"


# --- answering capacity and deadline ---

def test_a_full_capacity_refuses_at_once_and_a_freed_slot_goes_to_the_waiter() -> None:
    async def main() -> list[int]:
        gate = anyio.Event()
        statuses: list[int] = []

        async def slow(scope: Scope, receive: Receive, send: Send) -> None:
            await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        app = AnswerLimitMiddleware(slow, Capacity(1, queue_wait=0.0), timeout=60)
        waiting_app = AnswerLimitMiddleware(slow, Capacity(1, queue_wait=60), timeout=60)

        async def call(target: Any) -> None:
            async def receive() -> Message:
                return {"type": "http.request", "body": b""}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await target({"type": "http", "method": "POST", "path": "/api/ask"}, receive, send)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, app)
            await anyio.sleep(0.01)
            await call(app)  # refused while the first holds the only slot
            tg.start_soon(call, waiting_app)
            await anyio.sleep(0.01)
            tg.start_soon(call, waiting_app)  # waits for the slot instead of failing
            await anyio.sleep(0.01)
            assert waiting_app.capacity.waiting == 1
            gate.set()
        assert (app.capacity.in_flight, waiting_app.capacity.in_flight) == (0, 0)
        return statuses

    assert anyio.run(main) == [503, 200, 200, 200]


def test_other_routes_are_not_counted_against_the_answering_capacity() -> None:
    capacity = Capacity(1, queue_wait=0)
    app = AnswerLimitMiddleware(_echo, capacity, timeout=60)
    assert _run(app, _chunks(3), path="/api/documents/x")[0]["status"] == 200
    assert capacity.in_flight == 0


class SlowEncoder(FakeEncoder):
    """Takes `delay` seconds per question, like an encoder stuck behind a busy CPU."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self.delay)
        return super().encode_queries(texts)


def test_an_answer_past_the_deadline_is_503_with_a_message(fake_settings: Settings) -> None:
    settings = fake_settings.model_copy(update={"request_timeout": 0.05, "cache_size": 0})
    with TestClient(create_app(settings, encoder=SlowEncoder(0.5))) as client:
        r = client.post("/api/ask", json={"question": "What does a head of product do?"})
        assert r.status_code == 503
        assert r.json() == {"detail": "no answer within 0.05 s; retry in a moment"}
        assert r.headers["retry-after"] == "2"
        assert r.headers["cache-control"] == "no-store"
        metrics = client.get("/metrics").text
        assert "qa_answers_in_flight 0.0" in metrics
        assert 'qa_http_requests_total{method="POST",route="/api/ask",status="503"} 1.0' in metrics


def test_overload_answers_503_not_a_queue(fake_settings: Settings) -> None:
    settings = fake_settings.model_copy(update={"max_concurrency": 1, "cache_size": 0})
    app = create_app(settings, encoder=SlowEncoder(0.3))
    codes: list[int] = []
    with TestClient(app) as client:
        def ask() -> None:
            codes.append(client.post("/api/ask", json={"question": "head of product"})
                         .status_code)

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # One slot, one waiter at most: the rest are refused rather than queued.
    assert codes.count(200) >= 1 and codes.count(503) >= 1
    assert set(codes) == {200, 503}


# --- headers ---

@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/ask", {"question": "head of product"}),
    ("POST", "/api/ask", {"question": ""}),
    ("POST", "/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/api/documents/head-of-product.txt", None),
    ("GET", "/api/documents/missing.txt", None),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/no/such/page", None),
])
def test_every_api_response_is_nosniff_and_not_stored(
        fake_client: TestClient, method: str, path: str, body: object) -> None:
    r = fake_client.request(method, path, json=body)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


def test_static_files_are_cacheable_for_a_short_time(fake_client: TestClient) -> None:
    for path in ("/widget.js", "/demo.css"):
        r = fake_client.get(path)
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"].startswith("public, max-age=")
        assert 0 < int(r.headers["cache-control"].split("=")[1]) <= 3600


def test_the_demo_page_has_a_strict_content_security_policy(fake_client: TestClient) -> None:
    r = fake_client.get("/")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    csp = {d.split()[0]: d.split()[1:] for d in
           r.headers["content-security-policy"].split(";") if d.strip()}
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert not any(v.startswith(("'unsafe", "*", "data:")) for vs in csp.values() for v in vs)


def test_request_ids_are_echoed_when_sane_and_made_when_not(fake_client: TestClient) -> None:
    r = fake_client.get("/healthz", headers={"X-Request-ID": "abc-123.4:5"})
    assert r.headers["x-request-id"] == "abc-123.4:5"
    for bad in ("x" * 129, "has space", "semi;colon", "<script>"):
        made = fake_client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert made != bad and len(made) == 32 and int(made, 16) >= 0
    ids = {fake_client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


# --- CORS ---

def test_cors_allows_only_configured_origins_without_credentials(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    with _app(fake_settings, fake_encoder, allowed_origins=[ORIGIN]) as client:
        ok = client.post("/api/ask", json={"question": "head of product"},
                         headers={"Origin": ORIGIN})
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in ok.headers
        other = client.post("/api/ask", json={"question": "head of product"},
                            headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = client.options("/api/ask", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in preflight.headers
        refused = client.options("/api/ask", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


def test_refusals_carry_cors_headers_so_the_widget_can_read_them(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    with _app(fake_settings, fake_encoder, allowed_origins=[ORIGIN], rate_limit=1) as client:
        client.post("/api/ask", json={"question": "head of product"})
        r = client.post("/api/ask", json={"question": "head of product"},
                        headers={"Origin": ORIGIN})
        assert r.status_code == 429
        assert r.headers["access-control-allow-origin"] == ORIGIN


def test_no_origin_is_allowed_by_default(fake_client: TestClient) -> None:
    r = fake_client.post("/api/ask", json={"question": "head of product"},
                         headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers


# --- interactive docs ---

def test_interactive_docs_can_be_switched_off(fake_settings: Settings,
                                              fake_encoder: FakeEncoder) -> None:
    with _app(fake_settings, fake_encoder, docs_enabled=True) as on:
        assert on.get("/docs").status_code == 200
        assert on.get("/openapi.json").status_code == 200
    with _app(fake_settings, fake_encoder, docs_enabled=False) as off:
        assert off.get("/docs").status_code == 404
        assert off.get("/redoc").status_code == 404
        assert off.get("/openapi.json").status_code == 200  # plain JSON, no third-party code
        assert off.post("/api/ask", json={"question": "head of product"}).status_code == 200


def test_interactive_docs_are_off_by_default() -> None:
    # Swagger UI would load a script from a public CDN onto the service's origin.
    assert Settings.model_fields["docs_enabled"].default is False


@pytest.mark.parametrize("path", ["/healthz/", "/api/ask/", "/readyz/"])
def test_no_trailing_slash_redirect_echoes_the_host(fake_client: TestClient, path: str) -> None:
    r = fake_client.request("POST" if "ask" in path else "GET", path,
                            headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers


def test_the_schema_documents_the_refusals(fake_client: TestClient) -> None:
    ask = fake_client.get("/openapi.json").json()["paths"]["/api/ask"]["post"]["responses"]
    assert {"200", "413", "422", "429", "503"} <= set(ask)
    assert "Retry-After" in ask["429"]["headers"]


# --- secrets ---

TOKEN = "s3cret-" + "k" * 30


def test_a_short_admin_token_is_refused_at_boot_with_a_clear_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(admin_token=SecretStr("x" * 31))
    assert Settings(admin_token=SecretStr("x" * 32)).admin_token is not None
    assert Settings(admin_token=SecretStr("")).admin_token is None
    monkeypatch.setenv("QA_ADMIN_TOKEN", "tooShortSecret123")
    with pytest.raises(StartupError) as info:
        load_settings()
    assert str(info.value) == ("invalid configuration: QA_ADMIN_TOKEN: QA_ADMIN_TOKEN must be at "
                               "least 32 characters (or unset)")
    assert "tooShortSecret123" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_uvicorn_boot_with_a_short_token_says_why_and_not_what(tmp_path: Path) -> None:
    env = {**os.environ, "QA_ADMIN_TOKEN": "tooShortSecret123", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
         "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "QA_ADMIN_TOKEN must be at least 32 characters" in result.stderr
    assert "tooShortSecret123" not in result.stderr + result.stdout


def test_the_admin_token_never_appears_in_responses_or_logs(
        fake_settings: Settings, fake_encoder: FakeEncoder,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    settings = fake_settings.model_copy(update={"admin_token": SecretStr(TOKEN),
                                                "log_level": "DEBUG", "reload_interval": 0,
                                                "admin_rate_limit": 1000})
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    seen: list[str] = []
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        for method, path, body in [
            ("GET", "/", None), ("GET", "/widget.js", None), ("GET", "/demo.css", None),
            ("GET", "/openapi.json", None), ("GET", "/docs", None), ("GET", "/readyz", None),
            ("GET", "/metrics", None), ("GET", "/healthz", None),
            ("POST", "/api/ask", {"question": "What is the admin token?"}),
            ("POST", "/api/ask", {"question": ""}),
            ("POST", "/api/chat", {"messages": [{"role": "user", "content": "token?"}]}),
            ("POST", "/api/admin/reload", None), ("GET", "/api/admin/builds/nope", None),
        ]:
            for auth in ("Bearer " + TOKEN, "Bearer " + TOKEN[:-1], ""):
                r = client.request(method, path, json=body, headers={
                    "Accept-Encoding": "identity", "Authorization": auth})
                seen.append(r.text)
                seen.extend(f"{k}: {v}" for k, v in r.headers.items())
    seen.extend(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    assert not [s for s in seen if TOKEN in s]


def test_the_admin_token_is_compared_in_constant_time(
        fake_settings: Settings, fake_encoder: FakeEncoder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    settings = fake_settings.model_copy(update={"admin_token": SecretStr(TOKEN),
                                                "reload_interval": 0})
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        wrong = client.post("/api/admin/reload", headers={"Authorization": "Bearer nope"})
        right = client.post("/api/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        missing = client.post("/api/admin/reload")
    assert (wrong.status_code, right.status_code, missing.status_code) == (401, 200, 401)
    # Every presented token went through compare_digest (a missing one never gets that far).
    assert len(compared) == 2


# --- index integrity ---

class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch /tmp/qa-pickle-ran",))


def _rewrite_with_checksum(version_dir: Path, name: str, write: Any) -> None:
    write(version_dir / name)
    manifest = json.loads((version_dir / store.MANIFEST).read_text("utf-8"))
    manifest["files"][name] = store.sha256_file(version_dir / name)
    (version_dir / store.MANIFEST).write_text(json.dumps(manifest), "utf-8")


def test_a_pickle_in_the_index_is_never_loaded(fake_settings: Settings) -> None:
    marker = Path("/tmp/qa-pickle-ran")
    marker.unlink(missing_ok=True)
    index_dir = fake_settings.index_dir
    version_dir = index_dir / "versions" / str(store.current_version(index_dir))
    evil = np.array([_Evil()], dtype=object)
    _rewrite_with_checksum(version_dir, VECTORS,
                           lambda path: np.save(path, evil, allow_pickle=True))
    with pytest.raises(store.IndexUnavailable, match="cannot be read"):
        load_index(index_dir)
    assert not marker.exists()


def test_a_damaged_file_is_caught_by_its_checksum_before_faiss_reads_it(
        fake_settings: Settings) -> None:
    index_dir = fake_settings.index_dir
    version_dir = index_dir / "versions" / str(store.current_version(index_dir))
    manifest = json.loads((version_dir / store.MANIFEST).read_text("utf-8"))
    faiss_files = [n for n in manifest["files"] if n.endswith(".faiss")]
    assert faiss_files, "the dense index is listed in the manifest"
    with (version_dir / faiss_files[0]).open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff\xff\xff\xff")
    with pytest.raises(store.IndexUnavailable, match="does not match its checksum"):
        load_index(index_dir)


def test_no_index_reader_allows_pickles() -> None:
    # np.load defaults to allow_pickle=False today; saying so at each call keeps it so.
    calls = 0
    for path in [*(ROOT / "service").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        source = path.read_text("utf-8")
        for args in re.findall(r"np\.load\(([^()]*)\)", source):
            calls += 1
            assert "allow_pickle=False" in args, f"{path.name}: np.load({args})"
        assert not re.search(r"import (c?pickle|joblib|dill)|pickle\.loads?\(", source), path.name
    assert calls >= 3



# --- connection limits of the shipped uvicorn command, on real sockets ---

def _shipped_limits() -> list[str]:
    """UVICORN_LIMITS from the Makefile, checked to be in the Dockerfile's CMD too."""
    makefile = (ROOT / "Makefile").read_text("utf-8")
    (line,) = [x for x in makefile.splitlines() if x.startswith("UVICORN_LIMITS :=")]
    flags = line.split(":=", 1)[1].split()
    assert "$(UVICORN_LIMITS)" in makefile.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    cmd = (ROOT / "Dockerfile").read_text("utf-8").split("\nCMD ", 1)[1]
    docker = json.loads(cmd.replace("\\\n", ""))
    assert " ".join(flags) in " ".join(docker)
    return flags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(fake_settings: Settings) -> Iterator[int]:
    """The app under uvicorn with the shipped limits, on a loopback port (fake encoder)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(QA_CORPUS_DIR=str(fake_settings.corpus_dir),
               QA_INDEX_DIR=str(fake_settings.index_dir), QA_RELOAD_INTERVAL="0",
               QA_RATE_LIMIT="0", QA_BODY_TIMEOUT="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "tests.fakes:fake_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         *_shipped_limits()],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr and proc.stderr.read().decode()
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes the connection or `wait` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        return _read_all(s)


def _read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def test_the_request_head_is_limited_to_16_kib(server: int) -> None:
    ok = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000
                   + b"\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")
    # An 8 MB header was once buffered whole; now the server refuses past 16 KiB.
    big = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000)
    assert big.startswith(b"HTTP/1.1 400") or big == b""


def test_an_idle_keep_alive_connection_is_closed(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=15) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data = _read_all(s)  # returns when the server closes the idle connection
        assert data.startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 10


def test_a_body_that_trickles_in_is_cut_off_with_408(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(b"POST /api/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"question\": ")
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 408")
    assert b"did not arrive within 1 s" in data


def test_connections_past_the_concurrency_limit_get_503(server: int) -> None:
    flags = _shipped_limits()
    limit = int(flags[flags.index("--limit-concurrency") + 1])
    idle = []
    try:
        for _ in range(limit):
            idle.append(socket.create_connection(("127.0.0.1", server), timeout=5))
        time.sleep(0.5)
        refused = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                            b"Connection: close\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503")
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    assert _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     ).startswith(b"HTTP/1.1 200")


def test_the_demo_page_shows_the_configured_title_and_questions(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    plain = fake_settings.model_copy(update={"demo_title": "Handbook <b>help</b>"})
    with TestClient(create_app(plain, encoder=fake_encoder)) as client:
        page = client.get("/").text
    assert "<h1>Handbook &lt;b&gt;help&lt;/b&gt;</h1>" in page and "<h2>Try</h2>" not in page
    asking = plain.model_copy(update={"demo_questions": ["How do I <i>request</i> leave?"]})
    with TestClient(create_app(asking, encoder=fake_encoder)) as client:
        page = client.get("/").text
    assert "<li>How do I &lt;i&gt;request&lt;/i&gt; leave?</li>" in page
    assert "Bloomberg" not in page
