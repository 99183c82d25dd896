"""BM25 over stemmed terms, stored as plain arrays (no pickles) and scored with numpy."""

from __future__ import annotations

import json
import math
import re
import threading
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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
    """Term-major postings with each (term, passage) BM25 weight precomputed; each term's
    postings are in passage order."""

    vocabulary: dict[str, int]
    indptr: np.ndarray  # int64, len(vocabulary) + 1
    postings: np.ndarray  # int32 passage numbers, ascending within a term
    weights: np.ndarray  # float32 BM25 weights
    idf: np.ndarray  # float32 per term
    size: int  # number of passages
    maxweights: np.ndarray  # float32 per term: its highest weight in any passage
    _buffers: Buffers = field(default_factory=lambda: Buffers(), repr=False, compare=False)
    _bitmaps: Bitmaps = field(default_factory=lambda: Bitmaps(BITMAP_BYTES), repr=False,
                              compare=False)

    def _ids(self, query_terms: Sequence[str]) -> list[int]:
        """The query's known terms, once each, in the order every scorer below adds them (so
        a passage's score is the same float whichever computes it)."""
        return [tid for tid in (self.vocabulary.get(t) for t in dict.fromkeys(query_terms))
                if tid is not None]

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every passage for the query (zeros where no term matches): the
        exhaustive walk, one array the size of the corpus."""
        out = np.zeros(self.size, dtype=np.float32)
        for tid in self._ids(query_terms):
            lo, hi = self.indptr[tid], self.indptr[tid + 1]
            out[self.postings[lo:hi]] += self.weights[lo:hi]
        return out

    def candidates(self, query_terms: Sequence[str], k: int
                   ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """`top(query_terms, k)`'s passages, and a function giving the BM25 scores of any
        ascending passage numbers that include them (a pool they were merged into). Below
        WALK_ALL_BELOW passages one exhaustive scoring serves both; above, the top k's scores
        are reused and only the pool's other passages are looked up."""
        if self.size < WALK_ALL_BELOW:
            every = self.scores(query_terms)
            ids, _ = best(every, min(k, self.size))
            return ids, lambda pool: every[pool]
        ids, values = self.top(query_terms, k)

        def pooled(pool: np.ndarray) -> np.ndarray:
            out = np.zeros(len(pool), dtype=np.float32)
            # The top k are in the pool: found by binary search (np.isin took ten times as
            # long on a hundred passages).
            at = np.searchsorted(pool, ids)
            known = np.zeros(len(pool), dtype=bool)
            known[at] = True
            out[~known] = self.score_of(query_terms, pool[~known])
            out[at] = values
            return out

        return ids, pooled

    def score_of(self, query_terms: Sequence[str], passages: np.ndarray) -> np.ndarray:
        """BM25 scores of the given passages only, equal to `scores(query_terms)[passages]`:
        each term's postings are searched for them (they are in passage order)."""
        return self._score_ids(self._ids(query_terms), np.asarray(passages))

    def _score_ids(self, tids: Sequence[int], passages: np.ndarray) -> np.ndarray:
        out = np.zeros(len(passages), dtype=np.float32)
        for tid in tids:
            out += self._lookup(tid, passages)
        return out

    def top(self, query_terms: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best passages with a positive score, best first (ties
        in passage order): exactly what ranking `scores()` gives, mostly without walking the
        common terms' long postings (MaxScore, Turtle and Flood 1995).

        Terms are taken highest maximum weight first. Those with short postings are walked,
        adding into a reused buffer; the passages best by those partial scores are scored in
        full (the other terms looked up by binary search in their postings, which are in
        passage order), and the k-th best of them, `floor`, is a score the final k-th reaches.
        A passage no walked term contains scores at most the sum of the unwalked terms'
        maximum weights: once that sum is below `floor`, only walked passages whose partial
        score plus that sum reaches `floor` can be in the top k, and those are finished by
        `_finish`. Until then the next term is walked too; when the walk would pass
        PRUNE_SHARE of the corpus first, every posting is walked as `scores()` does."""
        tids = self._ids(query_terms)
        k = min(k, self.size)
        if not tids or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if self.size < WALK_ALL_BELOW:
            return best(self.scores(query_terms), k)
        walk = sorted(tids, key=lambda t: -float(self.maxweights[t]))
        maxima = [float(self.maxweights[t]) for t in walk]
        # unwalked[j]: the most a passage containing none of walk[:j] can score.
        unwalked = [sum(maxima[j:]) for j in range(len(walk) + 1)]
        short, budget = self.size * WALK_SHARE, self.size * PRUNE_SHARE
        buffer = self._buffers.take(self.size)
        walked: list[np.ndarray] = []
        total, floor = 0, 0.0
        try:
            for j, tid in enumerate(walk):
                if total + self._length(tid) > budget:
                    break
                lo, hi = self.indptr[tid], self.indptr[tid + 1]
                column = self.postings[lo:hi]
                # add.at: one pass over the buffer where `buffer[column] += ...` makes two
                # (a gather, then a scatter); the same float32 sums, a term's passages being
                # distinct.
                np.add.at(buffer, column, self.weights[lo:hi])
                walked.append(column)
                total += hi - lo
                rest = unwalked[j + 1]
                if j + 1 < len(walk) and self._length(walk[j + 1]) <= short:
                    continue
                touched = np.concatenate(walked) if len(walked) > 1 else column
                partial = buffer[touched]
                seeds = _best_distinct(touched, partial, SEEDS * k, len(walked))
                seeded = buffer[seeds]
                for other in walk[j + 1 :]:
                    seeded += self._lookup(other, seeds)
                floor = max(floor, _kth(seeded, k))
                # Slack for float32 rounding: partial sums add in another order than scores().
                if rest * (1 + SLACK) < floor * (1 - SLACK) or j + 1 == len(walk):
                    keep = partial + rest * (1 + SLACK) >= floor * (1 - SLACK)
                    # Too many to look up: walking the next term too lowers `rest`, so fewer
                    # reach `floor`.
                    if (j + 1 == len(walk) or np.count_nonzero(keep) <= CANDIDATES_MAX
                            or total + self._length(walk[j + 1]) > budget):
                        candidates = _distinct(touched[keep])
                        return self._finish(tids, walk[j + 1 :], maxima[j + 1 :],
                                            candidates, buffer[candidates], floor, k)
        finally:
            for column in walked:
                buffer[column] = 0
            self._buffers.give(buffer)
        return best(self.scores(query_terms), k)

    def _finish(self, tids: list[int], unwalked: list[int], maxima: list[float],
                candidates: np.ndarray, partial: np.ndarray, floor: float, k: int,
                ) -> tuple[np.ndarray, np.ndarray]:
        """The top k among `candidates` (ascending), given their scores over the walked terms
        and `floor`, a score the k-th best reaches: the unwalked terms looked up one at a time,
        each time dropping the candidates whose bound falls below `floor` or the k-th best
        partial score; then the survivors' scores summed again in `scores()`'s term order
        (the same floats), the unwalked terms' weights kept from their lookup."""
        rest = sum(maxima)
        found: dict[int, np.ndarray] = {}
        for tid, most in zip(unwalked, maxima, strict=True):
            found[tid] = weights = self._lookup(tid, candidates)
            partial += weights
            rest = max(rest - most, 0.0)
            bar = max(floor, _kth(partial, k))
            keep = partial + rest * (1 + SLACK) >= bar * (1 - SLACK)
            candidates, partial = candidates[keep], partial[keep]
            found = {t: w[keep] for t, w in found.items()}
        total = np.zeros(len(candidates), dtype=np.float32)
        for tid in tids:
            total += found[tid] if tid in found else self._lookup(tid, candidates)
        return _ranked(candidates, total, k)

    def _lookup(self, tid: int, passages: np.ndarray) -> np.ndarray:
        """The term's weight in each of the passages (ascending), 0 where it does not occur."""
        lo, hi = int(self.indptr[tid]), int(self.indptr[tid + 1])
        if lo == hi:
            return np.zeros(len(passages), dtype=np.float32)
        column = self.postings[lo:hi]
        if (hi - lo) * BITMAP_OVER >= self.size >= WALK_ALL_BELOW:
            at, there = self._bitmaps.find(tid, column, self.size, passages)
        else:
            # Searched with the postings' own type: with any other numpy converts the whole
            # postings slice first (a million-long copy per term).
            passages = passages.astype(column.dtype, copy=False)
            at = np.searchsorted(column, passages)
            # Clipped to the last posting, so that every position can be read: a passage
            # past the end is compared with the last posting and found absent.
            np.minimum(at, hi - lo - 1, out=at)
            there = column[at] == passages
        # One gather and a choice: fewer whole-array steps than masking first (this runs
        # some twenty times a question).
        found: np.ndarray = np.where(there, self.weights[lo:hi][at], np.float32(0))
        return found

    def _length(self, tid: int) -> int:
        return int(self.indptr[tid + 1] - self.indptr[tid])

    def term_idf(self, term: str) -> float:
        """IDF of a term; one the corpus never uses weighs as much as a typical corpus term: it
        may name something the text lacks ("Australia") or just be phrasing ("earn"), so it
        should neither vanish from the question nor dominate it."""
        tid = self.vocabulary.get(term)
        if tid is not None:
            return float(self.idf[tid])
        return float(self.idf.mean()) if len(self.idf) else 1.0


# `top` walks the terms in at most WALK_SHARE of the passages before it scores anything in
# full (walking them is cheap next to looking them up for their passages); it walks every
# posting once the walk would pass PRUNE_SHARE of the passages (pruning would save little).
# It scores SEEDS times k passages in full to set the floor, and walks on rather than look up
# more than CANDIDATES_MAX candidates (the slow tail: a weak floor). Chosen on the million
# passages of bench/large_corpus.py (CPU time of the top 50 over 200 questions: median about
# 3 ms, mean 5, against about 38 ms for the full walk).
WALK_SHARE = 0.03
# Below this many passages `top` walks every posting: the pruning's bookkeeping costs more than
# it saves (the shipped 16-passage corpus: 19 µs walked against ~120 µs pruned).
WALK_ALL_BELOW = 20_000
PRUNE_SHARE = 0.5
SEEDS = 2
CANDIDATES_MAX = 20_000
SLACK = 1e-4
# Terms in at least 1/BITMAP_OVER of the passages are looked up through a bitmap (Bitmaps),
# which then takes no more than 3/4 of the memory of their postings: on the million passages
# of bench/large_corpus.py, 89 terms, 17 MB if every one is used. BITMAP_BYTES bounds it.
BITMAP_OVER = 16
BITMAP_BYTES = 64 << 20


def _distinct(ids: np.ndarray) -> np.ndarray:
    """The distinct values, ascending: sorting, since numpy 2's hashing np.unique took ~14
    times as long on ten thousand passage numbers."""
    ids = np.sort(ids)
    return ids[np.concatenate(([True], ids[1:] != ids[:-1]))] if len(ids) else ids


def _kth(values: np.ndarray, k: int) -> float:
    """The k-th highest value (0 with fewer)."""
    if len(values) < k:
        return 0.0
    return float(np.partition(values, len(values) - k)[len(values) - k])


def _best_distinct(ids: np.ndarray, values: np.ndarray, m: int, copies: int) -> np.ndarray:
    """Up to m distinct ids (ascending) with the highest values, where each id appears at most
    `copies` times, always with the same value: the best m * copies positions hold them."""
    top = m * copies
    if len(values) > top:
        # partition, not argpartition: moving values alone is several times faster
        at_least = np.partition(values, len(values) - top)[len(values) - top]
        chosen = values >= at_least
        ids, values = ids[chosen], values[chosen]
    distinct, first = np.unique(ids, return_index=True)
    if len(distinct) > m:
        distinct = np.sort(distinct[np.argpartition(values[first], len(first) - m)[-m:]])
    return distinct


class Buffers:
    """Zeroed float32 score arrays the size of the corpus, reused by one question at a time
    each: allocating one per question cost milliseconds at a million passages. A question
    gives its buffer back zeroed (it clears only what it touched)."""

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> np.ndarray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return np.zeros(size, dtype=np.float32)

    def give(self, buffer: np.ndarray) -> None:
        with self._lock:
            self._free.append(buffer)


class Bitmaps:
    """Which passages hold a common term, one bit a passage, with the number of its postings
    before every 64 passages: the term's posting for a passage is then at that count plus
    the set bits before the passage's own in its 64-bit word, found for all the passages at
    once in a few whole-array steps. A binary search through a long postings list instead
    misses the cache (and at first faults a page in) at nearly every step: about 40 µs for
    100 passages in a million-long list against 20, and 400 against 70 for 10,000.

    Made for a term the first time it is looked up (about a millisecond for a term in a
    million passages) and kept for the terms most recently used, up to `limit` bytes in
    all: a common term is looked up by most questions."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._made: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def find(self, tid: int, column: np.ndarray, size: int, passages: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray]:
        """For each passage (ascending, below `size`): the position in `column`, the term's
        postings, of its posting or (absent) of a neighbouring one, and whether it has one."""
        words, before = self._get(tid, column, size)
        passages = np.asarray(passages, dtype=np.int64)
        at_word = passages >> 6
        word = words[at_word]
        mask = np.left_shift(np.uint64(1), (passages & 63).astype(np.uint64))
        there: np.ndarray = (word & mask) != 0
        at: np.ndarray = before[at_word] + np.bitwise_count(word & (mask - np.uint64(1)))
        # A passage after the last posting counts them all: one past the end.
        np.minimum(at, len(column) - 1, out=at)
        return at, there

    def _get(self, tid: int, column: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            made = self._made.get(tid)
            if made is not None:
                self._made.move_to_end(tid)
                return made
        # Made outside the lock: two questions may both make one, and one copy is kept.
        flags = np.zeros(-(-size // 64) * 64, dtype=bool)
        flags[column] = True
        # Little-endian words of little-endian bits: passage 64 * w + b is bit b of word w
        # on any machine.
        words = np.packbits(flags, bitorder="little").view(np.dtype("<u8"))
        counts = np.bitwise_count(words)
        before = (np.cumsum(counts, dtype=np.int64) - counts).astype(column.dtype)
        made = (words, before)
        with self._lock:
            if tid not in self._made:
                self._made[tid] = made
                self._bytes += words.nbytes + before.nbytes
                while self._bytes > self._limit and len(self._made) > 1:
                    _, (w, b) = self._made.popitem(last=False)
                    self._bytes -= w.nbytes + b.nbytes
        return made


def _ranked(ids: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest positive values of `values` with their `ids` (ascending), best first, ties
    in id order."""
    keep = values > 0
    ids, values = ids[keep], values[keep]
    if k < len(values):
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        ids, values = ids[keep], values[keep]
    order = np.lexsort((ids, -values))[:k]
    return ids[order].astype(np.int64), values[order]


# Above this many passages, `best` looks only at the passages with a score.
SPARSE_OVER = 200_000


def best(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k highest positive scores, highest first, ties in index order."""
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if len(scores) > SPARSE_OVER:
        # On a large corpus a question's terms touch a small part of it: choose among those
        # (partitioning a million scores took ~5 ms, finding the non-zero ones ~0.5 ms).
        touched = np.flatnonzero(scores)
        return _ranked(touched, scores[touched], k)
    return _ranked(np.arange(len(scores)), scores, k)


def build(passages: Iterable[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> LexicalIndex:
    """BM25 (Lucene's idf) over passages given as term lists, read once: each passage is kept
    as term ids and counts in flat arrays (a million passages' term lists as Python strings
    would take gigabytes), then the postings are sorted into term order in numpy."""
    vocabulary: dict[str, int] = {}
    term_ids, counts, sizes, lengths = array("i"), array("i"), array("i"), array("f")
    for passage in passages:
        counter = Counter(passage)
        term_ids.extend(vocabulary.setdefault(term, len(vocabulary)) for term in counter)
        counts.extend(counter.values())
        sizes.append(len(counter))
        lengths.append(len(passage))
    n = len(sizes)
    tids = np.frombuffer(term_ids, dtype=np.int32)
    lengths_ = np.frombuffer(lengths, dtype=np.float32)
    avg = float(lengths_.mean()) if n and lengths_.mean() > 0 else 1.0
    # Stable: within a term, postings stay in passage order.
    order = np.argsort(tids, kind="stable")
    df = np.bincount(tids, minlength=len(vocabulary))
    indptr = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(df)
    postings = np.repeat(np.arange(n, dtype=np.int32), np.frombuffer(sizes, dtype=np.int32))[order]
    idf = np.array([math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for d in df.tolist()],
                   dtype=np.float32)
    tf = np.frombuffer(counts, dtype=np.int32)[order].astype(np.float32)
    norm = k1 * (1.0 - b + b * lengths_ / avg)
    weights = idf[tids[order]] * tf * (k1 + 1.0) / (tf + norm[postings])
    return LexicalIndex(vocabulary, indptr, postings, weights, idf, n,
                        _maxweights(indptr, weights))


def _maxweights(indptr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = np.zeros(len(indptr) - 1, dtype=np.float32)
    used = np.flatnonzero(np.diff(indptr) > 0)
    if len(used):
        out[used] = np.maximum.reduceat(weights, indptr[used])
    return out


FILES = ("lexical_vocabulary.json", "lexical_arrays.npz")
# Separate .npy files (not the .npz versions before them had) so that loading maps them.
ARRAYS = ("lexical_indptr.npy", "lexical_postings.npy", "lexical_weights.npy",
          "lexical_idf.npy")
# Each term's highest weight, for pruning; versions before it get it computed at load.
MAXWEIGHTS = "lexical_maxweights.npy"


def save(index: LexicalIndex, folder: Path) -> list[Path]:
    vocab_path = folder / FILES[0]
    terms_in_order = sorted(index.vocabulary, key=index.vocabulary.__getitem__)
    vocab_path.write_text(json.dumps({"size": index.size, "terms": terms_in_order}), "utf-8")
    paths = [folder / name for name in ARRAYS]
    for path, values in zip(paths, (index.indptr, index.postings, index.weights, index.idf),
                            strict=True):
        np.save(path, values, allow_pickle=False)
    np.save(folder / MAXWEIGHTS, index.maxweights, allow_pickle=False)
    return [vocab_path, *paths, folder / MAXWEIGHTS]


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
    if (folder / MAXWEIGHTS).is_file():
        maxweights = np.load(folder / MAXWEIGHTS, allow_pickle=False, mmap_mode="r").view(
            np.ndarray)
    else:
        maxweights = _maxweights(indptr, weights)
    if len(maxweights) != len(vocabulary):
        raise ValueError("lexical index arrays do not match its vocabulary")
    return LexicalIndex(vocabulary, indptr, postings, weights, idf, int(meta["size"]),
                        maxweights)
