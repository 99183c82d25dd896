"""Identities through the real app: bearer JWTs checked against a JWKS served by a real
loopback server or a shared secret, trusted-proxy headers, the 401s, per-user rate limits, and
the boot-time checks."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from service.app import StartupError, create_app
from service.http.auth import AuthConfigError, authenticator
from service.http.identity import IdentityDep
from service.http.ratelimit import ClientIdentity
from service.index.indexing import build_index
from service.settings import Settings
from tests.conftest import SEED_CORPUS, FakeEncoder, start_service
from tests.tokens import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    Key,
    b64,
    claims,
    forge,
    rsa_key,
    sign,
)

SECRET = "a shared secret of at least 32 bytes!"


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, encoder: FakeEncoder) -> Settings:
    """The shipped corpus indexed by the fake encoder, once for the module."""
    folder = tmp_path_factory.mktemp("auth")
    shutil.copytree(SEED_CORPUS, folder / "corpus")
    settings = Settings(corpus_dir=folder / "corpus", index_dir=folder / "index", rate_limit=0,
                        reload_interval=0, data_dir=folder / "data")
    build_index(settings, encoder=encoder)
    return settings


@pytest.fixture
def provider(rsa: Key, ec: Key) -> Iterator[JwksServer]:
    with JwksServer([rsa, ec]) as server:
        yield server


def with_whoami(app: FastAPI) -> FastAPI:
    """The app plus a route that shows the identity a request reached the routes with."""

    async def whoami(identity: IdentityDep) -> dict[str, Any]:
        return {"user": identity.user, "groups": sorted(identity.groups)}

    app.add_api_route("/test/whoami", whoami)
    return app


Client = Callable[..., TestClient]


@pytest.fixture
def client(base: Settings, encoder: FakeEncoder) -> Iterator[Client]:
    """`client(peer=..., **settings)`: a started app with these settings."""
    started: list[TestClient] = []

    def make(peer: str = "10.9.9.9", **changes: Any) -> TestClient:
        app = with_whoami(create_app(base.model_copy(update=changes), encoder=encoder))
        test_client = TestClient(app, client=(peer, 5000))
        test_client.__enter__()
        started.append(test_client)
        return test_client

    yield make
    for test_client in started:
        test_client.__exit__(None, None, None)


def jwks_settings(provider: JwksServer) -> dict[str, Any]:
    return {"jwt_jwks_url": provider.url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_valid_rs256_and_es256_tokens_carry_user_and_groups(
        client: Client, provider: JwksServer, rsa: Key, ec: Key) -> None:
    c = client(**jwks_settings(provider))
    r = c.get("/test/whoami", headers=bearer(sign(rsa, claims("alice", ["hr", "staff"]))))
    assert r.status_code == 200 and r.json() == {"user": "alice", "groups": ["hr", "staff"]}
    r = c.get("/test/whoami", headers=bearer(sign(ec, claims("bob", []))))
    assert r.json() == {"user": "bob", "groups": []}
    assert provider.requests == 1, "one fetch, then the cached keys"
    ask = c.post("/api/ask", json={"question": "head of product"},
                 headers=bearer(sign(ec, claims("bob"))))
    assert ask.status_code == 200


def test_no_token_is_anonymous_and_never_fetches_keys(client: Client,
                                                      provider: JwksServer) -> None:
    c = client(**jwks_settings(provider))
    assert c.get("/test/whoami").json() == {"user": None, "groups": []}
    assert c.post("/api/ask", json={"question": "head of product"}).status_code == 200
    # Another scheme is not ours to judge.
    assert c.get("/test/whoami", headers={"Authorization": "Basic YTpi"}).json()["user"] is None
    assert provider.requests == 0


def _refused(rsa: Key, ec: Key) -> dict[str, str]:
    valid = sign(rsa, claims())
    head, _, signature = valid.split(".")
    tampered_payload = b64(json.dumps(claims("alice", ["admins"])).encode())
    return {
        "expired": sign(rsa, claims(exp=claims()["iat"] - 120)),
        "not yet valid": sign(ec, claims(nbf=claims()["iat"] + 600)),
        "wrong audience": sign(rsa, claims(aud="another-service")),
        "wrong issuer": sign(ec, claims(iss="https://evil.example.test")),
        "alg none": forge({"alg": "none", "kid": rsa.kid}, claims(), None),
        "alg none, no kid": forge({"alg": "none", "typ": "JWT"}, claims(), None),
        "HS256 with the RSA public key": forge({"alg": "HS256", "kid": rsa.kid}, claims(),
                                               rsa.public_pem()),
        "HS256 with the EC public key": forge({"alg": "HS256", "kid": ec.kid}, claims(),
                                              ec.public_pem()),
        "RS256 header on the EC key": forge({"alg": "RS256", "kid": ec.kid}, claims(), b"x"),
        "unknown kid": sign(rsa_key("not-published"), claims()),
        "signed by another key with a published kid": sign(Key(rsa.kid, "RS256",
                                                               rsa_key().private), claims()),
        "tampered payload": f"{head}.{tampered_payload}.{signature}",
        "oversized header": sign(rsa, claims(), pad="x" * 9000),
        "deeply nested header": b64(b"[" * 4000) + "." + tampered_payload + "." + signature,
        "no exp": sign(rsa, {k: v for k, v in claims().items() if k != "exp"}),
        "no sub": sign(rsa, {k: v for k, v in claims().items() if k != "sub"}),
        "groups not a list": sign(rsa, claims(groups="admins")),  # type: ignore[arg-type]
        "too many groups": sign(rsa, claims(groups=[f"g{i}" for i in range(300)])),
        "not a JWT": "not-a-token",
        "empty": "",
        "garbage segments": "a.b.c",
    }


def test_every_bad_token_is_a_401_with_a_challenge(
        client: Client, provider: JwksServer, rsa: Key, ec: Key,
        caplog: pytest.LogCaptureFixture) -> None:
    c = client(**jwks_settings(provider))
    assert c.get("/test/whoami", headers=bearer(sign(rsa, claims()))).status_code == 200
    refused = _refused(rsa, ec)
    with caplog.at_level(logging.DEBUG):
        for name, token in refused.items():
            for path, method in (("/test/whoami", "GET"), ("/api/ask", "POST")):
                r = c.request(method, path, headers=bearer(token),
                              json={"question": "head of product"})
                assert r.status_code == 401, (name, path, r.text)
                assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"', name
                detail = r.json()["detail"]
                assert set(r.json()) == {"detail"} and detail.startswith("invalid token"), name
                if len(token) > 8:  # short ones are words of the messages themselves
                    assert token not in r.text and token.split(".")[0] not in detail, name
    for name, token in refused.items():
        if len(token) > 8:
            assert token not in caplog.text, f"{name}: the token reached the logs"
    # The unknown kid was allowed no refresh: the set was fetched moments before.
    assert provider.requests == 1


def test_refusal_reasons_are_told(client: Client, provider: JwksServer, rsa: Key,
                                  ec: Key) -> None:
    c = client(**jwks_settings(provider))
    refused = _refused(rsa, ec)

    def detail(name: str) -> str:
        text: str = c.get("/test/whoami", headers=bearer(refused[name])).json()["detail"]
        return text

    assert detail("expired") == "invalid token: token expired"
    assert detail("not yet valid") == "invalid token: token not yet valid"
    assert detail("wrong audience") == "invalid token: token is for another audience"
    assert detail("wrong issuer") == "invalid token: token from another issuer"
    assert detail("alg none") == "invalid token: algorithm not allowed"
    assert detail("tampered payload") == "invalid token: bad signature"
    assert detail("unknown kid") == "invalid token: unknown signing key"
    assert detail("oversized header") == "invalid token: longer than 8192 bytes"
    assert detail("no exp") == "invalid token: no 'exp' claim"


def test_the_first_unknown_kid_fetches_once_then_made_up_kids_fetch_nothing(
        client: Client, provider: JwksServer) -> None:
    c = client(**jwks_settings(provider))
    for n in range(10):
        r = c.get("/test/whoami", headers=bearer(sign(rsa_key(f"made-up-{n}"), claims())))
        assert r.status_code == 401
    assert provider.requests == 1


def test_a_provider_down_is_a_503_for_tokens_and_nothing_for_anonymous_requests(
        client: Client, provider: JwksServer, rsa: Key) -> None:
    provider.down = True
    c = client(**jwks_settings(provider))
    r = c.post("/api/ask", json={"question": "head of product"},
               headers=bearer(sign(rsa, claims())))
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert r.json() == {"detail": "cannot verify tokens right now: the identity provider's "
                                  "keys could not be fetched"}
    assert c.post("/api/ask", json={"question": "head of product"}).status_code == 200
    assert c.get("/test/whoami").json() == {"user": None, "groups": []}
    # A token that could never be good is still a 401.
    assert c.get("/test/whoami", headers=bearer("x" * 9000)).status_code == 401


def test_shared_secret_tokens(client: Client, rsa: Key) -> None:
    c = client(jwt_secret=SecretStr(SECRET), jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    good = forge({"alg": "HS256", "typ": "JWT"}, claims("carol", ["ops"]), SECRET.encode())
    assert c.get("/test/whoami", headers=bearer(good)).json() == {"user": "carol",
                                                                  "groups": ["ops"]}
    other = forge({"alg": "HS256"}, claims(), b"another secret of at least 32 bytes")
    for token in (other, sign(rsa, claims()), forge({"alg": "none"}, claims(), None)):
        r = c.get("/test/whoami", headers=bearer(token))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_the_admin_token_is_not_taken_for_a_jwt(client: Client, provider: JwksServer) -> None:
    admin = "an admin token of at least thirty-two characters"
    c = client(admin_token=SecretStr(admin), **jwks_settings(provider))
    r = c.get("/api/admin/builds/none", headers=bearer(admin))
    assert r.status_code == 404, r.text
    assert provider.requests == 0


def test_cors_lets_a_page_send_its_token_and_read_the_challenge(
        client: Client, provider: JwksServer) -> None:
    origin = "https://intranet.example.test"
    c = client(allowed_origins=[origin], **jwks_settings(provider))
    pre = c.options("/api/ask", headers={"Origin": origin,
                                         "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    r = c.get("/test/whoami", headers={"Origin": origin, **bearer("bad")})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin
    assert "www-authenticate" in r.headers["access-control-expose-headers"].lower()


# ---------------------------------------------------------------- trusted proxy

PROXY = {"proxy_identity": True, "trusted_proxies": ["10.0.0.1"]}
FROM_PROXY = {"X-Forwarded-User": "dana@example.test", "X-Forwarded-Groups": "hr, managers,,"}


def test_proxy_headers_from_a_trusted_peer_are_the_identity(client: Client) -> None:
    c = client(peer="10.0.0.1", **PROXY)
    assert c.get("/test/whoami", headers=FROM_PROXY).json() == {
        "user": "dana@example.test", "groups": ["hr", "managers"]}
    # Repeated group headers are one list; no user, no identity.
    r = c.get("/test/whoami", headers=[("X-Forwarded-User", "dana"),
                                      ("X-Forwarded-Groups", "hr"),
                                      ("X-Forwarded-Groups", "ops")])
    assert r.json() == {"user": "dana", "groups": ["hr", "ops"]}
    assert c.get("/test/whoami", headers={"X-Forwarded-Groups": "hr"}).json()["user"] is None


def test_proxy_headers_from_anyone_else_are_ignored(client: Client) -> None:
    c = client(peer="10.7.7.7", **PROXY)
    assert c.get("/test/whoami", headers=FROM_PROXY).json() == {"user": None, "groups": []}


def test_proxy_headers_are_ignored_unless_proxy_identities_are_on(client: Client) -> None:
    # A load balancer trusted for X-Forwarded-For may pass any header a client sends.
    c = client(peer="10.0.0.1", trusted_proxies=["10.0.0.1"])
    assert c.get("/test/whoami", headers=FROM_PROXY).json() == {"user": None, "groups": []}


def test_unreadable_proxy_headers_are_a_400(client: Client) -> None:
    c = client(peer="10.0.0.1", **PROXY)
    for headers in ([("X-Forwarded-User", "a"), ("X-Forwarded-User", "b")],
                    [("X-Forwarded-User", "u" * 300)],
                    [("X-Forwarded-User", "a"), ("X-Forwarded-Groups",
                                                 ",".join(f"g{i}" for i in range(300)))]):
        r = c.get("/test/whoami", headers=headers)
        assert r.status_code == 400 and set(r.json()) == {"detail"}


def test_a_trusted_proxys_user_wins_over_a_bearer_token(client: Client, provider: JwksServer,
                                                        rsa: Key) -> None:
    settings = {**PROXY, **jwks_settings(provider)}
    proxy = client(peer="10.0.0.1", **settings)
    r = proxy.get("/test/whoami", headers={**FROM_PROXY, **bearer("not checked")})
    assert r.status_code == 200 and r.json()["user"] == "dana@example.test"
    # Without a user from the proxy the token is the identity; from anyone else, always.
    token = sign(rsa, claims("erin"))
    assert proxy.get("/test/whoami", headers=bearer(token)).json()["user"] == "erin"
    other = client(peer="10.7.7.7", **settings)
    r = other.get("/test/whoami", headers={**FROM_PROXY, **bearer(token)})
    assert r.json()["user"] == "erin"
    assert other.get("/test/whoami", headers={**FROM_PROXY, **bearer("bad")}).status_code == 401


# ---------------------------------------------------------------- rate limits


def test_rate_limits_count_per_verified_user(client: Client, provider: JwksServer,
                                             rsa: Key) -> None:
    c = client(rate_limit=3, **jwks_settings(provider))

    def ask(**headers: str) -> int:
        return c.post("/api/ask", json={"question": "head of product"},
                      headers=headers).status_code

    alice, bob = bearer(sign(rsa, claims("alice"))), bearer(sign(rsa, claims("bob")))
    assert [ask(**alice) for _ in range(4)] == [200, 200, 200, 429]
    # Same address, another user, or no user at all: separate allowances.
    assert [ask(**bob) for _ in range(3)] == [200, 200, 200]
    assert [ask() for _ in range(4)] == [200, 200, 200, 429]
    # A fresh token for the same user is the same user.
    assert ask(**bearer(sign(rsa, claims("alice", ["other"])))) == 429


def test_bad_tokens_use_up_the_addresss_allowance(client: Client,
                                                 provider: JwksServer) -> None:
    c = client(rate_limit=3, **jwks_settings(provider))
    codes = [c.post("/api/ask", json={"question": "x"}, headers=bearer("bad")).status_code
             for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert c.post("/api/ask", json={"question": "head of product"}).status_code == 429


def test_proxy_users_are_limited_per_user(client: Client) -> None:
    c = client(peer="10.0.0.1", rate_limit=2, **PROXY)

    def ask(user: str) -> int:
        return c.post("/api/ask", json={"question": "head of product"},
                      headers={"X-Forwarded-User": user}).status_code

    assert [ask("f") for _ in range(3)] == [200, 200, 429]
    assert [ask("g") for _ in range(2)] == [200, 200]


# ---------------------------------------------------------------- configuration


def _config(**values: Any) -> Settings:
    return Settings(**values)


@pytest.mark.parametrize(("values", "message"), [
    ({"jwt_jwks_url": "https://id.example.test/jwks", "jwt_secret": SecretStr(SECRET),
      "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}, "are both set"),
    ({"jwt_jwks_url": "https://id.example.test/jwks", "jwt_audience": AUDIENCE},
     "QA_JWT_ISSUER must be set with QA_JWT_JWKS_URL"),
    ({"jwt_secret": SecretStr(SECRET)}, "QA_JWT_ISSUER and QA_JWT_AUDIENCE must be set"),
    ({"jwt_issuer": ISSUER}, "neither QA_JWT_JWKS_URL nor QA_JWT_SECRET"),
    ({"jwt_jwks_url": "http://id.example.test/jwks", "jwt_issuer": ISSUER,
      "jwt_audience": AUDIENCE}, "must be an https:// URL"),
    ({"jwt_jwks_url": "file:///etc/passwd", "jwt_issuer": ISSUER,
      "jwt_audience": AUDIENCE}, "must be an https:// URL"),
    ({"proxy_identity": True}, "QA_TRUSTED_PROXIES is empty"),
])
def test_contradictory_settings_fail_at_boot(values: dict[str, Any], message: str,
                                             base: Settings, encoder: FakeEncoder) -> None:
    settings = base.model_copy(update=values)
    with pytest.raises(AuthConfigError, match=message):
        authenticator(settings, ClientIdentity(settings.trusted_proxies))
    with pytest.raises(StartupError, match=message):
        create_app(settings, encoder=encoder)


def test_the_shared_secret_must_be_long_enough() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        _config(jwt_secret="short")


def test_without_identity_settings_there_is_no_authenticator() -> None:
    settings = _config()
    assert authenticator(settings, ClientIdentity()) is None
    url = "http://localhost:8080/realms/x/protocol/openid-connect/certs"
    local = _config(jwt_jwks_url=url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    assert authenticator(local, ClientIdentity()) is not None


# ---------------------------------------------------------------- a real server


def test_a_real_server_end_to_end(real_settings: Settings, provider: JwksServer, rsa: Key,
                                  ec: Key, tmp_path: Path) -> None:
    """uvicorn as deployed, settings from the environment, the JWKS over loopback HTTP, the
    proxy being this test on 127.0.0.1 and a stranger on 127.0.0.2; its log holds no token."""
    env = {"QA_CORPUS_DIR": str(real_settings.corpus_dir),
           "QA_INDEX_DIR": str(real_settings.index_dir), "QA_RATE_LIMIT": "2",
           "QA_RELOAD_INTERVAL": "0", "QA_DATA_DIR": str(tmp_path / "data"),
           "QA_LOG_LEVEL": "INFO", "QA_JWT_JWKS_URL": provider.url, "QA_JWT_ISSUER": ISSUER,
           "QA_JWT_AUDIENCE": AUDIENCE, "QA_TRUSTED_PROXIES": "127.0.0.1",
           "QA_PROXY_IDENTITY": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = tmp_path / "uvicorn.log"
    proc, origin = start_service(env, log, ("--log-config", "service/http/log_config.json"))
    refused = _refused(rsa, ec)
    try:
        stranger = httpx.Client(base_url=origin, timeout=10,
                                transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with httpx.Client(base_url=origin, timeout=10) as proxy, stranger:
            def ask(client: httpx.Client, headers: Any = None) -> int:
                return client.post("/api/ask", json={"question": "What is a CPO?"},
                                   headers=headers).status_code

            alice, bob = bearer(sign(rsa, claims("alice"))), bearer(sign(ec, claims("bob")))
            assert [ask(stranger, alice) for _ in range(3)] == [200, 200, 429]
            assert ask(stranger, bob) == 200
            # Bad tokens are anonymous to the limiter: the address's two, then 429s.
            codes = []
            for name in ("expired", "alg none", "HS256 with the RSA public key",
                         "tampered payload", "oversized header", "deeply nested header"):
                r = stranger.get("/api/documents/head-of-product.txt",
                                 headers=bearer(refused[name]))
                codes.append(r.status_code)
                if r.status_code == 401:
                    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert codes == [401, 401, 429, 429, 429, 429]
            # From the proxy, its headers are the identity (two users are an error); from a
            # stranger they are ignored.
            twice = [("X-Forwarded-User", "a"), ("X-Forwarded-User", "b")]
            assert ask(proxy, twice) == 400
            assert [ask(proxy, {"X-Forwarded-User": "carol"}) for _ in range(3)] == [
                200, 200, 429]
            assert ask(proxy, {"X-Forwarded-User": "dave"}) == 200
        stranger2 = httpx.Client(base_url=origin, timeout=10,
                                 transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        with stranger2:
            assert ask(stranger2, twice) == 200
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert '"status": 401' in text, "the refusals were logged"
    for token in [*refused.values(), *alice.values(), *bob.values()]:
        if len(token) > 8:
            assert token.removeprefix("Bearer ") not in text
    assert provider.requests == 1
