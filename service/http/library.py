"""The served collections: each one's settings and engine, and which of them a caller may read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from starlette.types import Scope

from service.catalog import DEFAULT, Collection
from service.http.identity import ANONYMOUS, Identity
from service.index.encoder import Encoder, ModelInfo
from service.qa.engine import EncoderCache, Engine
from service.settings import Settings

COLLECTIONS_PREFIX = "/api/collections/"
# The routes that mean the `default` collection (they predate collections).
_DEFAULT_PATHS = frozenset({"/api/ask", "/api/chat"})
_DEFAULT_PREFIX = "/api/documents/"
# Routes that serve every collection's widget, whatever page it is on.
_SHARED_PATHS = frozenset({"/api/feedback", "/api/collections"})


class NoSuchCollection(Exception):
    """No collection of that name that this caller may read. One error for an unknown name and
    for a collection the caller may not read, so that names do not leak."""

    def __init__(self) -> None:
        super().__init__("no such collection")


@dataclass(frozen=True)
class Shelf:
    """One collection as served: its declaration, its settings (its folders) and its engine."""

    collection: Collection
    settings: Settings
    engine: Engine

    @property
    def name(self) -> str:
        return self.collection.name


class Library:
    """Every collection of the service, each with its own engine (index versions, reloads,
    answer cache); the encoder is loaded once for all of them."""

    def __init__(self, settings: Settings, collections: Sequence[Collection], model: ModelInfo,
                 encoder: Encoder | None = None) -> None:
        if not collections:
            raise ValueError("a library needs at least one collection")
        encoders = EncoderCache()
        self.settings = settings
        self._shelves: dict[str, Shelf] = {}
        for c in collections:
            own = c.settings(settings)
            self._shelves[c.name] = Shelf(c, own, Engine(own, model, encoder, encoders))
        self.encoders = encoders
        # The origins of every restricted collection: what the routes of a name a caller might
        # not be able to read allow, so CORS cannot tell a restricted name from an unknown one.
        self._hidden_origins = tuple(dict.fromkeys(
            o for c in collections if not c.public for o in c.allowed_origins))

    def __iter__(self) -> Iterator[Shelf]:
        return iter(self._shelves.values())

    def __len__(self) -> int:
        return len(self._shelves)

    @property
    def names(self) -> list[str]:
        return list(self._shelves)

    @property
    def default(self) -> Shelf | None:
        return self._shelves.get(DEFAULT)

    @property
    def primary(self) -> Shelf:
        """The collection the service-wide figures describe: `default` when there is one,
        else the first declared."""
        return self.default or next(iter(self._shelves.values()))

    def shelf(self, name: str) -> Shelf | None:
        """The collection of that name, whoever asks (for builds and admin routes)."""
        return self._shelves.get(name)

    def get(self, name: str, identity: Identity) -> Shelf:
        """The collection if this caller may read it; NoSuchCollection otherwise."""
        shelf = self._shelves.get(name)
        if shelf is None or not shelf.collection.readable_by(identity):
            raise NoSuchCollection()
        return shelf

    def readable(self, identity: Identity) -> list[Shelf]:
        return [s for s in self._shelves.values() if s.collection.readable_by(identity)]

    def named_in(self, path: str) -> str | None:
        """The declared collection a request path is about: the NAME of
        /api/collections/NAME/..., `default` for the routes that predate collections, None for
        every other path (and for undeclared names)."""
        if path.startswith(COLLECTIONS_PREFIX):
            name = path[len(COLLECTIONS_PREFIX):].partition("/")[0]
            return name if name in self._shelves else None
        if path in _DEFAULT_PATHS or path.startswith(_DEFAULT_PREFIX):
            return DEFAULT if DEFAULT in self._shelves else None
        return None

    def bucket_for(self, scope: Scope) -> str | None:
        """The collection a request's rate-limit allowance is counted in: the one named in its
        path when the caller may read it, else None (one shared bucket), so a declared but
        forbidden name is limited exactly like an unknown one."""
        name = self.named_in(scope["path"])
        if name is None:
            return None
        who = scope.get("state", {}).get("identity")
        identity = who if isinstance(who, Identity) else ANONYMOUS
        return name if self._shelves[name].collection.readable_by(identity) else None

    def origins_for(self, path: str, common: Sequence[str]) -> tuple[str, ...]:
        """The origins whose pages may call `path`: `common` (QA_ALLOWED_ORIGINS) everywhere,
        plus a public collection's own on its routes, plus every collection's on the routes all
        widgets share (feedback, the list of collections).

        CORS is decided before anyone is identified (a preflight carries no credentials), so on
        the routes of a restricted collection, and of any name not declared, the origins are the
        same: those of every restricted collection. Otherwise a probe sending a restricted
        collection's page as its Origin would see that name allowed and an unknown one not."""
        name = self.named_in(path)
        extra: Sequence[str] = ()
        if name is not None and self._shelves[name].collection.public:
            extra = self._shelves[name].collection.allowed_origins
        elif name is not None or _names_a_collection(path):
            extra = self._hidden_origins
        elif path in _SHARED_PATHS:
            extra = [o for s in self._shelves.values() for o in s.collection.allowed_origins]
        return tuple(dict.fromkeys([*common, *extra]))


def _names_a_collection(path: str) -> bool:
    """A path of one collection's routes, declared or not: /api/collections/NAME..., or one of
    the routes that mean `default`."""
    return (path.startswith(COLLECTIONS_PREFIX) or path in _DEFAULT_PATHS
            or path.startswith(_DEFAULT_PREFIX))
