"""Extracted documents kept by content, so an unchanged file is not parsed again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from service.ingest.document import Document, Extraction
from service.ingest.registry import READERS_VERSION, Format

log = logging.getLogger(__name__)


class ExtractCache:
    """One JSON file per (reader version, format, file name, file bytes) in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    @staticmethod
    def key(fmt: Format, name: str, data: bytes) -> str:
        digest = hashlib.sha256(f"{READERS_VERSION}\0{fmt.name}\0{name}\0".encode())
        digest.update(data)
        return digest.hexdigest()

    def get(self, key: str) -> Extraction | None:
        self.used.add(key)
        try:
            records = json.loads((self.folder / f"{key}.json").read_text("utf-8"))
            docs = [Document(r["id"], r["title"], r["text"], tuple(r["pages"]),
                             tuple((a, b) for a, b in r["headings"])) for r in records]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a damaged cached extraction %s: %s", key, exc)
            return None
        return docs, []

    def put(self, key: str, docs: list[Document]) -> None:
        """Keep a successful extraction (problems are not kept: a timeout may not recur)."""
        self.used.add(key)
        records = [{"id": d.id, "title": d.title, "text": d.text, "pages": list(d.pages),
                    "headings": [list(h) for h in d.headings]} for d in docs]
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(records, fh, ensure_ascii=False)
            os.replace(tmp, self.folder / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def prune(self) -> int:
        """Remove what this build did not use: files since changed or deleted."""
        removed = 0
        if not self.folder.is_dir():
            return 0
        for path in self.folder.iterdir():
            if path.suffix == ".json" and path.stem not in self.used:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
