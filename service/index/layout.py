"""How a version stores its documents and chunks, and reads them back without one Python
object per chunk: chunk metadata in arrays (memory-mapped), documents read one at a time, by
byte offset, from `documents.jsonl` when a question needs them.

Files (beside the vectors, dense, lexical and term-set files of service.index.indexing):

  documents.jsonl         one JSON record per document (id, title, text, source, pages)
  document_offsets.npy    int64, byte offset of each record's line, then the file's size
  document_ids.json       the ids, in record order
  chunks.json             {"layout": 2, "headings": [...]}: the distinct section headings
  chunk_docs.npy          int32 document row of each chunk
  chunk_bounds.npy        int64 (chunks, 2): start and end in the document's text
  chunk_headings.npy      int32 index into chunks.json's headings
  chunk_sentence_ptr.npy  int64 (chunks + 1): each chunk's first row in sentence_bounds
  sentence_bounds.npy     int64 (sentences, 2): sentence spans, absolute
  chunk_keys.npy          S32: the embedding key of each chunk (reused by the next build)
  acronyms.json           abbreviations the corpus defines, learned once at build time

Versions written before this layout (chunks.json holding a row per chunk, no offsets) are read
too, into the same structures.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from service.index import acronyms
from service.ingest import markup
from service.ingest.chunking import Chunk
from service.ingest.corpus import Document

DOCUMENTS, DOCUMENT_OFFSETS, DOCUMENT_IDS = (
    "documents.jsonl", "document_offsets.npy", "document_ids.json")
CHUNKS = "chunks.json"
CHUNK_DOCS, CHUNK_BOUNDS, CHUNK_HEADINGS, CHUNK_SENTENCE_PTR, SENTENCE_BOUNDS, CHUNK_KEYS = (
    "chunk_docs.npy", "chunk_bounds.npy", "chunk_headings.npy", "chunk_sentence_ptr.npy",
    "sentence_bounds.npy", "chunk_keys.npy")
ACRONYMS = "acronyms.json"
LAYOUT = 2
# Documents (and their reader views) kept parsed per loaded version: an answer reads a few.
CACHED_DOCUMENTS = 2048


def mapped(path: Path) -> np.ndarray:
    """A stored array memory-mapped read-only, as a plain ndarray: np.memmap's own indexing
    runs Python code on every access (~10 µs, 50 accesses a question), a view of it does not."""
    array: np.ndarray = np.load(path, allow_pickle=False, mmap_mode="r").view(np.ndarray)
    return array


# Rows maps files up to this size instead of reading them: then at most this much can become
# resident, and a question's few hundred reads (one system call each) would cost more than the
# rest of retrieval (the shipped corpus: ~450 µs read against ~150 µs mapped).
MAP_UP_TO = 64 << 20


class Rows:
    """A stored 2-D array read a few rows at a time by positional reads (os.preadv), not
    mapped: every page fault on a mapping brings in its neighbours too (the kernel maps up to
    64 KiB around it), so a few hundred questions over a million passages' vectors left
    gigabytes resident in each serving process. Reads take the rows from the page cache,
    which every process shares, and keep nothing. Thread-safe (reads do not move a file
    position). Files up to MAP_UP_TO bytes are mapped and indexed as arrays instead."""

    ndim = 2

    def __init__(self, path: Path) -> None:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            self._offset = fh.tell()
        if fortran or len(shape) != 2 or dtype.hasobject:
            raise ValueError(f"{path.name} is not a plain 2-D array")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._row = self.shape[1] * self.dtype.itemsize
        if path.stat().st_size != self._offset + self.shape[0] * self._row:
            raise ValueError(f"{path.name} is not as long as its header says")
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        self._mapped: np.ndarray | None = (
            np.load(path, mmap_mode="r", allow_pickle=False)
            if path.stat().st_size <= MAP_UP_TO else None)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        """One row (1-D), a slice of rows, or the rows an index array names, in its order."""
        if self._mapped is not None:
            if isinstance(key, slice) and key.step not in (None, 1):
                raise IndexError("rows are read in steps of one")
            picked: np.ndarray = self._mapped[key]
            return picked
        if isinstance(key, int | np.integer):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            row: np.ndarray = self.spans(np.array([i]), np.array([i + 1]))[0]
            return row
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("rows are read in steps of one")
            return self.spans(np.array([start]), np.array([max(start, stop)]))
        rows = np.asarray(key, dtype=np.int64).ravel()
        return self.spans(rows, rows + 1)

    def spans(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Rows starts[j]:stops[j] of every j, one after another: one read per span."""
        sizes = np.asarray(stops, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
        if len(sizes) and (int(sizes.min()) < 0 or int(np.min(starts)) < 0
                           or int(np.max(stops)) > self.shape[0]):
            raise IndexError("rows out of range")
        if self._mapped is not None:
            # One gather: each span's rows, one after another.
            offsets = np.cumsum(sizes) - sizes
            rows = (np.repeat(np.asarray(starts, dtype=np.int64) - offsets, sizes)
                    + np.arange(int(sizes.sum())))
            gathered: np.ndarray = self._mapped[rows]
            return gathered
        out = np.empty((int(sizes.sum()), self.shape[1]), dtype=self.dtype)
        view = out.reshape(-1).view(np.uint8).data
        # Byte offsets in the file and in `out`, computed for all spans at once: the loop
        # then does little besides the reads (one system call each, hundreds a question).
        offsets = (self._offset + np.asarray(starts, dtype=np.int64) * self._row).tolist()
        ends = np.cumsum(sizes * self._row).tolist()
        at = 0
        for offset, end in zip(offsets, ends, strict=True):
            if end > at and os.preadv(self._fd, [view[at:end]], offset) != end - at:
                raise OSError("short read: the file changed under the index")
            at = end
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def _load(folder: Path, name: str) -> np.ndarray:
    return mapped(folder / name)


# ------------------------------------------------------------------ writing


def write_documents(folder: Path, docs: Sequence[Document]) -> None:
    offsets = [0]
    with (folder / DOCUMENTS).open("wb") as fh:
        for d in docs:
            record: dict[str, Any] = {"id": d.id, "title": d.title, "text": d.text,
                                      "source": d.source}
            if d.pages:
                record["pages"] = list(d.pages)
            # ensure_ascii=False keeps text readable; JSON escapes every newline inside it,
            # so a record is exactly one line.
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            fh.write(line)
            offsets.append(offsets[-1] + len(line))
    np.save(folder / DOCUMENT_OFFSETS, np.array(offsets, dtype=np.int64), allow_pickle=False)
    (folder / DOCUMENT_IDS).write_text(json.dumps([d.id for d in docs], ensure_ascii=False),
                                       "utf-8")


def write_chunks(folder: Path, chunks: Sequence[Chunk], doc_rows: Mapping[str, int],
                 keys: Sequence[str]) -> None:
    headings: dict[str, int] = {}
    heading_ids = np.fromiter((headings.setdefault(c.heading, len(headings)) for c in chunks),
                              dtype=np.int32, count=len(chunks))
    sizes = np.fromiter((len(c.sentences) for c in chunks), dtype=np.int64, count=len(chunks))
    ptr = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    bounds = np.fromiter((x for c in chunks for s in c.sentences for x in s), dtype=np.int64,
                         count=2 * int(ptr[-1])).reshape(-1, 2)
    (folder / CHUNKS).write_text(json.dumps({"layout": LAYOUT, "headings": list(headings)},
                                            ensure_ascii=False), "utf-8")
    np.save(folder / CHUNK_DOCS, np.fromiter((doc_rows[c.doc_id] for c in chunks),
                                             dtype=np.int32, count=len(chunks)),
            allow_pickle=False)
    np.save(folder / CHUNK_BOUNDS, np.fromiter((x for c in chunks for x in (c.start, c.end)),
                                               dtype=np.int64, count=2 * len(chunks)
                                               ).reshape(-1, 2), allow_pickle=False)
    np.save(folder / CHUNK_HEADINGS, heading_ids, allow_pickle=False)
    np.save(folder / CHUNK_SENTENCE_PTR, ptr, allow_pickle=False)
    np.save(folder / SENTENCE_BOUNDS, bounds, allow_pickle=False)
    np.save(folder / CHUNK_KEYS, np.array(keys, dtype="S32"), allow_pickle=False)


def write_acronyms(folder: Path, learned: acronyms.Acronyms) -> None:
    # Every field of the dataclass as it is (plain dicts and lists), so loading restores it
    # whole; one it does not find is learned again from the documents.
    (folder / ACRONYMS).write_text(json.dumps(dataclasses.asdict(learned), ensure_ascii=False),
                                   "utf-8")


# ------------------------------------------------------------------ reading


class _Cache:
    """A small thread-safe LRU of parsed values by key."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class DocumentStore(Mapping[str, Document]):
    """The documents of a version by id, each parsed from its line of documents.jsonl (a
    memory-mapped file) when first asked for."""

    def __init__(self, path: Path, ids: list[str], offsets: np.ndarray) -> None:
        if len(offsets) != len(ids) + 1:
            raise ValueError("document offsets do not match the document ids")
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            self._data: mmap.mmap | bytes = (
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b"")
        if len(offsets) and int(offsets[-1]) != size:
            raise ValueError(f"{path.name} is not the size its offsets say")
        self.ids = ids
        self.rows = {doc_id: i for i, doc_id in enumerate(ids)}
        if len(self.rows) != len(ids):
            raise ValueError("duplicate document ids")
        self._offsets = offsets
        self._cache = _Cache(CACHED_DOCUMENTS)

    def row(self, row: int) -> Document:
        doc_id = self.ids[row]
        cached: Document | None = self._cache.get(doc_id)
        if cached is not None:
            return cached
        lo, hi = int(self._offsets[row]), int(self._offsets[row + 1])
        d = json.loads(self._data[lo:hi])
        if d["id"] != doc_id:
            raise ValueError(f"document record {row} is not {doc_id!r}")
        doc = Document(d["id"], d["title"], d["text"], tuple(d.get("pages", ())),
                       source=d.get("source", ""))
        self._cache.put(doc_id, doc)
        return doc

    def __getitem__(self, doc_id: str) -> Document:
        return self.row(self.rows[doc_id])

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class Views(Mapping[str, str]):
    """What readers see of each document (markup.view_of), made when first asked for."""

    def __init__(self, documents: DocumentStore) -> None:
        self._documents = documents
        self._cache = _Cache(CACHED_DOCUMENTS)

    def __getitem__(self, doc_id: str) -> str:
        view: str | None = self._cache.get(doc_id)
        if view is None:
            view = markup.view_of(doc_id, self._documents[doc_id].text)
            self._cache.put(doc_id, view)
        return view

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._documents

    def __iter__(self) -> Iterator[str]:
        return iter(self._documents)

    def __len__(self) -> int:
        return len(self._documents)


class ChunkTable(Sequence[Chunk]):
    """Chunks stored as arrays; `table[i]` makes the Chunk when asked for."""

    def __init__(self, doc_ids: Sequence[str], docs: np.ndarray, bounds: np.ndarray,
                 headings: list[str], heading_ids: np.ndarray, sentence_ptr: np.ndarray,
                 sentence_bounds: np.ndarray, keys: np.ndarray | None) -> None:
        n = len(docs)
        if (bounds.shape != (n, 2) or len(heading_ids) != n or len(sentence_ptr) != n + 1
                or sentence_bounds.ndim != 2 or int(sentence_ptr[-1]) != len(sentence_bounds)
                or (keys is not None and len(keys) != n)):
            raise ValueError("chunk arrays do not match each other")
        if n and (int(docs.max()) >= len(doc_ids) or int(docs.min()) < 0
                  or int(heading_ids.max()) >= len(headings)):
            raise ValueError("chunk arrays point past the documents or headings")
        self._doc_ids = doc_ids
        self.docs, self.bounds, self.heading_ids = docs, bounds, heading_ids
        self.headings = headings
        self.sentence_ptr, self.sentence_bounds, self.keys = sentence_ptr, sentence_bounds, keys

    def __len__(self) -> int:
        return len(self.docs)

    @overload
    def __getitem__(self, i: int) -> Chunk: ...

    @overload
    def __getitem__(self, i: slice) -> list[Chunk]: ...

    def __getitem__(self, i: int | slice) -> Chunk | list[Chunk]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"chunk {i} out of range")
        start, end = self.bounds[i].tolist()
        lo, hi = self.sentence_ptr[i : i + 2].tolist()
        return Chunk(self._doc_ids[int(self.docs[i])], start, end,
                     self.headings[int(self.heading_ids[i])],
                     tuple(map(tuple, self.sentence_bounds[lo:hi].tolist())))

    def __iter__(self) -> Iterator[Chunk]:
        return (self[i] for i in range(len(self)))


def read_documents(folder: Path) -> DocumentStore:
    path = folder / DOCUMENTS
    if (folder / DOCUMENT_OFFSETS).is_file():
        ids = json.loads((folder / DOCUMENT_IDS).read_text("utf-8"))
        return DocumentStore(path, ids, _load(folder, DOCUMENT_OFFSETS))
    # Before offsets were stored: find the lines, read the ids once.
    data = path.read_bytes()
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")) + 1
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    ids = [json.loads(line)["id"] for line in data.decode("utf-8").splitlines()]
    return DocumentStore(path, ids, offsets)


def read_chunks(folder: Path, doc_ids: list[str]) -> ChunkTable:
    meta = json.loads((folder / CHUNKS).read_text("utf-8"))
    if "chunks" in meta:  # before this layout: one row per chunk
        return _from_rows(meta["chunks"], doc_ids)
    if meta.get("layout") != LAYOUT:
        raise ValueError(f"unknown chunk layout {meta.get('layout')!r}")
    return ChunkTable(doc_ids, _load(folder, CHUNK_DOCS), _load(folder, CHUNK_BOUNDS),
                      list(meta["headings"]), _load(folder, CHUNK_HEADINGS),
                      _load(folder, CHUNK_SENTENCE_PTR), _load(folder, SENTENCE_BOUNDS),
                      _load(folder, CHUNK_KEYS))


def _from_rows(rows: list[list[Any]], doc_ids: list[str]) -> ChunkTable:
    headings: dict[str, int] = {}
    heading_ids = np.array([headings.setdefault(r[3], len(headings)) for r in rows],
                           dtype=np.int32)
    sizes = np.array([len(r[4]) for r in rows], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    bounds = np.array([s for r in rows for s in r[4]], dtype=np.int64).reshape(-1, 2)
    keys = np.array([r[5] for r in rows], dtype="S32") if rows and len(rows[0]) > 5 else None
    return ChunkTable(doc_ids, np.array([r[0] for r in rows], dtype=np.int32),
                      np.array([[r[1], r[2]] for r in rows], dtype=np.int64).reshape(-1, 2),
                      list(headings), heading_ids, ptr, bounds, keys)


def read_acronyms(folder: Path, views: Mapping[str, str]) -> acronyms.Acronyms:
    """The stored abbreviations, or (versions before they were stored, or stored with other
    fields) learned now."""
    fields = {f.name for f in dataclasses.fields(acronyms.Acronyms)}
    if (folder / ACRONYMS).is_file():
        stored = json.loads((folder / ACRONYMS).read_text("utf-8"))
        if isinstance(stored, dict) and set(stored) == fields:
            return acronyms.Acronyms(**stored)
    return acronyms.learn(views.values())


def keys_of(table: ChunkTable) -> list[str]:
    """Each chunk's embedding key (empty when the version did not store them)."""
    if table.keys is None:
        return [""] * len(table)
    return [k.decode("ascii") for k in table.keys.tolist()]


def all_documents(store: DocumentStore) -> Iterable[Document]:
    return (store.row(i) for i in range(len(store)))
