"""Who is asking: a bearer JWT or an authenticating proxy's headers, checked once per request by
an ASGI middleware that leaves the result in `request.state.identity`."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.bearer import MAX_GROUPS, MAX_NAME_CHARS, TokenVerifier, bearer_token
from service.http.identity import ANONYMOUS, Identity
from service.http.jwks import InvalidToken, JwksKeys, KeySource, KeysUnavailable, SharedSecret
from service.http.limits import refuse
from service.http.ratelimit import ClientIdentity
from service.settings import Settings

# The admin routes and pages authenticate with QA_ADMIN_TOKEN, also sent as a bearer token.
EXEMPT_PREFIXES = ("/api/admin/", "/admin/")
CHALLENGE = (b"www-authenticate", b'Bearer error="invalid_token"')
REFUSAL = "auth_refusal"  # key in the request's state


class AuthConfigError(ValueError):
    """The identity settings contradict each other; the message names the variables."""


class BadProxyHeaders(ValueError):
    """A trusted proxy sent identity headers this service cannot read."""


class ProxyIdentity:
    """`X-Forwarded-User` and comma-separated `X-Forwarded-Groups`, believed only when the
    direct peer is a trusted proxy (everything else could have been written by the client)."""

    def __init__(self, proxies: ClientIdentity) -> None:
        self.proxies = proxies

    def of(self, scope: Scope) -> Identity | None:
        client = scope.get("client")
        if not client or not self.proxies.trusts(str(client[0])):
            return None
        users = _headers(scope, b"x-forwarded-user")
        if not users:
            return None
        if len(users) > 1:
            raise BadProxyHeaders("more than one X-Forwarded-User header")
        user = users[0].strip()
        if not user:
            return None
        if len(user) > MAX_NAME_CHARS:
            raise BadProxyHeaders(f"X-Forwarded-User is longer than {MAX_NAME_CHARS} characters")
        groups = {g.strip() for value in _headers(scope, b"x-forwarded-groups")
                  for g in value.split(",") if g.strip()}
        if len(groups) > MAX_GROUPS or any(len(g) > MAX_NAME_CHARS for g in groups):
            raise BadProxyHeaders(f"X-Forwarded-Groups must name at most {MAX_GROUPS} groups "
                                  f"of at most {MAX_NAME_CHARS} characters")
        return Identity(user, frozenset(groups))


def _headers(scope: Scope, name: bytes) -> list[str]:
    try:
        return [v.decode("utf-8") for k, v in scope.get("headers", ()) if k == name]
    except UnicodeDecodeError:
        raise BadProxyHeaders(f"{name.decode()} is not UTF-8") from None


class Authenticator:
    """The identity of a request: the trusted proxy's when it names a user, else the bearer
    token's when tokens are configured, else anonymous."""

    def __init__(self, verifier: TokenVerifier | None, proxy: ProxyIdentity | None) -> None:
        self.verifier = verifier
        self.proxy = proxy

    async def identify(self, scope: Scope) -> Identity:
        if self.proxy is not None:
            identity = self.proxy.of(scope)
            if identity is not None:
                return identity
        if self.verifier is None:
            return ANONYMOUS
        tokens = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
        if not tokens:
            return ANONYMOUS
        if len(tokens) > 1:
            raise InvalidToken("invalid token: more than one Authorization header")
        token = bearer_token(tokens[0].decode("latin-1"))
        if token is None:
            return ANONYMOUS  # another scheme (e.g. Basic for a gateway) is not ours to judge
        return await self.verifier.verify(token)


class AuthMiddleware:
    """Decides `scope["state"]["identity"]` (what `request.state.identity` reads) before the
    rate limiter, so limits can count per user. A request it refuses goes on, anonymous, with
    the refusal noted for `RefusalMiddleware` inside the limiter to send: a client sending bad
    tokens is held to its address's allowance like anyone else."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator,
                 exempt: Iterable[str] = EXEMPT_PREFIXES) -> None:
        self.app = app
        self.authenticator = authenticator
        self.exempt = tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            state["identity"] = await self.authenticator.identify(scope)
        except InvalidToken as exc:
            state[REFUSAL] = (401, str(exc), [CHALLENGE])
        except KeysUnavailable as exc:
            # The token may well be good: not the client's fault, and worth a retry.
            state[REFUSAL] = (503, str(exc), [(b"retry-after", b"30")])
        except BadProxyHeaders as exc:
            state[REFUSAL] = (400, str(exc), [])
        await self.app(scope, receive, send)


class RefusalMiddleware:
    """Answers the requests `AuthMiddleware` refused: 401 with a Bearer challenge for a bad
    token, 503 while the provider's keys cannot be fetched, 400 for unreadable proxy headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = scope.get("state", {}).get(REFUSAL) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail, headers = refusal
        await refuse(send, status, detail, headers)


def authenticator(settings: Settings, proxies: ClientIdentity) -> Authenticator | None:
    """The authenticator the settings describe (None: everyone is anonymous), or
    `AuthConfigError` when they contradict each other."""
    jwks_url, secret = settings.jwt_jwks_url, settings.jwt_secret
    if jwks_url and secret:
        raise AuthConfigError("QA_JWT_JWKS_URL and QA_JWT_SECRET are both set: tokens are "
                              "checked against one or the other; unset one")
    issuer, audience = settings.jwt_issuer, settings.jwt_audience
    verifier = None
    if jwks_url or secret:
        if not issuer or not audience:
            missing = " and ".join(name for name, value in (("QA_JWT_ISSUER", issuer),
                                                            ("QA_JWT_AUDIENCE", audience))
                                   if not value)
            raise AuthConfigError(f"{missing} must be set with "
                                  f"{'QA_JWT_JWKS_URL' if jwks_url else 'QA_JWT_SECRET'}: "
                                  "tokens minted for other services must not be accepted")
        keys: KeySource = (JwksKeys(check_jwks_url(jwks_url)) if jwks_url else
                           SharedSecret(secret.get_secret_value().encode() if secret else b""))
        verifier = TokenVerifier(keys, issuer=issuer, audience=audience,
                                 user_claim=settings.jwt_user_claim,
                                 groups_claim=settings.jwt_groups_claim)
    elif issuer or audience:
        raise AuthConfigError("QA_JWT_ISSUER or QA_JWT_AUDIENCE is set but neither "
                              "QA_JWT_JWKS_URL nor QA_JWT_SECRET: set one, or unset them")
    proxy = None
    if settings.proxy_identity:
        if not proxies.networks:
            raise AuthConfigError("QA_PROXY_IDENTITY is on but QA_TRUSTED_PROXIES is empty: "
                                  "name the authenticating proxy's addresses")
        proxy = ProxyIdentity(proxies)
    return Authenticator(verifier, proxy) if verifier or proxy else None


def check_jwks_url(url: str) -> str:
    """`url` if keys may be fetched from it: HTTPS, or plain HTTP to this machine only (keys
    fetched over a network in the clear could be swapped by anyone on the path)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return url
    raise AuthConfigError("QA_JWT_JWKS_URL must be an https:// URL (http:// only to localhost)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
