"""BM25: the formula, stemming, top-k selection and the on-disk format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from service.index import lexical


@pytest.fixture(autouse=True)
def _prune_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # The corpora here are small: without this, top() would walk everything and the pruning
    # these tests check would never run.
    monkeypatch.setattr(lexical, "WALK_ALL_BELOW", 0)


def test_small_corpora_are_walked_in_full_with_the_same_ranking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    index, rng, cdf = _zipf_corpus(5)
    questions = [_question(rng, cdf) for _ in range(40)]
    pruned = [index.top(q, 10) for q in questions]
    monkeypatch.setattr(lexical, "WALK_ALL_BELOW", index.size + 1)
    monkeypatch.setattr(index._buffers, "take", None)  # the pruning's buffer is never taken
    for q, (ids, values) in zip(questions, pruned, strict=True):
        walked_ids, walked_values = index.top(q, 10)
        assert np.array_equal(walked_ids, ids) and np.array_equal(walked_values, values)


def test_terms_are_stemmed_lowercase_content_words() -> None:
    assert lexical.terms("The Managers were managing FeedBear's $150,746 budgets") == [
        "manag", "manag", "feedbear", "150", "746", "budget"]


def test_scores_follow_bm25() -> None:
    passages = [["cat", "dog"], ["cat", "cat", "fish", "bird"], ["dog"]]
    index = lexical.build(passages, k1=1.2, b=0.75)
    avg = 7 / 3
    idf_cat = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    expected = idf_cat * 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 4 / avg))
    scores = index.scores(["cat"])
    assert math.isclose(float(scores[1]), expected, rel_tol=1e-5)
    assert scores[2] == 0.0
    # Repeating a query term does not count it twice.
    assert np.allclose(index.scores(["cat", "cat"]), scores)


def test_top_returns_positive_scores_best_first() -> None:
    index = lexical.build([["a"], ["b", "c"], ["c"], ["c", "c"]])
    ids, scores = index.top(["c"], 10)
    assert list(ids) == [3, 2, 1]
    assert all(scores[:-1] >= scores[1:])
    assert list(index.top(["zzz"], 3)[0]) == []


def test_unknown_terms_weigh_like_a_typical_term() -> None:
    index = lexical.build([["a", "b"], ["a"]])
    assert index.term_idf("b") > index.term_idf("never-seen") > index.term_idf("a")
    assert math.isclose(index.term_idf("never-seen"),
                        (index.term_idf("a") + index.term_idf("b")) / 2, rel_tol=1e-6)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    index = lexical.build([["alpha", "beta"], ["beta", "gamma", "gamma"]])
    lexical.save(index, tmp_path)
    loaded = lexical.load(tmp_path)
    assert loaded.vocabulary == index.vocabulary and loaded.size == 2
    assert np.allclose(loaded.scores(["gamma", "beta"]), index.scores(["gamma", "beta"]))


def test_best_on_a_large_corpus_looks_only_at_scored_passages(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    scores = np.zeros(5_000, dtype=np.float32)
    scores[rng.choice(5_000, 300, replace=False)] = rng.random(300).astype(np.float32) + 0.01
    dense_ids, dense_values = lexical.best(scores, 50)
    monkeypatch.setattr(lexical, "SPARSE_OVER", 0)
    sparse_ids, sparse_values = lexical.best(scores, 50)
    assert sparse_ids.tolist() == dense_ids.tolist()
    assert np.array_equal(sparse_values, dense_values)
    few = np.zeros(5_000, dtype=np.float32)
    few[[7, 9]] = [0.5, 0.9]
    assert lexical.best(few, 50)[0].tolist() == [9, 7]  # fewer scored than asked


def _zipf_corpus(seed: int, passages: int = 3_000, vocabulary: int = 800,
                 ) -> tuple[lexical.LexicalIndex, np.random.Generator, np.ndarray]:
    """Passages of Zipf-distributed terms: a few terms in most passages, most in a few."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocabulary + 1) ** 1.1
    cdf = np.cumsum(weights / weights.sum())
    index = lexical.build(
        [f"t{i}" for i in np.searchsorted(cdf, rng.random(int(rng.integers(1, 60))))]
        for _ in range(passages))
    return index, rng, cdf


def _question(rng: np.random.Generator, cdf: np.ndarray) -> list[str]:
    n = int(rng.integers(1, 10))
    return [f"t{i}" for i in np.searchsorted(cdf, rng.random(n))] + ["never-seen"]


def test_postings_are_in_passage_order_with_each_terms_highest_weight() -> None:
    index, _, _ = _zipf_corpus(1, passages=500)
    for tid in range(len(index.vocabulary)):
        lo, hi = index.indptr[tid], index.indptr[tid + 1]
        assert np.all(np.diff(index.postings[lo:hi]) > 0)
        assert index.maxweights[tid] == index.weights[lo:hi].max()


def test_top_prunes_to_exactly_the_exhaustive_ranking(monkeypatch: pytest.MonkeyPatch) -> None:
    index, rng, cdf = _zipf_corpus(2)
    questions = [_question(rng, cdf) for _ in range(200)]
    expected = {(tuple(q), k): lexical.best(index.scores(q), k)
                for q in questions for k in (1, 10, 50)}
    # Pruned: the common terms' postings are never walked for these questions.
    walked: list[int] = []
    full_walk = lexical.LexicalIndex.scores

    def counting(self: lexical.LexicalIndex, terms: list[str]) -> np.ndarray:
        walked.append(1)
        return full_walk(self, terms)

    monkeypatch.setattr(lexical.LexicalIndex, "scores", counting)
    for (q, k), (ids, values) in expected.items():
        got_ids, got_values = index.top(list(q), k)
        assert got_ids.tolist() == ids.tolist()
        assert np.array_equal(got_values, values)
    assert len(walked) < len(expected) / 2  # most questions were answered by pruning


def test_top_falls_back_to_the_full_walk_when_candidates_grow(
        monkeypatch: pytest.MonkeyPatch) -> None:
    index, rng, cdf = _zipf_corpus(3)
    questions = [_question(rng, cdf) for _ in range(100)]
    expected = [lexical.best(index.scores(q), 20) for q in questions]
    walked: list[int] = []
    full_walk = lexical.LexicalIndex.scores

    def counting(self: lexical.LexicalIndex, terms: list[str]) -> np.ndarray:
        walked.append(1)
        return full_walk(self, terms)

    monkeypatch.setattr(lexical.LexicalIndex, "scores", counting)
    monkeypatch.setattr(lexical, "PRUNE_SHARE", 0.0)  # any candidates beyond k: walk all
    for q, (ids, values) in zip(questions, expected, strict=True):
        got_ids, got_values = index.top(q, 20)
        assert got_ids.tolist() == ids.tolist()
        assert np.array_equal(got_values, values)
    assert len(walked) > len(questions) / 2


def test_top_breaks_ties_in_passage_order() -> None:
    index = lexical.build([["x", "y"], ["x"], ["z"], ["x"], ["x", "y"]])
    ids, values = index.top(["x"], 2)
    assert ids.tolist() == [1, 3] and values[0] == values[1]
    assert index.top(["x", "y"], 5)[0].tolist() == [0, 4, 1, 3]
    assert index.top([], 5)[0].tolist() == [] and index.top(["x"], 0)[0].tolist() == []


def test_score_of_equals_the_exhaustive_scores() -> None:
    index, rng, cdf = _zipf_corpus(4)
    for _ in range(50):
        q = _question(rng, cdf)
        passages = rng.integers(0, index.size, 80)
        assert np.array_equal(index.score_of(q, passages), index.scores(q)[passages])
    assert index.score_of(["t0"], np.empty(0, np.int64)).tolist() == []


@pytest.mark.parametrize("size", [63, 64, 65, 1_000])
def test_bitmap_lookups_give_each_passages_exhaustive_weight(
        monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    # Every term looked up through its bitmap (BITMAP_OVER above the corpus size), then
    # every term by binary search (0): the weights of scores() for each term, for passages
    # before a term's first posting, after its last, in a bitmap's partly used last word.
    index, rng, _ = _zipf_corpus(7, passages=size, vocabulary=60)
    passages = [np.arange(size), np.array([size - 1]), np.empty(0, np.int64),
                np.sort(rng.choice(size, size // 3, replace=False)).astype(np.int32)]
    expected = {t: index.scores([t]) for t in index.vocabulary}
    for over in (size + 1, 0):
        monkeypatch.setattr(lexical, "BITMAP_OVER", over)
        for term, tid in index.vocabulary.items():
            for chosen in passages:
                assert np.array_equal(index._lookup(tid, chosen), expected[term][chosen])
    assert len(index._bitmaps._made) == len(index.vocabulary)  # the first pass used them


def test_bitmaps_kept_are_bounded_and_remade_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical, "BITMAP_OVER", 10**9)  # every term through a bitmap
    monkeypatch.setattr(lexical, "BITMAP_BYTES", 1)  # keep only the last one made
    index, rng, cdf = _zipf_corpus(8, passages=700, vocabulary=40)
    for _ in range(2):
        for _ in range(30):
            q = _question(rng, cdf)
            passages = rng.integers(0, index.size, 50)
            assert np.array_equal(index.score_of(q, passages), index.scores(q)[passages])
        assert len(index._bitmaps._made) == 1


def test_versions_without_stored_maxima_get_them_at_load(tmp_path: Path) -> None:
    index, _, _ = _zipf_corpus(5, passages=300)
    for path in lexical.save(index, tmp_path):
        assert path.is_file()
    (tmp_path / lexical.MAXWEIGHTS).unlink()
    assert np.array_equal(lexical.load(tmp_path).maxweights, index.maxweights)


@pytest.mark.parametrize(("walk_share", "seeds", "candidates_max"),
                         [(0.0, 1, 5), (0.0, 2, 1_000_000), (0.2, 4, 50), (1.0, 2, 20_000)])
def test_top_is_exact_whatever_it_walks_and_looks_up(
        monkeypatch: pytest.MonkeyPatch, walk_share: float, seeds: int,
        candidates_max: int) -> None:
    # From walking only the rarest term to walking all, few seeds or many, looking up few
    # candidates or many: the same ranking as the exhaustive walk.
    monkeypatch.setattr(lexical, "WALK_SHARE", walk_share)
    monkeypatch.setattr(lexical, "SEEDS", seeds)
    monkeypatch.setattr(lexical, "CANDIDATES_MAX", candidates_max)
    index, rng, cdf = _zipf_corpus(6)
    for _ in range(60):
        q = _question(rng, cdf)
        for k in (1, 7, 50):
            ids, values = lexical.best(index.scores(q), k)
            got_ids, got_values = index.top(q, k)
            assert got_ids.tolist() == ids.tolist()
            assert np.array_equal(got_values, values)


@pytest.mark.parametrize("walk_all_below", [0, 10**9])
def test_candidates_give_top_k_and_every_pooled_score(
        monkeypatch: pytest.MonkeyPatch, walk_all_below: int) -> None:
    # Both paths: the pruned top k with looked-up pool scores, and one exhaustive scoring.
    monkeypatch.setattr(lexical, "WALK_ALL_BELOW", walk_all_below)
    index, rng, cdf = _zipf_corpus(6)
    for _ in range(40):
        q = _question(rng, cdf)
        ids, pooled = index.candidates(q, 15)
        top_ids, _ = index.top(q, 15)
        assert ids.tolist() == top_ids.tolist()
        pool = np.unique(np.concatenate([ids, rng.integers(0, index.size, 30)]))
        assert np.array_equal(pooled(pool), index.scores(q)[pool])
    ids, pooled = index.candidates(["no-such-term"], 5)
    assert ids.tolist() == [] and pooled(np.array([0, 1])).tolist() == [0.0, 0.0]
