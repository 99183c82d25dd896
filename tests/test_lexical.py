"""BM25: the formula, stemming, top-k selection and the on-disk format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from service.index import lexical


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
