"""Loading a published version and finding the passages for a question (dense + BM25, fused)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from service.index import acronyms, layout, lexical, store, termsets
from service.index.encoder import ModelInfo
from service.index.indexing import CHUNKER_VERSION, DENSE, SENTENCE_VECTORS, VECTORS
from service.ingest.chunking import Chunk
from service.ingest.corpus import Document

log = logging.getLogger(__name__)

# Weights of the fused score: the passage's cosine, its BM25 score, and its best sentence's
# cosine (the evidence an answer would quote), each first divided by the best candidate's.
# Chosen on the dev halves of the evaluation sets (see README, "Quality").
DENSE_WEIGHT = 0.4
LEXICAL_WEIGHT = 0.5
SENTENCE_WEIGHT = 0.2
CANDIDATES = 50
DUPLICATE_COSINE = 0.97
DUPLICATE_OVERLAP = 0.8
# FAISS maps the stored vectors of flat and HNSW indexes from the file instead of copying them.
MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY


@dataclass(frozen=True)
class SearchIndex:
    """One loaded, verified version: everything a question needs, read-only."""

    version: str
    manifest: dict[str, Any]
    documents: Mapping[str, Document]  # read from the version when first asked for
    # What readers see of each document (Markdown markup blanked, same offsets): what answers
    # quote. The same string as the text for formats without markup.
    views: Mapping[str, str]
    chunks: Sequence[Chunk]  # arrays; each Chunk made when asked for
    vectors: layout.Rows  # read by rows, not mapped (see layout.Rows)
    dense: Any  # faiss.Index
    sentence_vectors: layout.Rows
    sentence_ptr: np.ndarray
    lexical: lexical.LexicalIndex
    # Made at build time: per question they would cost more than everything but the encoder.
    chunk_words: termsets.TermSets  # each passage's words, for near-duplicate checks
    sentence_terms: termsets.TermSets  # each sentence's lexical terms, in sentence order
    acronyms: acronyms.Acronyms  # abbreviations the corpus defines, learned at load

    def text(self, i: int) -> str:
        chunk = self.chunks[i]
        return self.documents[chunk.doc_id].text[chunk.start : chunk.end]

    def sentence_matrix(self, i: int) -> np.ndarray:
        lo, hi = self.sentence_ptr[i], self.sentence_ptr[i + 1]
        return self.sentence_vectors[lo:hi].astype(np.float32)


def check_compatible(manifest: dict[str, Any], model: ModelInfo, kind: str,
                     chunk_chars: int | None = None) -> None:
    """Refuse an index made with another model, dimension, encoder or chunker (and, when
    `chunk_chars` is given, another chunk size), saying how to fix it."""
    chunker = manifest.get("chunker", {})
    if chunker.get("version") != CHUNKER_VERSION or (
            chunk_chars is not None and chunker.get("max_chars") != chunk_chars):
        wanted = f"chunker {CHUNKER_VERSION}" + (
            f" with QA_CHUNK_CHARS={chunk_chars}" if chunk_chars is not None else "")
        raise store.IndexUnavailable(
            f"index {manifest.get('version')} was split by chunker {chunker.get('version')} "
            f"with QA_CHUNK_CHARS={chunker.get('max_chars')}, but the service is configured "
            f"for {wanted}: rebuild with `make index`")
    built = manifest.get("model", {})
    if built.get("fingerprint") != model.fingerprint or built.get("dimension") != model.dimension:
        raise store.IndexUnavailable(
            f"index {manifest.get('version')} was built with model {built.get('name')!r} "
            f"({built.get('dimension')} dimensions), but the service is configured for "
            f"{model.name!r} ({model.dimension} dimensions): rebuild with `make index`")
    if manifest.get("encoder", {}).get("kind") != kind:
        raise store.IndexUnavailable(
            f"index {manifest.get('version')} was embedded with encoder "
            f"{manifest.get('encoder', {}).get('kind')!r}, the service uses {kind!r}: "
            f"rebuild with `make index`")


def load_index(index_dir: Path, version: str | None = None) -> SearchIndex:
    """Load and verify a version (default: the current one)."""
    version = version or store.current_version(index_dir)
    if version is None:
        raise store.IndexUnavailable(f"no index in {index_dir}: run `make index`")
    folder = index_dir / "versions" / version
    # Big files are checked by size and samples here, in full by the engine once serving.
    manifest = store.verify(folder, quick=True)
    try:
        # Documents are read one at a time when a question needs them, chunks are arrays,
        # and every big array is memory-mapped, read-only: the page cache holds one copy of a
        # version for every worker process and replica on the machine, and start-up does not
        # grow with the corpus. Published versions never change, and a pruned file stays
        # mapped until released.
        documents = layout.read_documents(folder)
        chunks = layout.read_chunks(folder, documents.ids)
        vectors = layout.Rows(folder / VECTORS)
        sentence_vectors = layout.Rows(folder / SENTENCE_VECTORS)
        dense = faiss.read_index(str(folder / DENSE), MMAP_FLAGS)
        lex = lexical.load(folder)
        views = layout.Views(documents)
        words, sentence_terms = termsets.load(
            folder, {d: Document(d, doc.title, views[d]) for d, doc in documents.items()}
            if not termsets.stored(folder) else {}, chunks)
        learned = layout.read_acronyms(folder, views)
    except (OSError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise store.IndexUnavailable(
            f"index {version} cannot be read ({exc}): run `make index`") from exc
    ptr = chunks.sentence_ptr
    dimension = manifest.get("model", {}).get("dimension")
    if (len(vectors) != len(chunks) or dense.ntotal != len(chunks) or lex.size != len(chunks)
            or len(sentence_vectors) != ptr[-1] or vectors.ndim != 2
            or vectors.shape[1] != dimension or dense.d != dimension
            or len(words) != len(chunks) or len(sentence_terms) != ptr[-1]):
        raise store.IndexUnavailable(f"index {version} is inconsistent: run `make index`")
    faiss.omp_set_num_threads(1)
    if manifest.get("dense_index") == "hnsw":
        graph: Any = faiss.downcast_index(dense)
        graph.hnsw.efSearch = int(manifest["dense_params"]["efSearch"])
    elif manifest.get("dense_index") == "ivf-pq":
        inverted: Any = faiss.downcast_index(dense)
        inverted.nprobe = int(manifest["dense_params"]["nprobe"])
    return SearchIndex(version, manifest, documents, views, chunks, vectors, dense,
                       sentence_vectors,
                       ptr, lex, words, sentence_terms, learned)


@dataclass(frozen=True)
class Hit:
    chunk: int
    score: float  # fused, 0..1
    dense: float  # cosine
    lexical: float  # raw BM25
    # The passage's sentence vectors as float32 (SearchIndex.sentence_matrix), when retrieval
    # read them already: answer scoring then does not read them again.
    sentences: np.ndarray | None = field(default=None, repr=False, compare=False)


def retrieve(index: SearchIndex, query_vector: np.ndarray, query_terms: list[str], k: int,
             candidates: int = CANDIDATES) -> list[Hit]:
    """The k best distinct passages: dense and BM25 candidates, each score scaled by its best
    candidate's, blended, then near-duplicates of better passages dropped."""
    n = min(candidates, len(index.chunks))
    if index.dense.ntotal >= PARALLEL_DENSE_FROM:
        # FAISS searches without the GIL: the graph search runs beside BM25's.
        searching = _dense_pool().submit(dense_candidates, index, query_vector, n)
        lex_ids, lex_scores = index.lexical.candidates(query_terms, n)
        dense_ids = searching.result()
    else:
        dense_ids = dense_candidates(index, query_vector, n)
        lex_ids, lex_scores = index.lexical.candidates(query_terms, n)
    pool = np.unique(np.concatenate([dense_ids, lex_ids]))
    if len(pool) == 0:
        return []
    pool_vectors = index.vectors[pool]
    dense = pool_vectors @ query_vector
    lex = lex_scores(pool)
    fused = DENSE_WEIGHT * dense / max(float(dense.max()), 1e-6)
    if lex.max() > 0:
        fused += LEXICAL_WEIGHT * lex / float(lex.max())
    # Read for the blend and kept on the hits, whose sentences the answer scores next.
    rows, starts, sizes = pool_sentences(index, pool)
    sentence = best_of(rows @ query_vector, starts)
    fused += SENTENCE_WEIGHT * sentence / max(float(sentence.max()), 1e-6)
    fused /= DENSE_WEIGHT + LEXICAL_WEIGHT + SENTENCE_WEIGHT  # a score in 0..1
    order = np.argsort(-fused, kind="stable")
    hits: list[Hit] = []
    kept_words: list[frozenset[int]] = []
    kept: list[int] = []  # positions in the pool
    for j in order:
        i = int(pool[j])
        words = index.chunk_words.get(i)
        if any(_overlap(words, w) >= DUPLICATE_OVERLAP for w in kept_words) or any(
            float(pool_vectors[h] @ pool_vectors[j]) >= DUPLICATE_COSINE for h in kept
        ):
            continue
        hits.append(Hit(i, float(fused[j]), float(dense[j]), float(lex[j]),
                        rows[starts[j] : starts[j] + sizes[j]]))
        kept_words.append(words)
        kept.append(int(j))
        if len(hits) == k:
            break
    return hits


# From this many passages the dense search (HNSW, ~0.5-1 ms) runs in a thread of its own while
# BM25 runs in the question's: at a million passages the two took 2.1-2.3 ms one after the
# other and 1.3-1.5 ms side by side. Below it the search takes microseconds and a thread
# hand-off would cost more than it saves.
PARALLEL_DENSE_FROM = 100_000
# A few threads a process, made on first use (so never in a launcher before it forks), shared
# by every question the process answers at once.
_DENSE_THREADS = 4
_dense_executor: ThreadPoolExecutor | None = None
_dense_lock = threading.Lock()


def _dense_pool() -> ThreadPoolExecutor:
    global _dense_executor
    with _dense_lock:
        if _dense_executor is None:
            _dense_executor = ThreadPoolExecutor(_DENSE_THREADS, thread_name_prefix="dense")
        return _dense_executor


def dense_candidates(index: SearchIndex, query_vector: np.ndarray, n: int) -> np.ndarray:
    """The `n` passages nearest the question by the dense index. A compressed index (IVF-PQ)
    is asked for `refine` times more, re-scored exactly with the stored vectors."""
    params = index.manifest.get("dense_params", {})
    refine = int(params.get("refine", 1)) if index.manifest.get("dense_index") == "ivf-pq" else 1
    return refined_search(index.dense, index.vectors, query_vector, n, refine)


def refined_search(dense: Any, vectors: np.ndarray | layout.Rows, query_vector: np.ndarray, n: int,
                   refine: int = 1) -> np.ndarray:
    """The `n` best ids from `dense`; with `refine` > 1, the best n of n * refine candidates by
    their exact inner product with `vectors` (rows read in file order)."""
    query = query_vector.reshape(1, -1).astype(np.float32)
    _, found = dense.search(query, min(n * refine, dense.ntotal))
    ids: np.ndarray = found[0][found[0] >= 0]
    if refine > 1 and len(ids) > n:
        ids = np.sort(ids)
        exact = np.asarray(vectors[ids], dtype=np.float32) @ query_vector
        ids = ids[np.argsort(-exact, kind="stable")[:n]]
    return ids


def pool_sentences(index: SearchIndex, chunks: np.ndarray,
                   ) -> tuple[np.ndarray, list[int], list[int]]:
    """The sentence vectors of the passages, as float32 rows in one gather, with where each
    passage's rows start and how many there are."""
    lo = index.sentence_ptr[chunks]
    sizes = index.sentence_ptr[chunks + 1] - lo
    rows = as_float32(index.sentence_vectors.spans(lo, lo + sizes))
    return rows, (np.cumsum(sizes) - sizes).tolist(), sizes.tolist()


def best_of(cosines: np.ndarray, starts: Sequence[int]) -> np.ndarray:
    """The highest of each passage's run of sentence cosines (runs starting at `starts`)."""
    best: np.ndarray = np.maximum.reduceat(cosines, starts) if len(cosines) else cosines
    return best


def as_float32(rows: np.ndarray) -> np.ndarray:
    """Stored vectors as float32, the same floats as `rows.astype(np.float32)`. Many float16
    rows (a question's few hundred sentences) are widened with integer steps over whole
    arrays, three times as fast: numpy converts float16 one value at a time (0.3 ms a
    question at a million passages)."""
    if rows.dtype != np.float16 or len(rows) < WIDEN_FROM:
        return rows.astype(np.float32)
    bits = np.ascontiguousarray(rows).view(np.uint16).astype(np.uint32)
    sign = (bits & 0x8000) << 16
    # Exponent and mantissa moved to their float32 places: a value 2^112 times too small
    # (the exponent biases are 15 and 127), which one exact product by a power of two
    # restores, for subnormal float16 values too.
    bits &= 0x7FFF
    bits <<= 13
    widened: np.ndarray = bits.view(np.float32)
    widened *= np.float32(2.0**112)
    if len(widened) and widened.max() >= 65536:
        # Infinities or NaNs (float16's largest finite value is 65504), never in unit
        # vectors: numpy's conversion handles them.
        return rows.astype(np.float32)
    bits |= sign
    return widened


# Below this many rows numpy's own conversion is as fast (the steps above cost a few µs).
WIDEN_FROM = 16


def _overlap(a: frozenset[int], b: frozenset[int]) -> float:
    """Jaccard similarity of two passages' word sets."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)

