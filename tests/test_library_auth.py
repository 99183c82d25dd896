"""Collections behind real authentication (service.http.auth): signed tokens and trusted proxy
headers decide who reads a restricted collection, on every route, through a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.index.encoder import OnnxEncoder, describe_model
from service.index.indexing import build_index, encoder_folder
from service.settings import Settings
from tests.conftest import NOTES_CORPUS, SEED_CORPUS, FakeEncoder, start_service, write_corpus
from tests.tokens import AUDIENCE, ISSUER, claims, forge

SECRET = "collections-shared-secret-" + "s" * 16
QUESTION: dict[str, object] = {"question": "Who writes in the red ledger?"}


def bearer(user: str, groups: list[str], secret: str = SECRET) -> dict[str, str]:
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(user, groups), secret.encode())
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(collections_file: Path, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    settings = Settings(collections_file=collections_file, rate_limit=0,
                        jwt_secret=SecretStr(SECRET), jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        yield c


def _routes() -> list[tuple[str, str, dict[str, object] | None]]:
    return [("GET", "/api/collections/{}", None),
            ("POST", "/api/collections/{}/ask", QUESTION),
            ("POST", "/api/collections/{}/chat",
             {"messages": [{"role": "user", "content": QUESTION["question"]}]}),
            ("GET", "/api/collections/{}/documents/keeper.md", None),
            ("GET", "/api/collections/{}/documents/keeper.md/source", None)]


def test_a_token_with_the_group_reads_it_and_others_get_the_unknown_404(
        client: TestClient) -> None:
    for headers in ({}, bearer("bob", ["sales"]), bearer("carol", [])):
        names = [c["name"] for c in client.get("/api/collections", headers=headers).json()]
        assert names == ["article"]
        for method, path, body in _routes():
            denied = client.request(method, path.format("notes"), json=body, headers=headers)
            unknown = client.request(method, path.format("nope"), json=body, headers=headers)
            assert denied.status_code == unknown.status_code == 404
            assert denied.content == unknown.content
    hr = bearer("ann", ["hr"])
    names = [c["name"] for c in client.get("/api/collections", headers=hr).json()]
    assert names == ["article", "notes"]
    for method, path, body in _routes():
        r = client.request(method, path.format("notes"), json=body, headers=hr)
        assert r.status_code == 200, path
    answer = client.post("/api/collections/notes/ask", json=QUESTION, headers=hr).json()
    assert {c["doc_id"] for c in answer["citations"]} <= {"keeper.md", "lamp/oil.txt"}
    # The same token on the public collection cites only the public corpus.
    public = client.post("/api/collections/article/ask", json=QUESTION, headers=hr).json()
    assert {c["doc_id"] for c in public["citations"]} == {"head-of-product.txt"}


def test_a_bad_token_is_a_401_not_a_404(client: TestClient) -> None:
    forged = bearer("ann", ["hr"], secret="another secret of at least 32 bytes!")
    for name in ("notes", "nope", "article"):
        r = client.post(f"/api/collections/{name}/ask", json=QUESTION, headers=forged)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "ann" not in r.text


def test_the_groups_and_user_claims_the_settings_name(collections_file: Path,
                                                      fake_encoder: FakeEncoder) -> None:
    """QA_JWT_GROUPS_CLAIM and QA_JWT_USER_CLAIM reach the verifier: Keycloak-style roles
    nested under realm_access open the collection, a top-level `groups` claim then does not."""
    settings = Settings(collections_file=collections_file, rate_limit=0,
                        jwt_secret=SecretStr(SECRET), jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                        jwt_groups_claim="realm_access.roles", jwt_user_claim="email")

    def token(payload: dict[str, object]) -> dict[str, str]:
        signed = forge({"alg": "HS256"}, {**claims("ignored"), **payload}, SECRET.encode())
        return {"Authorization": f"Bearer {signed}"}

    with TestClient(create_app(settings, encoder=fake_encoder)) as c:
        roles = token({"email": "ann@example.test", "realm_access": {"roles": ["hr"]}})
        assert c.post("/api/collections/notes/ask", json=QUESTION,
                      headers=roles).status_code == 200
        top_level = token({"email": "ann@example.test", "groups": ["hr"]})
        assert c.post("/api/collections/notes/ask", json=QUESTION,
                      headers=top_level).status_code == 404
        # The user claim the settings name is required: `sub` alone is not a user.
        no_email = token({"realm_access": {"roles": ["hr"]}})
        r = c.post("/api/collections/notes/ask", json=QUESTION, headers=no_email)
        assert r.status_code == 401 and r.json() == {"detail": "invalid token: no 'email' claim"}


@pytest.fixture
def real_collections(tmp_path: Path, real_encoder_dir: Path) -> Path:
    """The two collections of `collections_file`, indexed with the real model."""
    root = tmp_path / "real"
    shutil.copytree(SEED_CORPUS, root / "article")
    write_corpus(root / "notes", NOTES_CORPUS)
    for name in ("article", "notes"):
        index = root / "index" / name
        shutil.copytree(real_encoder_dir,
                        encoder_folder(index, OnnxEncoder.kind, describe_model(None)))
        build_index(Settings(corpus_dir=root / name, index_dir=index))
    path = root / "collections.toml"
    path.write_text("".join(
        f'[collections.{name}]\ntitle = "{name}"\ncorpus_dir = "{name}"\n'
        f'index_dir = "index/{name}"\naccess = {access}\n\n'
        for name, access in (("article", '"public"'), ("notes", '["hr"]'))), "utf-8")
    return path


def test_trusted_proxy_headers_and_tokens_through_a_real_server(real_collections: Path,
                                                                tmp_path: Path) -> None:
    """uvicorn on loopback, settings from the environment; the test is the authenticating
    proxy (127.0.0.1 is trusted) and a token holder from 127.0.0.2."""
    env = {"QA_COLLECTIONS_FILE": str(real_collections), "QA_PROXY_IDENTITY": "true",
           "QA_TRUSTED_PROXIES": "127.0.0.1", "QA_JWT_SECRET": SECRET, "QA_JWT_ISSUER": ISSUER,
           "QA_JWT_AUDIENCE": AUDIENCE, "QA_RATE_LIMIT": "0", "QA_RELOAD_INTERVAL": "0",
           "QA_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc, origin = start_service(env, tmp_path / "uvicorn.log")
    notes = {"keeper.md", "lamp/oil.txt"}
    try:
        other = httpx.Client(base_url=origin, timeout=10,
                             transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with httpx.Client(base_url=origin, timeout=10) as proxy, other:
            hr = {"X-Forwarded-User": "dana", "X-Forwarded-Groups": "hr,managers"}
            sales = {"X-Forwarded-User": "erin", "X-Forwarded-Groups": "sales"}
            ok = proxy.post("/api/collections/notes/ask", json=QUESTION, headers=hr)
            assert ok.status_code == 200 and ok.json()["answered"]
            assert {c["doc_id"] for c in ok.json()["citations"]} <= notes
            denied = proxy.post("/api/collections/notes/ask", json=QUESTION, headers=sales)
            unknown = proxy.post("/api/collections/nope/ask", json=QUESTION, headers=sales)
            assert denied.status_code == unknown.status_code == 404
            assert denied.content == unknown.content
            assert [c["name"] for c in proxy.get("/api/collections", headers=sales).json()
                    ] == ["article"]
            # Headers from an untrusted peer are no identity; a token is.
            assert other.post("/api/collections/notes/ask", json=QUESTION,
                              headers=hr).status_code == 404
            r = other.get("/api/collections/notes/documents/keeper.md",
                          headers=bearer("ann", ["hr"]))
            assert r.status_code == 200 and r.json()["text"] == NOTES_CORPUS["keeper.md"]
            assert other.get("/api/collections/notes/documents/keeper.md",
                             headers=bearer("bob", ["sales"])).status_code == 404
        assert SECRET not in (tmp_path / "uvicorn.log").read_text()
    finally:
        proc.terminate()
        proc.wait(10)
