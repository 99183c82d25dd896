"""BM25 over stemmed terms, stored as plain arrays (no pickles) and scored with numpy."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import Stemmer

_WORD = re.compile(r"\w+")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves s t ll re ve d m""".split()
)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def terms(text: str) -> list[str]:
    """Lower-cased, stemmed content words: the unit BM25 counts."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]
    return list(_stemmer().stemWords(words))


@dataclass(frozen=True)
class LexicalIndex:
    """Term-major postings with each (term, passage) BM25 weight precomputed."""

    vocabulary: dict[str, int]
    indptr: np.ndarray  # int64, len(vocabulary) + 1
    postings: np.ndarray  # int32 passage numbers
    weights: np.ndarray  # float32 BM25 weights
    idf: np.ndarray  # float32 per term
    size: int  # number of passages

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every passage for the query (zeros where no term matches)."""
        out = np.zeros(self.size, dtype=np.float32)
        for term in set(query_terms):
            tid = self.vocabulary.get(term)
            if tid is not None:
                lo, hi = self.indptr[tid], self.indptr[tid + 1]
                out[self.postings[lo:hi]] += self.weights[lo:hi]
        return out

    def top(self, query_terms: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best passages with a positive score, best first."""
        return best(self.scores(query_terms), k)


    def term_idf(self, term: str) -> float:
        """IDF of a term; one the corpus never uses weighs as much as a typical corpus term: it
        may name something the text lacks ("Australia") or just be phrasing ("earn"), so it
        should neither vanish from the question nor dominate it."""
        tid = self.vocabulary.get(term)
        if tid is not None:
            return float(self.idf[tid])
        return float(self.idf.mean()) if len(self.idf) else 1.0


# Above this many passages, `best` looks only at the passages with a score.
SPARSE_OVER = 200_000


def best(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k highest positive scores, highest first."""
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if len(scores) > SPARSE_OVER:
        # On a large corpus a question's terms touch a small part of it: choose among those
        # (partitioning a million scores took ~5 ms, finding the non-zero ones ~0.5 ms).
        touched = np.flatnonzero(scores)
        if k < len(touched):
            touched = touched[np.argpartition(-scores[touched], k - 1)[:k]]
        idx = touched[np.argsort(-scores[touched], kind="stable")]
        return idx, scores[idx]
    # argpartition first: a full sort of every passage costs far more on large corpora.
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    idx = idx[scores[idx] > 0]
    return idx, scores[idx]


def build(passages: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> LexicalIndex:
    """BM25 (Lucene's idf) over passages given as term lists."""
    counts = [Counter(p) for p in passages]
    lengths = np.array([len(p) for p in passages], dtype=np.float32)
    avg = float(lengths.mean()) if len(passages) and lengths.mean() > 0 else 1.0
    vocabulary: dict[str, int] = {}
    columns: list[list[tuple[int, int]]] = []
    for pid, counter in enumerate(counts):
        for term, tf in counter.items():
            tid = vocabulary.setdefault(term, len(vocabulary))
            if tid == len(columns):
                columns.append([])
            columns[tid].append((pid, tf))
    n = len(passages)
    indptr = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(c) for c in columns])
    postings = np.empty(int(indptr[-1]), dtype=np.int32)
    weights = np.empty(int(indptr[-1]), dtype=np.float32)
    idf = np.empty(len(vocabulary), dtype=np.float32)
    for tid, column in enumerate(columns):
        df = len(column)
        idf[tid] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        lo = indptr[tid]
        for j, (pid, tf) in enumerate(column):
            norm = k1 * (1.0 - b + b * lengths[pid] / avg)
            postings[lo + j] = pid
            weights[lo + j] = idf[tid] * tf * (k1 + 1.0) / (tf + norm)
    return LexicalIndex(vocabulary, indptr, postings, weights, idf, n)


FILES = ("lexical_vocabulary.json", "lexical_arrays.npz")
# Separate .npy files (not the .npz versions before them had) so that loading maps them.
ARRAYS = ("lexical_indptr.npy", "lexical_postings.npy", "lexical_weights.npy",
          "lexical_idf.npy")


def save(index: LexicalIndex, folder: Path) -> list[Path]:
    vocab_path = folder / FILES[0]
    terms_in_order = sorted(index.vocabulary, key=index.vocabulary.__getitem__)
    vocab_path.write_text(json.dumps({"size": index.size, "terms": terms_in_order}), "utf-8")
    paths = [folder / name for name in ARRAYS]
    for path, array in zip(paths, (index.indptr, index.postings, index.weights, index.idf),
                           strict=True):
        np.save(path, array, allow_pickle=False)
    return [vocab_path, *paths]


def load(folder: Path) -> LexicalIndex:
    meta = json.loads((folder / FILES[0]).read_text("utf-8"))
    if (folder / ARRAYS[0]).is_file():
        # Mapped read-only, as plain ndarray views (np.memmap's indexing is slow Python).
        indptr, postings, weights, idf = (
            np.load(folder / name, allow_pickle=False, mmap_mode="r").view(np.ndarray)
            for name in ARRAYS)
    else:
        with np.load(folder / FILES[1], allow_pickle=False) as arrays:
            indptr, postings = arrays["indptr"], arrays["postings"]
            weights, idf = arrays["weights"], arrays["idf"]
    vocabulary = {term: i for i, term in enumerate(meta["terms"])}
    if len(indptr) != len(vocabulary) + 1 or len(postings) != len(weights):
        raise ValueError("lexical index arrays do not match its vocabulary")
    return LexicalIndex(vocabulary, indptr, postings, weights, idf, int(meta["size"]))
