"""Collections: the bodies of text one service serves, declared in QA_COLLECTIONS_FILE (TOML)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.http.identity import Identity
from service.settings import Settings

DEFAULT = "default"
MAX_NAME = 64
MAX_TITLE = 200
MAX_QUESTIONS = 20
MAX_QUESTION_CHARS = 1000
# Catalog files are small; anything bigger is a mistake (or not a catalog).
MAX_FILE_BYTES = 1_000_000
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_KEYS = frozenset({"title", "corpus_dir", "index_dir", "allowed_origins", "access", "questions"})
_REQUIRED = ("title", "corpus_dir", "index_dir", "access")


class CatalogError(ValueError):
    """The collections file is missing, unreadable or invalid; the message names the file and
    the key."""


@dataclass(frozen=True)
class Collection:
    """One body of text: where it lives, who may read it, and how the demo page presents it."""

    name: str
    title: str
    corpus_dir: Path
    index_dir: Path
    allowed_origins: tuple[str, ...] = ()
    groups: frozenset[str] | None = None  # None: public
    questions: tuple[str, ...] = ()

    @property
    def public(self) -> bool:
        return self.groups is None

    def readable_by(self, identity: Identity) -> bool:
        """Public, or the caller is in one of its groups."""
        return self.groups is None or not self.groups.isdisjoint(identity.groups)

    def settings(self, base: Settings) -> Settings:
        """The service settings with this collection's folders: what its builds and its engine
        read (every other setting is shared)."""
        return base.model_copy(update={"corpus_dir": self.corpus_dir,
                                       "index_dir": self.index_dir,
                                       "allowed_origins": list(self.allowed_origins)})


def is_collection_name(name: str) -> bool:
    """Lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64."""
    return (0 < len(name) <= MAX_NAME and name[0] not in "-_"
            and all(ch in _NAME_CHARS for ch in name))


def default_collection(settings: Settings) -> Collection:
    """The one collection a service without a collections file serves, from QA_* settings."""
    return Collection(name=DEFAULT, title=settings.demo_title, corpus_dir=settings.corpus_dir,
                      index_dir=settings.index_dir,
                      allowed_origins=tuple(settings.allowed_origins),
                      questions=tuple(settings.demo_questions))


def read_catalog(settings: Settings) -> list[Collection]:
    """The collections of QA_COLLECTIONS_FILE, or the one `default` collection without it."""
    if settings.collections_file is None:
        return [default_collection(settings)]
    return parse_catalog(settings.collections_file)


def parse_catalog(path: Path) -> list[Collection]:
    """Read and validate a collections file. Relative folders are relative to the file's own
    folder, so a catalog means the same whatever directory the service starts in."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the collections file ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise CatalogError(f"{path}: over {MAX_FILE_BYTES} bytes; not a collections file")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"collections"})
    if extra:
        raise CatalogError(f"{path}: unknown top-level key {extra[0]!r}; collections are "
                           "declared as [collections.NAME] tables")
    tables = data.get("collections")
    if not isinstance(tables, dict) or not tables:
        raise CatalogError(f"{path}: no collections: declare at least one [collections.NAME] "
                           "table")
    folder = path.resolve().parent
    found = [_collection(path, folder, name, table) for name, table in tables.items()]
    seen: dict[Path, str] = {}
    for c in found:
        other = seen.setdefault(c.index_dir.resolve(), c.name)
        if other != c.name:
            raise CatalogError(f"{path}: collections.{c.name}.index_dir: the same folder as "
                               f"collections.{other}.index_dir; each collection needs its own")
    return found


def _collection(path: Path, folder: Path, name: str, table: Any) -> Collection:
    where = f"{path}: collections.{name}"
    if not is_collection_name(name):
        raise CatalogError(f"{where}: a collection name is 1-{MAX_NAME} lower-case letters, "
                           "digits, '-' or '_', starting with a letter or digit")
    if not isinstance(table, dict):
        raise CatalogError(f"{where}: must be a table ([collections.{name}])")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise CatalogError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(_KEYS))})")
    for key in _REQUIRED:
        if key not in table:
            raise CatalogError(f"{where}.{key}: missing")
    return Collection(
        name=name,
        title=_text(f"{where}.title", table["title"], MAX_TITLE),
        corpus_dir=_folder(f"{where}.corpus_dir", folder, table["corpus_dir"]),
        index_dir=_folder(f"{where}.index_dir", folder, table["index_dir"]),
        allowed_origins=_origins(f"{where}.allowed_origins", table.get("allowed_origins", [])),
        groups=_access(f"{where}.access", table["access"]),
        questions=tuple(_strings(f"{where}.questions", table.get("questions", []),
                                 MAX_QUESTION_CHARS, MAX_QUESTIONS)),
    )


def _text(where: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: must be a non-empty string")
    if len(value) > limit:
        raise CatalogError(f"{where}: over {limit} characters")
    if any(ord(ch) < 32 for ch in value):
        raise CatalogError(f"{where}: contains a control character")
    return value.strip()


def _strings(where: str, value: object, limit: int, most: int) -> list[str]:
    if not isinstance(value, list):
        raise CatalogError(f"{where}: must be a list of strings")
    if len(value) > most:
        raise CatalogError(f"{where}: at most {most} entries")
    return [_text(f"{where}[{i}]", v, limit) for i, v in enumerate(value)]


def _folder(where: str, folder: Path, value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: must be a folder path (a non-empty string)")
    given = Path(value).expanduser()
    # Lexically normalized, so messages and logs show /srv/corpus, not /srv/examples/../corpus.
    return Path(os.path.normpath(given if given.is_absolute() else folder / given))


def _origins(where: str, value: object) -> tuple[str, ...]:
    origins = []
    for i, origin in enumerate(_strings(where, value, 2000, 1000)):
        origin = origin.rstrip("/")
        scheme, sep, host = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not sep or not host
                              or "/" in host):
            raise CatalogError(f"{where}[{i}]: {origin!r} is not an origin "
                               "(scheme://host[:port], or \"*\")")
        origins.append(origin)
    return tuple(origins)


def _access(where: str, value: object) -> frozenset[str] | None:
    if value == "public":
        return None
    if isinstance(value, str):
        raise CatalogError(f"{where}: \"public\" or a list of groups, e.g. [\"hr\", \"managers\"]")
    groups = _strings(where, value, 256, 1000)
    if not groups:
        raise CatalogError(f"{where}: an empty list of groups would let nobody read it; "
                           "use \"public\" or name the groups")
    return frozenset(groups)
