"""Building an index version from a corpus: read, split, embed (reusing what it can), publish."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from service.index import acronyms, embedding, layout, lexical, store, termsets
from service.index.embedding import process_count
from service.index.encoder import (
    ONNX_EXPORT,
    Encoder,
    ModelInfo,
    OnnxEncoder,
    TorchEncoder,
    describe_model,
    export_onnx,
    plan_batches,
)
from service.index.progress import Progress
from service.ingest import markup
from service.ingest.chunking import REFERS_BACK, Chunk, split
from service.ingest.corpus import (
    Document,
    ParseLimits,
    Problem,
    iter_files,
    read_documents,
    visible_files,
)
from service.settings import Settings

log = logging.getLogger(__name__)

# Bump when chunking or stored layout changes meaning: forces a full rebuild.
CHUNKER_VERSION = 5
# Bump when what the encoder or BM25 reads for a chunk changes (its context lines): the next
# build embeds every chunk again, while the served index stays usable until it is replaced
# (unlike CHUNKER_VERSION, which the service checks). 2: the referent of a chunk opening with
# "They ...".
INPUT_VERSION = 2
# The referent sentence is cut to this many characters (its subject comes first).
REFERENT_MAX_CHARS = 300
_BULLETS = "•·▪‣◦*+-–— \t\n"
DOCUMENTS, CHUNKS, VECTORS, SENTENCE_VECTORS, DENSE = (
    "documents.jsonl", "chunks.json", "vectors.npy", "sentence_vectors.npy", "dense.faiss")
# Text extracted from PDF and Office files, by content, beside the versions (not in one: it
# outlives them, so a build parses only the files that changed).
EXTRACTED = "extracted"

# Exact inner-product search up to FLAT_MAX passages, HNSW above: one flat query at one thread
# took ~0.2 ms at 10k vectors here, as much as HNSW's, and ~0.45 ms at 14k, ~0.75 ms at 20k
# (past the CPU cache), while HNSW stays ~0.1-0.5 ms up to 1M. On SciFact (13.9k passages) HNSW
# left nDCG@10 as it was (0.7385). `make bench` measures both (README "Performance").
FLAT_MAX = 10_000
# HNSW's efSearch (at least retrieval's 50 dense candidates) grows with the index to keep
# recall@10 against exact search >= 0.95: measured 0.98 at 100k with 64, and at 1M 0.92-0.94
# with 128 but 0.97-0.985 with 256 (SciFact vectors, each jittered). bench/large_corpus.py's
# vectors (mixtures of two real ones) are harder: 0.976 at 20k with 64, but at 200k 0.85 with
# 64, 0.93 with 128, 0.966 with 256, 0.987 with 512; so 256 from 50k on.
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 80
HNSW_EF_SEARCH, HNSW_EF_SEARCH_LARGE, HNSW_LARGE = 64, 256, 50_000
# From IVFPQ_MIN passages on, an inverted file over product-quantized codes (IVF-PQ): HNSW's
# search, even over 8-bit codes (below), touches its graph (~0.3 KB a passage) and codes (0.4
# KB) all over 6.4 GB at 10M, while IVF-PQ keeps 48 bytes a passage and reads full vectors only
# to re-score its best candidates (IVFPQ_REFINE times the candidates asked for, exactly, from
# the vectors file). Lists: about 4 sqrt(n), a power of two; IVFPQ_NPROBE of them searched.
# Recall measured by bench/ivfpq.py (README, "Performance"): the refine step is what keeps it
# >= 0.95.
IVFPQ_MIN = 5_000_000
IVFPQ_NPROBE, IVFPQ_REFINE, IVFPQ_BITS = 64, 4, 8
IVFPQ_TRAIN_PER_LIST = 64
# Above this many passages the graph holds 8-bit codes of the vectors (a quarter of the bytes)
# instead of copies: a search reads thousands of vectors spread over the file, so after a few
# hundred questions a million float copies (1.5 GB) are all resident. Retrieval scores its
# candidates with the float vectors anyway (vectors.npy), so only which 50 are candidates
# depends on the codes.
HNSW_CODES_OVER = 250_000
# The codes steer the graph search less well: bench/large_corpus.py's million passages gave
# recall@10 0.913 with efSearch 256 (asking 2 or 4 times the candidates and re-scoring them
# with the float vectors changed nothing) and 0.966 with 512 (1.2 ms a search).
HNSW_EF_SEARCH_CODES = 512


# Passages embedded in this process per call to the encoder (whole batches).
EMBED_SLICE = 8_192


class BuildError(Exception):
    """The build cannot produce a usable version; nothing was published."""


@dataclass
class BuildReport:
    version: str | None
    published: bool
    documents: int = 0
    chunks: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    reason: str = ""

    def summary(self) -> str:
        if not self.published:
            return f"index is up to date ({self.version}): {self.reason}"
        return (f"published {self.version}: {self.documents} documents, {self.chunks} chunks "
                f"(+{len(self.added)} ~{len(self.changed)} -{len(self.removed)} documents; "
                f"{self.embedded} chunks embedded, {self.reused} reused) in {self.seconds:.1f}s")


def embedding_input(doc: Document, chunk: Chunk, view: str | None = None, *,
                    titled: bool = True, referent: str = "") -> tuple[str, list[tuple[int, int]]]:
    """What the encoder reads for a chunk: its context lines (the document's title, the
    section heading, the header row of a table the chunk starts inside, and `referent`: the
    sentence a chunk opening with "They ..." refers back to, see `referents`), then its visible
    text (`view`, default the text); and the sentence spans relative to that input. Context
    helps retrieval and is never cited. `titled=False` leaves the title out where it tells
    passages apart from nothing (a corpus of one document), using it only when there is no
    heading."""
    view = doc.text if view is None else view
    title = doc.title if titled or not chunk.heading else ""
    heading = chunk.heading if chunk.heading != title else ""
    context = (title, heading, _table_header(doc, chunk, view), referent)
    prefix = "".join(f"{c}\n" for c in context if c)
    shift = len(prefix) - chunk.start
    return prefix + view[chunk.start : chunk.end], [(s + shift, e + shift)
                                                    for s, e in chunk.sentences]


def referents(chunks: Sequence[Chunk], views: Mapping[str, str]) -> list[str]:
    """For each chunk that opens by referring back ("They are most common in ...", "This
    ..."), the last sentence of the chunk before it in its document, which usually names what
    it refers to; "" for the others. The chunk's own vector and terms then carry the subject
    its first sentence leaves out (an answer sentence otherwise sits in a passage that never
    names its topic). Capped at REFERENT_MAX_CHARS."""
    out = [""] * len(chunks)
    for i in range(1, len(chunks)):
        chunk, before = chunks[i], chunks[i - 1]
        if before.doc_id != chunk.doc_id or not chunk.sentences or not before.sentences:
            continue
        view = views[chunk.doc_id]
        start, end = chunk.sentences[0]
        if REFERS_BACK.match(view[start:end].lstrip(_BULLETS)):
            start, end = before.sentences[-1]
            out[i] = " ".join(view[start : min(end, start + REFERENT_MAX_CHARS)].split())
    return out


def titles_distinguish(documents: int) -> bool:
    """Whether titles join the passages' context: a title every passage shares (a corpus of
    one document) only dilutes them."""
    return documents > 1


def _table_header(doc: Document, chunk: Chunk, view: str) -> str:
    """The header row of the Markdown table a chunk starts inside ('' if none)."""
    if not markup.is_markdown(doc.id):
        return ""
    line_start, _ = markup.line_bounds(doc.text, chunk.start)
    return " | ".join(markup.table_header(doc.text, view, line_start))


def lexical_terms(doc: Document, chunk: Chunk, view: str | None = None,
                  referent: str = "") -> list[str]:
    """What BM25 counts for a chunk: the title, heading, table header and referent (as in
    `embedding_input`), then its visible text."""
    view = doc.text if view is None else view
    return lexical.terms(f"{doc.title}\n{chunk.heading}\n{_table_header(doc, chunk, view)}\n"
                         f"{referent}\n{view[chunk.start:chunk.end]}")


def parse_limits(settings: Settings) -> ParseLimits:
    return ParseLimits(settings.parse_timeout, settings.parse_memory_mb)


def corpus_fingerprint(corpus_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in iter_files(corpus_dir):
        digest.update(path.relative_to(corpus_dir).as_posix().encode() + b"\0")
        digest.update(store.sha256_file(path).encode())
    return digest.hexdigest()


def settings_fingerprint(settings: Settings, model: ModelInfo, kind: str) -> str:
    parts = [CHUNKER_VERSION, settings.chunk_chars, kind, model.fingerprint, INPUT_VERSION]
    if kind == OnnxEncoder.kind:
        parts.append(ONNX_EXPORT)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def encoder_folder(index_dir: Path, kind: str, model: ModelInfo) -> Path:
    export = f"-e{ONNX_EXPORT}" if kind == OnnxEncoder.kind else ""
    return index_dir / "encoders" / f"{kind}-{model.fingerprint}{export}"


def open_encoder(settings: Settings, model: ModelInfo, threads: int,
                 index_dir: Path | None = None) -> Encoder:
    """The configured encoder; the ONNX one is exported into the index folder on first use."""
    if settings.encoder == "torch":
        return TorchEncoder(model, threads)
    folder = encoder_folder(index_dir or settings.index_dir, OnnxEncoder.kind, model)
    export_onnx(model, folder)
    return OnnxEncoder(folder, model, threads)


def is_stale(settings: Settings) -> str | None:
    """Why the served index should be rebuilt, or None when it matches corpus and settings."""
    try:
        version = store.current_version(settings.index_dir)
        if version is None:
            return "no index yet"
        manifest = store.read_manifest(settings.index_dir / "versions" / version)
    except store.IndexUnavailable as exc:
        return str(exc)
    if manifest.get("corpus_hash") != corpus_fingerprint(settings.corpus_dir):
        return "the corpus changed"
    model = describe_model(settings.model_dir)
    if manifest.get("settings_hash") != settings_fingerprint(settings, model, settings.encoder):
        return "the model or chunking settings changed"
    return None


@dataclass
class _Previous:
    keys: dict[str, int]
    vectors: np.ndarray
    sentence_vectors: np.ndarray
    sentence_ptr: np.ndarray
    doc_hashes: dict[str, str]


def _load_previous(index_dir: Path, settings_hash: str) -> _Previous | None:
    """The served version's embeddings, if they were made with the same settings and are intact."""
    version = store.current_or_none(index_dir)
    if version is None:
        return None
    folder = index_dir / "versions" / version
    try:
        manifest = store.verify(folder)
    except store.IndexUnavailable as exc:
        log.warning("not reusing %s: %s", version, exc)
        return None
    try:
        documents = layout.read_documents(folder)
        doc_hashes = {d.id: _text_hash(d.text) for d in layout.all_documents(documents)}
        if manifest.get("settings_hash") != settings_hash:
            return _Previous({}, np.empty((0, 0)), np.empty((0, 0)), np.zeros(1, np.int64),
                             doc_hashes)
        table = layout.read_chunks(folder, documents.ids)
        return _Previous(
            keys={key: i for i, key in enumerate(layout.keys_of(table)) if key},
            vectors=np.load(folder / VECTORS, allow_pickle=False, mmap_mode="r"),
            sentence_vectors=np.load(folder / SENTENCE_VECTORS, allow_pickle=False,
                                     mmap_mode="r"),
            sentence_ptr=np.asarray(table.sentence_ptr),
            doc_hashes=doc_hashes,
        )
    except (OSError, ValueError, KeyError) as exc:
        log.warning("not reusing %s: %s", version, exc)
        return None


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_index(
    settings: Settings,
    *,
    corpus_dir: Path | None = None,
    index_dir: Path | None = None,
    strict: bool = False,
    force: bool = False,
    encoder: Encoder | None = None,
    progress: Callable[[str], None] = log.info,
    tracker: Progress | None = None,
    shards: Path | None = None,
) -> BuildReport:
    """Build and publish a new version, or return early if nothing changed (unless `force`).
    `progress` gets the build's messages; `tracker` counts files read and chunks embedded.
    With `shards`, the chunks to embed are taken from the shards embedded into that folder
    (service.index.shards) instead of the model: the merge."""
    corpus_dir = corpus_dir or settings.corpus_dir
    index_dir = index_dir or settings.index_dir
    started = time.perf_counter()
    with store.build_lock(index_dir):
        model = encoder.model if encoder else describe_model(settings.model_dir)
        kind = encoder.kind if encoder else settings.encoder
        settings_hash = settings_fingerprint(settings, model, kind)
        corpus_hash = corpus_fingerprint(corpus_dir)
        current = store.current_or_none(index_dir)
        if current and not force:
            try:
                manifest = store.read_manifest(index_dir / "versions" / current)
            except store.IndexUnavailable:
                manifest = {}
            if (manifest.get("corpus_hash"), manifest.get("settings_hash")) == (
                    corpus_hash, settings_hash):
                return BuildReport(current, False, manifest.get("documents", 0),
                                   manifest.get("chunks", 0),
                                   reason="corpus and settings unchanged")
        if tracker:
            tracker.stage("reading files", sum(1 for _ in visible_files(corpus_dir)))
        docs, problems = read_documents(
            corpus_dir, settings.max_file_bytes, limits=parse_limits(settings),
            cache_dir=index_dir / EXTRACTED, threads=settings.build_threads,
            on_file=(lambda _: tracker.advance()) if tracker else None)
        if strict and problems:
            raise BuildError("; ".join(str(p) for p in problems))
        if kind == OnnxEncoder.kind:
            export_onnx(model, encoder_folder(index_dir, kind, model))
        embedded = None
        if shards is not None:
            from service.index.shards import collect  # it builds on this module

            def embedded(plan: Plan) -> tuple[np.ndarray, list[np.ndarray]]:
                return collect(shards, plan, settings_hash, model.dimension)

        report = _build(settings, docs, problems, corpus_hash, settings_hash, model, kind,
                        index_dir, encoder, progress, tracker, embedded)
        report.seconds = time.perf_counter() - started
        _write_build_time(index_dir, report)
        progress(report.summary())
        store.prune(index_dir, settings.keep_versions)
        return report


def _write_build_time(index_dir: Path, report: BuildReport) -> None:
    # Recorded beside, not inside, the version: its manifest is already checksummed and final.
    path = index_dir / "versions" / str(report.version) / "build.json"
    path.write_text(json.dumps(asdict(report), indent=2), "utf-8")


@dataclass
class Plan:
    """A build's passages and which of them need the model: what a one-shot build, each
    embedding shard and the merge of shards all compute the same way from the same inputs."""

    docs: list[Document]
    by_id: dict[str, Document]
    views: dict[str, str]
    chunks: list[Chunk]
    inputs: list[tuple[str, list[tuple[int, int]]]]
    referents: list[str]  # see referents(): read by the encoder (in `inputs`) and by BM25
    keys: list[str]
    previous: _Previous | None
    todo: list[int]  # chunks whose embeddings are not reused, in chunk order

    @property
    def fingerprint(self) -> str:
        """Names exactly the work left: the keys to embed, in order (so the same batches)."""
        return hashlib.sha256("\n".join(self.keys[i] for i in self.todo).encode()).hexdigest()[:32]


def plan_build(settings: Settings, docs: list[Document], model: ModelInfo, kind: str,
               index_dir: Path, settings_hash: str) -> Plan:
    """Split the documents and find which chunks' embeddings the served version already has."""
    by_id = {d.id: d for d in docs}
    views = {d.id: markup.view_of(d.id, d.text) for d in docs}
    chunks = [c for d in docs for c in split(d, settings.chunk_chars, views[d.id])]
    if not chunks:
        raise BuildError("the documents contain no text to index")
    titled = titles_distinguish(len(by_id))
    referred = referents(chunks, views)
    inputs = [embedding_input(by_id[c.doc_id], c, views[c.doc_id], titled=titled, referent=r)
              for c, r in zip(chunks, referred, strict=True)]
    keys = [_chunk_key(model, kind, text, spans) for text, spans in inputs]
    previous = _load_previous(index_dir, settings_hash)
    todo = [i for i, key in enumerate(keys) if not (previous and key in previous.keys)]
    return Plan(docs, by_id, views, chunks, inputs, referred, keys, previous, todo)


def _build(
    settings: Settings, docs: list[Document], problems: Sequence[Problem], corpus_hash: str,
    settings_hash: str, model: ModelInfo, kind: str, index_dir: Path, encoder: Encoder | None,
    progress: Callable[[str], None], tracker: Progress | None = None,
    embedded: Callable[[Plan], tuple[np.ndarray, list[np.ndarray]]] | None = None,
) -> BuildReport:
    """`embedded(plan)`, when given, supplies the vectors of `plan.todo` (the merge of
    shards); otherwise they are embedded here."""
    version = store.new_version_name()
    plan = plan_build(settings, docs, model, kind, index_dir, settings_hash)
    by_id, views, chunks, keys, previous = (plan.by_id, plan.views, plan.chunks, plan.keys,
                                            plan.previous)
    report = BuildReport(version, True, len(docs), len(chunks),
                         skipped=[str(p) for p in problems])
    if previous:
        report.added = [d.id for d in docs if d.id not in previous.doc_hashes]
        report.changed = [d.id for d in docs if d.id in previous.doc_hashes
                          and previous.doc_hashes[d.id] != _text_hash(d.text)]
        report.removed = sorted(set(previous.doc_hashes) - set(by_id))
    else:
        report.added = [d.id for d in docs]

    staging = store.staging_dir(index_dir, version)
    try:
        _write_vectors(settings, model, kind, index_dir, encoder, plan, report, staging,
                       progress, tracker, embedded)
        vectors = layout.mapped(staging / VECTORS)
        layout.write_documents(staging, docs)
        layout.write_chunks(staging, chunks, {d.id: i for i, d in enumerate(docs)}, keys)
        dense, dense_record = dense_index(vectors, settings.build_threads)
        faiss.write_index(dense, str(staging / DENSE))
        lexical.save(lexical.build(lexical_terms(by_id[c.doc_id], c, views[c.doc_id], r)
                                   for c, r in zip(chunks, plan.referents, strict=True)), staging)
        seen = {d.id: Document(d.id, d.title, views[d.id]) for d in docs}
        termsets.save(staging, termsets.passage_words(seen, chunks),
                      termsets.sentence_terms(seen, chunks))
        layout.write_acronyms(staging, acronyms.learn(views.values()))
        encoder_info = _encoder_record(kind, model, index_dir)
        manifest = {
            "version": version,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": {"name": model.name, "fingerprint": model.fingerprint,
                      "dimension": model.dimension, "max_seq_length": model.max_seq_length},
            "encoder": encoder_info,
            "chunker": {"version": CHUNKER_VERSION, "max_chars": settings.chunk_chars},
            "settings_hash": settings_hash,
            "corpus_hash": corpus_hash,
            "documents": len(docs),
            "chunks": len(chunks),
            "sentences": int(sum(len(c.sentences) for c in chunks)),
            **dense_record,
            "skipped": [str(p) for p in problems],
        }
        del vectors
        store.publish(index_dir, staging, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _write_vectors(
    settings: Settings, model: ModelInfo, kind: str, index_dir: Path, encoder: Encoder | None,
    plan: Plan, report: BuildReport, staging: Path, progress: Callable[[str], None],
    tracker: Progress | None,
    embedded: Callable[[Plan], tuple[np.ndarray, list[np.ndarray]]] | None,
) -> None:
    """Passage and sentence vectors, reused or embedded, written straight into the version's
    files (mapped) as they come: a million passages' sentence vectors held as arrays while the
    build runs took gigabytes."""
    chunks, previous, todo = plan.chunks, plan.previous, plan.todo
    sizes = np.array([len(c.sentences) for c in chunks], dtype=np.int64)
    ptr = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    vectors = np.lib.format.open_memmap(staging / VECTORS, mode="w+", dtype=np.float32,
                                        shape=(len(chunks), model.dimension))
    # Stored as float16, as published.
    sentence_vectors = np.lib.format.open_memmap(staging / SENTENCE_VECTORS, mode="w+",
                                                 dtype=np.float16,
                                                 shape=(int(ptr[-1]), model.dimension))
    if previous is not None:
        for i, key in enumerate(plan.keys):
            j = previous.keys.get(key)
            if j is not None:
                vectors[i] = previous.vectors[j]
                lo, hi = previous.sentence_ptr[j], previous.sentence_ptr[j + 1]
                sentence_vectors[ptr[i] : ptr[i + 1]] = previous.sentence_vectors[lo:hi]
    report.reused, report.embedded = len(chunks) - len(todo), len(todo)

    def keep(rows: list[int], pooled: np.ndarray, sentences: list[np.ndarray]) -> None:
        """Results for positions `rows` of `todo`."""
        targets = [todo[r] for r in rows]
        vectors[targets] = pooled
        for i, matrix in zip(targets, sentences, strict=True):
            if len(matrix) != sizes[i]:
                raise BuildError(f"the encoder gave {len(matrix)} sentence vectors for a "
                                 f"passage of {sizes[i]} sentences")
            sentence_vectors[ptr[i] : ptr[i + 1]] = matrix

    if todo:
        progress(f"embedding {len(todo)} chunks ({report.reused} reused)")
        if tracker:
            tracker.stage("embedding chunks", len(todo))
        if embedded is not None:
            new_vectors, new_spans = embedded(plan)
            keep(list(range(len(todo))), new_vectors, new_spans)
        else:
            inputs = plan.inputs
            _embed(settings, model, kind, index_dir, encoder, [inputs[i][0] for i in todo],
                   [inputs[i][1] for i in todo], keep, tracker.advance if tracker else None)
    vectors.flush()
    sentence_vectors.flush()


def _embed(settings: Settings, model: ModelInfo, kind: str, index_dir: Path,
           encoder: Encoder | None, texts: list[str], spans: list[list[tuple[int, int]]],
           sink: embedding.Sink, done: Callable[[int], None] | None) -> None:
    """Embed the passages, handing results to `sink(rows, vectors, sentence vectors)`: over
    worker processes (QA_BUILD_PROCESSES) with the ONNX encoder when there are enough
    passages, else in this process on QA_BUILD_THREADS. Both cut the same batches."""
    batches = plan_batches(texts)
    processes = process_count(settings.build_processes, len(texts))
    if encoder is None and kind == OnnxEncoder.kind and processes > 1:
        folder = encoder_folder(index_dir, kind, model)
        export_onnx(model, folder)
        embedding.encode_batches(folder, model, texts, spans, batches, processes, sink, done)
        return
    enc = encoder or open_encoder(settings, model, settings.build_threads, index_dir)
    # Whole batches in the encoder's order, a slice at a time: the encoder batches each slice
    # exactly as it would batch everything, and results leave float32 slice by slice.
    part: list[int] = []
    for n, batch in enumerate(batches):
        part.extend(batch)
        if len(part) >= EMBED_SLICE or n == len(batches) - 1:
            pooled, sentences = enc.encode_passages([texts[i] for i in part],
                                                    [spans[i] for i in part], done=done)
            sink(part, pooled, sentences)
            part = []


def dense_index(vectors: np.ndarray, threads: int = 1, flat_max: int | None = None,
                ivfpq_min: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The FAISS index over these unit vectors and its manifest record: exact inner product up
    to `flat_max` (default FLAT_MAX) vectors, HNSW above, IVF-PQ from `ivfpq_min` (default
    IVFPQ_MIN) on, built on `threads` threads."""
    n, dimension = vectors.shape
    if n <= (FLAT_MAX if flat_max is None else flat_max):
        flat = faiss.IndexFlatIP(dimension)
        flat.add(vectors)
        return flat, {"dense_index": "flat-ip"}
    if n >= (IVFPQ_MIN if ivfpq_min is None else ivfpq_min):
        return ivf_pq(vectors, threads)
    params: dict[str, Any] = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    hnsw: Any
    if n > HNSW_CODES_OVER:
        codes: Any = faiss.ScalarQuantizer.QT_8bit  # an int where the stubs want a class
        hnsw = faiss.IndexHNSWSQ(dimension, codes, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        params["codes"] = "sq8"
    else:
        hnsw = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    ef_search = (HNSW_EF_SEARCH_CODES if "codes" in params else
                 HNSW_EF_SEARCH if n <= HNSW_LARGE else HNSW_EF_SEARCH_LARGE)
    hnsw.hnsw.efSearch = params["efSearch"] = ef_search
    # The thread count is process-wide: restore it, a serving process searches on one thread.
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        hnsw.train(vectors)  # the codes' range per dimension; nothing for float copies
        hnsw.add(vectors)
    finally:
        faiss.omp_set_num_threads(previous)
    return hnsw, {"dense_index": "hnsw", "dense_params": params}


def ivf_pq_shape(n: int, dimension: int) -> tuple[int, int, int]:
    """Lists, sub-quantizers and training vectors for `n` vectors: about 4 sqrt(n) lists (a
    power of two), one sub-quantizer per 8 dimensions (48 bytes a vector at 384), and enough
    training vectors for both k-means (at least 39 per centroid, FAISS's floor)."""
    lists = 1 << max(4, min(round(math.log2(4 * math.sqrt(n))), int(math.log2(max(16, n // 39)))))
    subquantizers = max(d for d in range(1, max(1, dimension // 8) + 1) if dimension % d == 0)
    train = min(n, max(IVFPQ_TRAIN_PER_LIST * lists, 39 * (1 << IVFPQ_BITS)))
    return lists, subquantizers, train


def ivf_pq(vectors: np.ndarray, threads: int = 1, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """IVF-PQ over these unit vectors (inner product), trained on an evenly spread sample."""
    n, dimension = vectors.shape
    lists, subquantizers, train = ivf_pq_shape(n, dimension)
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFPQ(quantizer, dimension, lists, subquantizers, IVFPQ_BITS,
                             faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = index.pq.cp.seed = seed
    sample = np.ascontiguousarray(vectors[np.linspace(0, n - 1, train).astype(np.int64)],
                                  dtype=np.float32)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        index.train(sample)
        del sample
        for lo in range(0, n, EMBED_SLICE * 16):  # added in slices: vectors may be mapped
            index.add(np.ascontiguousarray(vectors[lo : lo + EMBED_SLICE * 16],
                                           dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(previous)
    index.nprobe = IVFPQ_NPROBE
    return index, {"dense_index": "ivf-pq", "dense_params": {
        "lists": lists, "subquantizers": subquantizers, "bits": IVFPQ_BITS,
        "nprobe": IVFPQ_NPROBE, "refine": IVFPQ_REFINE}}


def _chunk_key(model: ModelInfo, kind: str, text: str, spans: list[tuple[int, int]]) -> str:
    payload = json.dumps([model.fingerprint, kind, text, spans], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _encoder_record(kind: str, model: ModelInfo, index_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": kind}
    if kind == OnnxEncoder.kind:
        folder = encoder_folder(index_dir, OnnxEncoder.kind, model)
        record["folder"] = folder.relative_to(index_dir).as_posix()
        record["files"] = {p.name: store.sha256_file(p) for p in sorted(folder.iterdir())}
    return record
