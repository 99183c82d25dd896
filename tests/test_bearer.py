"""Bearer tokens: claims read into identities, and no input that is not a good token gets
through or raises anything but `InvalidToken`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.http.bearer import TokenVerifier, identity_from_claims
from service.http.identity import Identity
from service.http.jwks import InvalidToken, SharedSecret, SigningKey, parse_jwks
from tests.tokens import AUDIENCE, ISSUER, Key, b64, claims, ec_key, forge, rsa_key, sign

SECRET = b"a shared secret of at least 32 bytes!"


def verify(token: str) -> Identity:
    verifier = TokenVerifier(SharedSecret(SECRET), issuer=ISSUER, audience=AUDIENCE)
    identity: Identity = anyio.run(verifier.verify, token)
    return identity


def test_a_good_token_and_its_identity() -> None:
    token = forge({"alg": "HS256"}, claims("alice", ["hr", "staff"]), SECRET)
    assert verify(token) == Identity("alice", frozenset({"hr", "staff"}))
    # A token may name several audiences; ours among them is enough.
    token = forge({"alg": "HS256"}, claims(aud=["other", AUDIENCE]), SECRET)
    assert verify(token).user == "alice"


def test_leeway_forgives_small_clock_skew_only() -> None:
    now = claims()["iat"]
    assert verify(forge({"alg": "HS256"}, claims(exp=now - 10), SECRET)).user == "alice"
    assert verify(forge({"alg": "HS256"}, claims(nbf=now + 10), SECRET)).user == "alice"
    for late in (claims(exp=now - 60), claims(nbf=now + 60)):
        with pytest.raises(InvalidToken):
            verify(forge({"alg": "HS256"}, late, SECRET))


def test_groups_from_a_named_or_nested_claim() -> None:
    assert identity_from_claims({"sub": "a", "roles": ["x"]}, "sub", "roles") == Identity(
        "a", frozenset({"x"}))
    nested = {"sub": "a", "realm_access": {"roles": ["x", "y"]}}
    assert identity_from_claims(nested, "sub", "realm_access.roles").groups == {"x", "y"}
    spaced = {"email": "a@b", "https://example.test/groups": ["z"]}
    assert identity_from_claims(spaced, "email", "https://example.test/groups") == Identity(
        "a@b", frozenset({"z"}))
    assert identity_from_claims({"sub": "a"}, "sub", "groups").groups == frozenset()
    for bad in ({"sub": ""}, {"sub": 7}, {"sub": "a", "groups": [1]},
                {"sub": "a", "groups": ["g" * 300]}, {"sub": "u" * 300}):
        with pytest.raises(InvalidToken):
            identity_from_claims(bad, "sub", "groups")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200),
                 st.lists(st.text(max_size=60), min_size=3, max_size=3).map(".".join),
                 st.lists(st.binary(max_size=60).map(b64), min_size=3, max_size=3).map(
                     ".".join)))
def test_any_string_is_a_token_or_an_invalid_token(token: str) -> None:
    with pytest.raises(InvalidToken):
        verify(token)


class Published:
    """Keys as a JWKS would publish them, without the fetching (tested in test_jwks)."""

    def __init__(self, *keys: Key) -> None:
        self.keys = parse_jwks(json.dumps({"keys": [k.jwk() for k in keys]}).encode())

    async def key_for(self, kid: str | None) -> SigningKey:
        if kid not in self.keys:
            raise InvalidToken("invalid token: unknown signing key")
        return self.keys[kid]


RSA, EC = rsa_key(), ec_key()
PUBLISHED = TokenVerifier(Published(RSA, EC), issuer=ISSUER, audience=AUDIENCE)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([RSA, EC]), st.binary(max_size=300), st.binary(max_size=600))
def test_any_payload_and_signature_under_a_published_key_is_refused(
        key: Key, payload: bytes, signature: bytes) -> None:
    header = b64(json.dumps({"alg": key.algorithm, "kid": key.kid}).encode())
    with pytest.raises(InvalidToken):
        anyio.run(PUBLISHED.verify, f"{header}.{b64(payload)}.{b64(signature)}")
    # While a properly signed token passes: the verifier does not just refuse everything.
    good = sign(key, claims())
    assert anyio.run(PUBLISHED.verify, good).user == "alice"


def test_a_long_hostile_token_is_refused_fast(within: Callable[[float], Any]) -> None:
    nested = b64(b"[" * 5000) + ".e30.c2ln"  # JSON nesting past Python's recursion limit
    for token in ("." * 100_000, "a" * 8000 + "..", "e" * 100_000, nested):
        with within(1.0), pytest.raises(InvalidToken):
            verify(token)

