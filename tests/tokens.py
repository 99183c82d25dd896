"""Signing keys made on the spot, tokens signed (or forged) with them, and an identity
provider's JWKS served over loopback HTTP by a real server: for the auth tests and the bench."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://id.example.test/realms/intranet"
AUDIENCE = "cited-qa"


@dataclass(frozen=True)
class Key:
    kid: str
    algorithm: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            entry = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            entry = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
        return {**entry, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_key(kid: str = "rsa-1") -> Key:
    return Key(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str = "ec-1") -> Key:
    return Key(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(user: str = "alice", groups: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Claims a provider would issue for this service: current for five minutes."""
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now,
                            "nbf": now, "exp": now + 300,
                            "groups": groups if groups is not None else ["staff"]}
    return {**base, **extra}


def sign(key: Key, payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode(payload, key.private, algorithm=key.algorithm,
                      headers={"kid": key.kid, **header})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand: HMAC-SHA256 over it with `secret`, or no signature at all."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


class JwksServer:
    """A JWKS document at `/jwks` on a loopback port; counts requests; `down` makes it answer
    503 (an identity provider in trouble)."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.down = False
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if self.path == "/garbage":  # not HTTP at all
                    self.wfile.write(b"NONSENSE\r\n\r\n")
                    self.close_connection = True
                    return
                if self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", "/jwks")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.down or self.path != "/jwks":
                    self.send_error(503 if server.down else 404)
                    return
                body = json.dumps({"keys": [k.jwk() for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@contextmanager
def jwks_server(keys: list[Key]) -> Iterator[JwksServer]:
    with JwksServer(keys) as server:
        yield server
