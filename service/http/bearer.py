"""Bearer JWTs: verified against a key source, with issuer, audience, expiry and not-before
enforced, the algorithm pinned by the key, and the user and groups read from bounded claims."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import jwt

from service.http.identity import Identity
from service.http.jwks import InvalidToken, KeySource

# Bounded before any parsing: real ID and access tokens are 1-4 KB.
MAX_TOKEN_BYTES = 8192
MAX_GROUPS = 256
MAX_NAME_CHARS = 256
# Clock skew allowed between the provider and this host for exp and nbf.
LEEWAY_SECONDS = 30

# PyJWT's messages are safe but vary by version; these are ours, and never hold the token.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token is for another audience"),
    (jwt.InvalidIssuerError, "token from another issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.DecodeError, "malformed token"),
)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None for no header or
    another scheme."""
    scheme, _, presented = (authorization or "").partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else None


class TokenVerifier:
    """Bearer JWTs signed by `keys`, for `audience` from `issuer`, current, with a user."""

    def __init__(self, keys: KeySource, *, issuer: str, audience: str,
                 user_claim: str = "sub", groups_claim: str = "groups",
                 leeway: float = LEEWAY_SECONDS) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.user_claim = user_claim
        self.groups_claim = groups_claim
        self.leeway = leeway
        self._require = ["exp", "iss", "aud", user_claim]

    async def verify(self, token: str) -> Identity:
        """The token's identity, or `InvalidToken` (`KeysUnavailable` while the provider's
        keys cannot be fetched)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(f"invalid token: longer than {MAX_TOKEN_BYTES} bytes")
        if token.count(".") != 2:
            raise InvalidToken("invalid token: malformed token")
        header = _header(token)
        key = await self.keys.key_for(header.get("kid"))
        if header.get("alg") != key.algorithm:
            raise InvalidToken("invalid token: algorithm not allowed")
        try:
            claims = jwt.decode(token, key.key, algorithms=[key.algorithm],
                                audience=self.audience, issuer=self.issuer, leeway=self.leeway,
                                options={"require": self._require})
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"invalid token: no {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), None)
            raise InvalidToken(f"invalid token: {reason}" if reason else "invalid token") from None
        return identity_from_claims(claims, self.user_claim, self.groups_claim)


def _header(token: str) -> dict[str, Any]:
    """The token's JOSE header, unverified: only to pick the key. (PyJWT reads it again,
    strictly, while verifying; its own reader would decode every segment twice.)"""
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # "[[[[…" nests past the stack
        raise InvalidToken("invalid token: malformed token") from None
    if not isinstance(header, dict):
        raise InvalidToken("invalid token: malformed token")
    return header


def identity_from_claims(claims: dict[str, Any], user_claim: str,
                         groups_claim: str) -> Identity:
    """The user and groups a verified token's claims name, bounded."""
    user = claims.get(user_claim)
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_NAME_CHARS:
        raise InvalidToken(f"invalid token: the {user_claim!r} claim must be a non-empty string "
                           f"of at most {MAX_NAME_CHARS} characters")
    groups = _claim(claims, groups_claim)
    if groups is None:
        return Identity(user, frozenset())
    if (not isinstance(groups, list) or len(groups) > MAX_GROUPS
            or not all(isinstance(g, str) and 0 < len(g) <= MAX_NAME_CHARS for g in groups)):
        raise InvalidToken(f"invalid token: the {groups_claim!r} claim must be a list of at most "
                           f"{MAX_GROUPS} names of 1 to {MAX_NAME_CHARS} characters")
    return Identity(user, frozenset(groups))


def _claim(claims: dict[str, Any], name: str) -> Any:
    # A name as it stands first (namespaced claims such as "https://example.com/groups" hold
    # dots), then as a dotted path into nested objects ("realm_access.roles").
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
