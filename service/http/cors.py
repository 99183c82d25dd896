"""CORS per collection: each route allows the origins its collection names (pure ASGI)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class CollectionCORSMiddleware:
    """Starlette's CORS middleware, one per distinct set of allowed origins, chosen by path.

    The sets are few (one per collection at most, plus the shared ones) and built on first use.
    """

    def __init__(self, app: ASGIApp, origins_for: Callable[[str], tuple[str, ...]]) -> None:
        self.app = app
        self.origins_for = origins_for
        self._by_origins: dict[tuple[str, ...], CORSMiddleware] = {}

    def _cors(self, origins: tuple[str, ...]) -> CORSMiddleware:
        found = self._by_origins.get(origins)
        if found is None:
            found = self._by_origins[origins] = CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST"],
                # Authorization: the widget passes the host page's token (data-token-from).
                allow_headers=["Content-Type", "Authorization"],
                # Not CORS-safelisted: without these a widget on another origin cannot read
                # the wait, or why its token was refused.
                expose_headers=["Retry-After", "WWW-Authenticate"],
                allow_credentials=False,
                max_age=600,
            )
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._cors(self.origins_for(scope["path"]))(scope, receive, send)
