"""Votes and insights over HTTP, on SQLite and on PostgreSQL: the real app, real stores."""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import StartupError, create_app
from service.http.identity import Identity, current_identity
from service.settings import Settings
from service.usage.records import Store, answers, feedback
from tests.conftest import FakeEncoder, Postgres, start_service
from tests.tokens import AUDIENCE, ISSUER, claims, forge

TOKEN = "insights-admin-token-" + "y" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUESTIONS = ["Who chairs Bloomberg's new board?", "What does a head of product do?",
             "How do I bake sourdough bread?", "How to bake sourdough bread",
             "What is the recipe for banana bread?"]


def _client(settings: Settings, encoder: FakeEncoder, **changes: Any) -> TestClient:
    settings = settings.model_copy(update={"admin_token": SecretStr(TOKEN),
                                           "reload_interval": 0, **changes})
    return TestClient(create_app(settings, encoder=encoder))


def _wait_ready(client: TestClient) -> dict[str, Any]:
    for _ in range(200):
        store: dict[str, Any] = client.get("/readyz").json()["store"]
        if store["status"] != "starting":
            return store
        time.sleep(0.05)
    raise AssertionError("the store never opened")


def _flushed(client: TestClient) -> None:
    assert client.app.state.recorder.flush(5.0)  # type: ignore[attr-defined]


@pytest.fixture
def client(store_settings: Settings, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    with _client(store_settings, fake_encoder) as c:
        assert _wait_ready(c)["status"] == "ok"
        yield c


def _ask(client: TestClient, question: str) -> dict[str, Any]:
    r = client.post("/api/ask", json={"question": question})
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def test_every_answer_has_an_id_and_is_recorded(client: TestClient) -> None:
    ids = [_ask(client, q)["answer_id"] for q in QUESTIONS]
    chat = client.post("/api/chat", json={"messages": [{"role": "user", "content": QUESTIONS[0]}]})
    ids.append(chat.json()["answer_id"])
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    _flushed(client)
    store: Store = client.app.state.recorder.store  # type: ignore[attr-defined]
    rows = store.query(sa.select(answers))
    assert sorted(r.id for r in rows) == sorted(ids)
    assert {r.route for r in rows} == {"ask", "chat"}
    assert all(r.question is None for r in rows)  # QA_STORE_QUESTIONS is off by default
    assert all(r.latency_ms >= 0 and r.index_version for r in rows)
    ready = client.get("/readyz").json()["store"]
    assert ready["status"] == "ok" and ready["written"] == len(ids) and ready["dropped"] == 0


def test_vote_change_and_comment(client: TestClient) -> None:
    answer_id = _ask(client, QUESTIONS[0])["answer_id"]
    r = client.post("/api/feedback", json={"answer_id": answer_id, "helpful": True})
    assert r.status_code == 204 and r.content == b""
    r = client.post("/api/feedback", json={"answer_id": answer_id, "helpful": False,
                                           "comment": "  Cites the wrong section.  "})
    assert r.status_code == 204
    store: Store = client.app.state.recorder.store  # type: ignore[attr-defined]
    votes = store.query(sa.select(feedback.c.answer_id, feedback.c.helpful, feedback.c.comment))
    assert [tuple(v) for v in votes] == [(answer_id, False, "Cites the wrong section.")]


def test_bad_votes_are_refused(client: TestClient) -> None:
    answer_id = _ask(client, QUESTIONS[1])["answer_id"]
    unknown = "0" * 32
    r = client.post("/api/feedback", json={"answer_id": unknown, "helpful": True})
    assert r.status_code == 404 and "no such answer" in r.json()["detail"]
    for body in ({"answer_id": answer_id}, {"answer_id": answer_id, "helpful": "yes"},
                 {"answer_id": "x" * 32, "helpful": True},
                 {"answer_id": answer_id.upper(), "helpful": True},
                 {"answer_id": answer_id, "helpful": False, "comment": "x" * 501},
                 {"answer_id": answer_id, "helpful": False, "comment": "bad\x00byte"}):
        assert client.post("/api/feedback", json=body).status_code == 422, body
    r = client.post("/api/feedback", json={"answer_id": answer_id, "helpful": False,
                                           "comment": "x" * 500})
    assert r.status_code == 204


def test_expired_answers_take_no_votes(client: TestClient) -> None:
    answer_id = _ask(client, QUESTIONS[0])["answer_id"]
    _flushed(client)
    store: Store = client.app.state.recorder.store  # type: ignore[attr-defined]
    with store.engine.begin() as conn:
        conn.execute(answers.update().values(at=time.time() - 31 * 86_400))
    r = client.post("/api/feedback", json={"answer_id": answer_id, "helpful": True})
    assert r.status_code == 404


def test_feedback_is_rate_limited_like_the_rest(store_settings: Settings,
                                                fake_encoder: FakeEncoder) -> None:
    with _client(store_settings, fake_encoder, rate_limit=3) as c:
        _wait_ready(c)
        answer_id = _ask(c, QUESTIONS[0])["answer_id"]
        codes = [c.post("/api/feedback", json={"answer_id": answer_id, "helpful": True})
                 .status_code for _ in range(3)]
        assert codes[:2] == [204, 204] and codes[2] == 429


def test_recording_off_means_no_ids_and_no_store(store_settings: Settings,
                                                 fake_encoder: FakeEncoder) -> None:
    with _client(store_settings, fake_encoder, recording=False) as c:
        body = _ask(c, QUESTIONS[0])
        assert body["answer_id"] is None
        assert c.get("/readyz").json()["store"] is None
        r = c.post("/api/feedback", json={"answer_id": "a" * 32, "helpful": True})
        assert r.status_code == 404
    assert not (store_settings.data_dir / "qa.sqlite3").exists()


def test_a_store_that_is_down_never_fails_an_answer(fake_settings: Settings,
                                                    fake_encoder: FakeEncoder) -> None:
    # Nothing listens on port 9 of loopback: the store cannot be opened.
    down = SecretStr("postgresql://nobody:hunter2-password@127.0.0.1:9/none")
    with _client(fake_settings, fake_encoder, database_url=down) as c:
        store = _wait_ready(c)
        assert store["status"] == "down" and store["backend"] == "postgresql"
        assert store["error"] and "hunter2" not in store["error"]
        for q in QUESTIONS:
            assert c.post("/api/ask", json={"question": q}).status_code == 200
        r = c.post("/api/feedback", json={"answer_id": "a" * 32, "helpful": True})
        assert r.status_code == 503 and r.headers["Retry-After"]
        metrics = c.get("/metrics").text
        assert "qa_store_up 0.0" in metrics
        assert f"qa_records_queued {float(len(QUESTIONS))}" in metrics
        assert c.get("/api/admin/insights", headers=AUTH).status_code == 503


def test_a_full_queue_drops_with_a_counter(store_settings: Settings,
                                           fake_encoder: FakeEncoder) -> None:
    down = SecretStr("postgresql://nobody@127.0.0.1:9/none")
    with _client(store_settings, fake_encoder, database_url=down, record_queue=16) as c:
        _wait_ready(c)
        for i in range(20):
            assert c.post("/api/ask", json={"question": f"{QUESTIONS[0]} {i}"}).status_code == 200
        assert c.get("/readyz").json()["store"]["dropped"] == 4
        assert 'qa_records_dropped_total{reason="queue_full"} 4.0' in c.get("/metrics").text


def test_insights_json_csv_and_page(store_settings: Settings,
                                    fake_encoder: FakeEncoder) -> None:
    with _client(store_settings, fake_encoder, store_questions=True) as c:
        _wait_ready(c)
        ids = [_ask(c, q)["answer_id"] for q in QUESTIONS for _ in range(2)]
        bodies = [_ask(c, q) for q in QUESTIONS]
        worst = next(b for b in bodies if b["answered"])
        _flushed(c)
        for answer_id in ids[:3]:
            assert c.post("/api/feedback", json={"answer_id": answer_id,
                                                 "helpful": True}).status_code == 204
        assert c.post("/api/feedback", json={"answer_id": worst["answer_id"], "helpful": False,
                                             "comment": "=not what I asked"}).status_code == 204

        assert c.get("/api/admin/insights").status_code == 401
        r = c.get("/api/admin/insights", params={"days": 7}, headers=AUTH)
        assert r.status_code == 200
        report = r.json()
        total = len(QUESTIONS) * 3
        assert report["questions"] == total and report["days"] == 7
        assert len(report["per_day"]) == 7 and report["per_day"][-1]["questions"] == total
        assert report["answered"] + report["declined"] == total
        assert report["helpful"] == 3 and report["not_helpful"] == 1
        assert report["p50_ms"] is not None and report["p95_ms"] >= report["p50_ms"]
        declined = [b["question"] for b in bodies if not b["answered"]]
        assert sum(g["count"] for g in report["unanswered"]) == report["declined"]
        if len(declined) > 1:
            assert len(report["unanswered"]) < len(declined)  # near-identical ones merged
        [bad] = report["not_helpful_answers"]
        assert bad["comments"] == ["=not what I asked"]
        quoted = [c for c in worst["citations"] if c["highlights"]]
        assert [(p["doc_id"], p["start"], p["end"], p["text"]) for p in bad["citations"]] == \
            [(q["doc_id"], q["start"], q["end"], q["text"]) for q in quoted]
        assert report["most_cited"][0]["doc_id"] == "head-of-product.txt"
        assert report["never_cited"] == [] and report["never_cited_total"] == 0

        r = c.get("/api/admin/insights.csv", params={"table": "not_helpful"}, headers=AUTH)
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == ["not_helpful", "helpful", "citations", "comments"]
        assert rows[1][3] == "'=not what I asked"  # never a spreadsheet formula
        days = list(csv.reader(io.StringIO(
            c.get("/api/admin/insights.csv", headers=AUTH).text)))
        assert len(days) == 31 and days[-1][1] == str(total)
        assert c.get("/api/admin/insights", params={"collection": "other"},
                     headers=AUTH).status_code == 404


def test_the_page_signs_in_with_a_form_never_a_url(store_settings: Settings,
                                                   fake_encoder: FakeEncoder) -> None:
    with _client(store_settings, fake_encoder, admin_rate_limit=2) as c:
        _wait_ready(c)
        _ask(c, QUESTIONS[0])
        page = c.get("/admin/insights")
        assert page.status_code == 401 and 'type="password"' in page.text
        assert "script" not in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        r = c.post("/admin/insights", data={"token": TOKEN}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/insights"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
        assert TOKEN not in cookie
        page = c.get("/admin/insights")
        assert page.status_code == 200 and page.text.count("<svg") == 3
        assert "<script" not in page.text
        assert c.get("/admin/insights.csv?table=documents").status_code == 200
        c.post("/admin/logout")
        assert c.get("/admin/insights").status_code == 401
        for _ in range(2):
            assert c.post("/admin/insights", data={"token": "wrong"}).status_code == 401
        assert c.post("/admin/insights", data={"token": TOKEN}).status_code == 429


def test_the_verified_user_is_stored_only_with_store_users(store_settings: Settings,
                                                            fake_encoder: FakeEncoder) -> None:
    users = []
    for store_users in (False, True):
        settings = store_settings.model_copy(update={"store_users": store_users})
        app = create_app(settings.model_copy(update={"admin_token": SecretStr(TOKEN),
                                                     "reload_interval": 0}),
                         encoder=fake_encoder)
        with TestClient(app) as c:
            app.dependency_overrides[current_identity] = lambda: Identity(
                "alice@example.org", frozenset({"staff"}))
            _wait_ready(c)
            answer_id = _ask(c, QUESTIONS[0])["answer_id"]
            app.dependency_overrides.clear()
            anonymous_id = _ask(c, QUESTIONS[1])["answer_id"]
            _flushed(c)
            store: Store = c.app.state.recorder.store  # type: ignore[attr-defined]
            rows = dict(store.query(sa.select(answers.c.id, answers.c.user_name).where(
                answers.c.id.in_([answer_id, anonymous_id]))))
            users.append((rows[answer_id], rows[anonymous_id]))
    assert users == [(None, None), ("alice@example.org", None)]


def test_no_question_text_in_the_store_files_unless_asked(fake_settings: Settings,
                                                          fake_encoder: FakeEncoder) -> None:
    marker = "Quokkaville zebrafinch"
    for stored in (False, True):
        data_dir = fake_settings.data_dir / f"questions-{stored}"
        with _client(fake_settings, fake_encoder, data_dir=data_dir,
                     store_questions=stored) as c:
            _wait_ready(c)
            answer_id = _ask(c, f"Where does the {marker} keeper live?")["answer_id"]
            c.post("/api/chat", json={"messages": [
                {"role": "user", "content": f"Tell me about {marker}"}]})
            _flushed(c)
            assert c.post("/api/feedback", json={"answer_id": answer_id,
                                                 "helpful": False}).status_code == 204
            # While the service runs, the newest pages live in the WAL file: read them all.
            files = sorted(data_dir.iterdir())
            assert {f.name for f in files} >= {"qa.sqlite3", "qa.sqlite3-wal"}
            found = [f.name for f in files for word in marker.split()
                     if word.encode() in f.read_bytes()]
        # Stored when asked for: the check above can find the text where it is.
        assert bool(found) is stored, found


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_while_votes_are_written_loses_nothing_acknowledged(
        backend: str, real_settings: Settings, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    env = {"QA_CORPUS_DIR": str(real_settings.corpus_dir),
           "QA_INDEX_DIR": str(real_settings.index_dir), "QA_RATE_LIMIT": "0",
           "QA_RELOAD_INTERVAL": "0", "QA_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if backend == "postgresql":
        server: Postgres = request.getfixturevalue("postgres")
        env["QA_DATABASE_URL"] = server.new_database()
    log = tmp_path / "uvicorn.log"
    proc, origin = start_service(env, log)
    try:
        with httpx.Client(base_url=origin, timeout=10) as http:
            ids = [http.post("/api/ask", json={"question": f"{q} ({i})"}).json()["answer_id"]
                   for i in range(4) for q in QUESTIONS]
            while http.get("/readyz").json()["store"]["written"] < len(ids):
                time.sleep(0.05)
        acked: dict[str, int] = {}  # answer id -> the last vote number acknowledged with 204

        def vote(mine: list[str]) -> None:
            with httpx.Client(base_url=origin, timeout=10) as http:
                for n in range(1, 10_000):
                    for answer_id in mine:
                        try:
                            r = http.post("/api/feedback", json={
                                "answer_id": answer_id, "helpful": n % 2 == 0,
                                "comment": f"vote {n}"})
                        except httpx.TransportError:
                            return
                        if r.status_code == 204:
                            acked[answer_id] = n

        threads = [threading.Thread(target=vote, args=(ids[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        while len(acked) < len(ids) or min(acked.values()) < 3:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    url = env.get("QA_DATABASE_URL")
    settings = Settings(data_dir=tmp_path / "data", database_url=SecretStr(url) if url else None)
    store = Store.open(settings)  # migrations and recovery run cleanly
    if backend == "sqlite":
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA integrity_check")).scalar() == "ok"
    stored = {r.answer_id: (r.helpful, r.comment)
              for r in store.query(sa.select(feedback.c.answer_id, feedback.c.helpful,
                                             feedback.c.comment))}
    store.close()
    for answer_id, n in acked.items():
        helpful, comment = stored[answer_id]
        # The acknowledged vote, or one sent after it whose answer the kill cut off.
        last = int(comment.removeprefix("vote "))
        assert last in (n, n + 1) and helpful == (last % 2 == 0), (answer_id, n, comment)
    # And the service starts again on the same store.
    proc, _ = start_service(env, log)
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_several_workers_share_one_store(backend: str, real_settings: Settings, tmp_path: Path,
                                         request: pytest.FixtureRequest) -> None:
    env = {"QA_CORPUS_DIR": str(real_settings.corpus_dir),
           "QA_INDEX_DIR": str(real_settings.index_dir), "QA_RATE_LIMIT": "0",
           "QA_RELOAD_INTERVAL": "0", "QA_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if backend == "postgresql":
        server: Postgres = request.getfixturevalue("postgres")
        env["QA_DATABASE_URL"] = server.new_database()
    proc, origin = start_service(env, tmp_path / "uvicorn.log", ("--workers", "2"))
    try:
        ok = 0  # readiness comes from either worker: see the store open several times running
        for _ in range(500):
            ok = ok + 1 if httpx.get(f"{origin}/readyz").json()["store"]["status"] == "ok" else 0
            if ok == 10:
                break
        ids = []
        for i in range(30):
            # A new connection each time: the kernel spreads them over both workers, so a
            # vote often reaches the worker that did not record the answer (and may come
            # before that one's writer has committed it).
            answer_id = httpx.post(f"{origin}/api/ask", json={
                "question": f"{QUESTIONS[i % 2]} ({i})"}).json()["answer_id"]
            r = httpx.post(f"{origin}/api/feedback", json={"answer_id": answer_id,
                                                           "helpful": i % 3 == 0})
            assert r.status_code == 204, r.text
            ids.append(answer_id)
    finally:
        proc.terminate()
        proc.wait(20)
    url = env.get("QA_DATABASE_URL")
    store = Store.open(Settings(data_dir=tmp_path / "data",
                                database_url=SecretStr(url) if url else None))
    assert sorted(r.id for r in store.query(sa.select(answers.c.id))) == sorted(ids)
    assert len(store.query(sa.select(feedback.c.answer_id))) == len(ids)
    store.close()


INSIGHTS_SECRET = "insights-shared-secret-" + "s" * 16


def _jwt(user: str, groups: list[str], secret: str = INSIGHTS_SECRET) -> dict[str, str]:
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(user, groups), secret.encode())
    return {"Authorization": f"Bearer {token}"}


def test_the_insights_group_reads_the_insights_of_what_it_may_read(
        collections_file: Path, fake_encoder: FakeEncoder, tmp_path: Path) -> None:
    settings = Settings(collections_file=collections_file, rate_limit=0, reload_interval=0,
                        data_dir=tmp_path / "data", admin_token=SecretStr(TOKEN),
                        admin_rate_limit=3, jwt_secret=SecretStr(INSIGHTS_SECRET),
                        jwt_issuer=ISSUER, jwt_audience=AUDIENCE, insights_groups=["qa-admins"])
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        _wait_ready(c)
        ask = {"question": QUESTIONS[0]}
        assert c.post("/api/collections/article/ask", json=ask).status_code == 200
        assert c.post("/api/collections/notes/ask", json=ask,
                      headers=_jwt("bob", ["hr"])).status_code == 200
        _flushed(c)
        member, member_hr = _jwt("carol", ["qa-admins"]), _jwt("dave", ["hr", "qa-admins"])
        r = c.get("/api/admin/insights", headers=member)
        assert r.status_code == 200
        assert (r.json()["collection"], r.json()["questions"]) == ("article", 1)
        # A restricted collection only for a member who may read it: else the unknown 404.
        assert c.get("/api/admin/insights", params={"collection": "notes"},
                     headers=member).status_code == 404
        for who in (member_hr, AUTH):
            r = c.get("/api/admin/insights", params={"collection": "notes"}, headers=who)
            assert r.status_code == 200 and r.json()["questions"] == 1
        assert c.get("/api/admin/insights.csv", headers=member).status_code == 200
        page = c.get("/admin/insights", headers=member)
        assert page.status_code == 200 and page.text.count("<svg") == 3
        assert "Sign out" not in page.text  # the intranet's login signs out, not this page
        assert "<option selected>article</option>" in page.text and ">notes<" not in page.text
        assert ">notes<" in c.get("/admin/insights", headers=member_hr).text

        # A verified user in no insights group: 403, never counted as a guess at the token.
        outsider = _jwt("eve", ["staff"])
        for _ in range(5):
            r = c.get("/api/admin/insights", headers=outsider)
            assert r.status_code == 403 and "QA_INSIGHTS_GROUPS" in r.json()["detail"]
        assert c.get("/admin/insights", headers=outsider).status_code == 403
        assert c.get("/api/admin/insights", headers=AUTH).status_code == 200
        # A token that is neither a good JWT nor the admin token is a guess, on the page too.
        forged = _jwt("mallory", ["qa-admins"], secret="another-secret-" + "m" * 20)
        codes = [c.get(path, headers=forged).status_code
                 for path in ("/api/admin/insights", "/admin/insights", "/api/admin/insights")]
        assert codes == [401, 401, 401]
        assert c.get("/api/admin/insights", headers=AUTH).status_code == 429
        assert c.get("/api/admin/insights", headers=member).status_code == 200  # not locked


def test_the_insights_group_alone_through_an_authenticating_proxy(
        store_settings: Settings, fake_encoder: FakeEncoder) -> None:
    settings = store_settings.model_copy(update={
        "reload_interval": 0, "proxy_identity": True, "trusted_proxies": ["10.0.0.1"],
        "insights_groups": Settings.model_validate(
            {"insights_groups": "/qa-admins, ops"}).insights_groups})
    assert settings.insights_groups == ["/qa-admins", "ops"]  # group paths keep their slash
    app = create_app(settings, encoder=fake_encoder)
    with TestClient(app, client=("10.0.0.1", 5000)) as c:
        _wait_ready(c)
        _ask(c, QUESTIONS[0])
        _flushed(c)
        member = {"X-Forwarded-User": "carol", "X-Forwarded-Groups": "/staff,/qa-admins"}
        page = c.get("/admin/insights", headers=member)
        assert page.status_code == 200 and page.text.count("<svg") == 3
        assert c.get("/api/admin/insights", headers=member).json()["questions"] == 1
        # No admin token: no sign-in form, no admin routes, only the reason.
        page = c.get("/admin/insights")
        assert page.status_code == 401 and 'type="password"' not in page.text
        assert "intranet" in page.text
        assert c.get("/admin/insights", headers={"X-Forwarded-User": "eve"}).status_code == 403
        assert c.post("/admin/insights", data={"token": "x" * 40}).status_code == 404
        assert c.get("/api/admin/builds/x").status_code == 404
        elsewhere = TestClient(app, client=("10.0.0.2", 5000))  # not the proxy: headers ignored
        assert elsewhere.get("/api/admin/insights", headers=member).status_code == 401


def test_insights_groups_need_identities(fake_settings: Settings,
                                         fake_encoder: FakeEncoder) -> None:
    with pytest.raises(StartupError, match="QA_INSIGHTS_GROUPS"):
        create_app(fake_settings.model_copy(update={"insights_groups": ["qa-admins"]}),
                   encoder=fake_encoder)
