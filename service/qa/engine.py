"""The served state: one loaded index version with its encoder, swapped whole on reload."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.index import lexical, store
from service.index.encoder import Encoder, EncoderError, ModelInfo, OnnxEncoder, TorchEncoder
from service.qa.answer import Answer, compose_answer
from service.qa.answertype import wanted
from service.qa.retrieval import Hit, SearchIndex, check_compatible, load_index, retrieve
from service.settings import Settings

log = logging.getLogger(__name__)
# Stands for an unusable CURRENT among refused versions; no version name contains a slash.
_BAD_CURRENT = "/bad CURRENT/"


# Passages read for the answer sentence beyond the k a question asks for.
ANSWER_POOL = 2
# Passages whose sentences are scored to re-rank them (answer.rerank) before the best k +
# ANSWER_POOL are read: re-ranking 5 gave the same hits as 8-12 on two of the four sets and
# fewer on one (README, "Quality").
RERANK_POOL = 8


class NotReady(Exception):
    """No index version is loaded yet."""


@dataclass(frozen=True)
class Snapshot:
    """What one request uses from start to end, so it never mixes two versions."""

    index: SearchIndex
    encoder: Encoder

    @property
    def version(self) -> str:
        return self.index.version

    def search(self, question: str, k: int) -> tuple[np.ndarray, list[str], list[Hit]]:
        query_vector = self.encoder.encode_queries([question])[0]
        terms = lexical.terms(question)
        return query_vector, terms, retrieve(self.index, query_vector, terms, k)

    def ask(self, question: str, k: int) -> Answer:
        # A few passages beyond the k cited are read for the answer sentence: the passage
        # that holds it is cited even when its own vector ranked it just below the top k.
        read = k + ANSWER_POOL
        query_vector, terms, hits = self.search(question, max(read, RERANK_POOL))
        want = wanted(question, self.index.acronyms)
        answer = compose_answer(self.index, query_vector, terms, hits, want, k, read)
        return replace(answer, query_vector=query_vector)


class EncoderCache:
    """Encoders loaded once and shared by every engine whose index uses the same exported
    files (by checksum): each collection's index folder has its own copy of the export, but a
    process needs the model in memory only once."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, ...], Encoder] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], load: Callable[[], Encoder]) -> Encoder:
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                found = self._loaded[key] = load()
            return found

    def __len__(self) -> int:
        return len(self._loaded)


class Engine:
    """Loads versions, hands out snapshots, caches answers per version."""

    def __init__(self, settings: Settings, model: ModelInfo, encoder: Encoder | None = None,
                 encoders: EncoderCache | None = None):
        self.settings = settings
        self.model = model
        self._fixed_encoder = encoder
        self._encoders = encoders if encoders is not None else EncoderCache()
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self._refused: str | None = None
        self._cache: OrderedDict[tuple[str, str, int], Answer] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def index_dir(self) -> Path:
        return self.settings.index_dir

    @property
    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None:
            raise NotReady("the index is not loaded yet")
        return snap

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    @property
    def served_version(self) -> str | None:
        snap = self._snapshot
        return snap.version if snap else None

    def _encoder_for(self, index: SearchIndex) -> Encoder:
        kind = index.manifest.get("encoder", {}).get("kind")
        if self._fixed_encoder is not None:
            check_compatible(index.manifest, self._fixed_encoder.model, self._fixed_encoder.kind,
                             self.settings.chunk_chars)
            return self._fixed_encoder
        check_compatible(index.manifest, self.model, str(kind), self.settings.chunk_chars)
        current = self._snapshot
        if current and current.index.manifest.get("encoder") == index.manifest.get("encoder"):
            return current.encoder
        if kind == OnnxEncoder.kind:
            record = index.manifest["encoder"]
            folder, files = store.encoder_files(self.index_dir, record)
            for name, digest in files.items():
                path = folder / name
                if not path.is_file() or store.sha256_file(path) != digest:
                    raise store.IndexUnavailable(
                        f"encoder file {path} is missing or damaged: run `make index`")
            try:
                return self._encoders.get(
                    (str(kind), *sorted(f"{n}={d}" for n, d in files.items())),
                    lambda: OnnxEncoder(folder, self.model, threads=1,
                                       prepared_in=self.settings.encoder_cache_dir))
            except EncoderError as exc:
                raise store.IndexUnavailable(str(exc)) from exc
        if kind == TorchEncoder.kind:
            return self._encoders.get((str(kind), self.model.fingerprint),
                                      lambda: TorchEncoder(self.model, threads=1))
        raise store.IndexUnavailable(f"index uses unknown encoder {kind!r}: run `make index`")

    def load(self, version: str | None = None) -> Snapshot:
        """Load and verify a version (default: CURRENT) and serve it; on error keep the old one."""
        with self._lock:
            return self._swap(version or store.current_version(self.index_dir))

    def _swap(self, version: str | None) -> Snapshot:
        try:
            index = load_index(self.index_dir, version)
            snap = Snapshot(index, self._encoder_for(index))
        except store.IndexUnavailable:
            self._refused = version
            raise
        # One reference assignment: a request holds either the old snapshot or the new one.
        self._snapshot, self._refused = snap, None
        with self._cache_lock:
            self._cache.clear()
        log.info("serving index version %s (%d documents, %d chunks)", index.version,
                 len(index.documents), len(index.chunks))
        later = store.deferred(index.manifest)
        if later:
            threading.Thread(target=self._check_in_full, args=(index.version, later),
                             name="index-verify", daemon=True).start()
        return snap

    def _check_in_full(self, version: str, names: list[str]) -> None:
        """The full checksums of the version's big files, which loading checked by size and
        samples only; a mismatch stops serving the version (not ready until another loads)."""
        try:
            store.verify_files(self.index_dir / "versions" / version, names)
        except (store.IndexUnavailable, OSError) as exc:
            with self._lock:
                if self.served_version == version:
                    self._snapshot, self._refused = None, version
                    with self._cache_lock:
                        self._cache.clear()
            log.error("stopped serving index version %s: %s", version, exc)
            return
        log.info("index version %s: big files match their checksums", version)

    def reload_if_changed(self, *, retry: bool = False) -> bool:
        """Serve CURRENT if it names another version; True when a new version was loaded.

        Raises IndexUnavailable (and keeps serving the old version) when the new one is
        damaged or incompatible. Published versions never change, so a refused version is
        not read again until CURRENT moves on, unless `retry`.
        """
        with self._lock:
            try:
                version = store.current_version(self.index_dir)
            except store.IndexUnavailable:
                # Said once, like a refused version, until CURRENT changes or a retry.
                if self._refused == _BAD_CURRENT and not retry:
                    return False
                self._refused = _BAD_CURRENT
                raise
            if version is None or version == self.served_version or (
                    version == self._refused and not retry):
                return False
            self._swap(version)
            return True

    def cached(self, snapshot: Snapshot, question: str, k: int) -> Answer | None:
        """The cached answer when the same question was just asked of this snapshot; cheap
        enough to call on the event loop."""
        if self.settings.cache_size == 0:
            return None
        key = _cache_key(snapshot, question, k)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
            return cached

    def compute(self, snapshot: Snapshot, question: str, k: int) -> Answer:
        """Compute the answer for this snapshot and remember it (no cache lookup: callers that
        want one call `cached` first, as `ask` does)."""
        answer = snapshot.ask(question, k)
        if self.settings.cache_size:
            with self._cache_lock:
                self._cache[_cache_key(snapshot, question, k)] = answer
                while len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        return answer

    def ask(self, snapshot: Snapshot, question: str, k: int) -> Answer:
        """The answer for this snapshot, from the cache when the same question was just asked."""
        return self.cached(snapshot, question, k) or self.compute(snapshot, question, k)


def _cache_key(snapshot: Snapshot, question: str, k: int) -> tuple[str, str, int]:
    return snapshot.version, " ".join(question.split()), k


class ReloadWatcher:
    """Polls the CURRENT pointer every `interval` seconds in a daemon thread and serves each
    newly published version. Polling a one-line file is cheap and works on every filesystem,
    unlike inotify (network mounts, containers)."""

    def __init__(self, engine: Engine, interval: float, name: str = "") -> None:
        if interval <= 0:
            raise ValueError("interval must be positive; do not start a watcher to turn it off")
        self.engine = engine
        self.interval = interval
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"index-reload-{self.name}" if self.name else "index-reload",
            daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def check(self) -> None:
        """One poll: load a new version if there is one; a bad one is logged and not served."""
        try:
            self.engine.reload_if_changed()
        except store.IndexUnavailable as exc:
            log.error("not serving the published index%s (still serving %s): %s",
                      f" of collection {self.name!r}" if self.name else "",
                      self.engine.served_version, exc)
        except Exception:
            # The watcher must outlive any surprise; the next poll tries again.
            log.exception("index reload failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
