"""Hybrid retrieval: fusion of dense and BM25 candidates, duplicates dropped, loading checks."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.index import lexical, store
from service.index.indexing import build_index
from service.qa import retrieval
from service.qa.retrieval import (
    SearchIndex,
    as_float32,
    best_of,
    check_compatible,
    load_index,
    pool_sentences,
    retrieve,
)
from service.settings import Settings
from tests.conftest import FakeEncoder


def _index(tmp_path: Path, files: dict[str, str], encoder: FakeEncoder) -> SearchIndex:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in files.items():
        (corpus / name).write_text(text, "utf-8")
    settings = Settings(corpus_dir=corpus, index_dir=tmp_path / "index")
    build_index(settings, encoder=encoder)
    return load_index(settings.index_dir)


def _ask(index: SearchIndex, encoder: FakeEncoder, question: str, k: int = 3) -> list[str]:
    vector = encoder.encode_queries([question])[0]
    hits = retrieve(index, vector, lexical.terms(question), k)
    return [index.chunks[h.chunk].doc_id for h in hits]


def test_exact_rare_terms_are_found(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    files = {f"d{i}.txt": f"Generic note number {i} about teams and products." for i in range(8)}
    files["tool.txt"] = "Feedback can be collected with FeedBear by the product team."
    index = _index(tmp_path, files, fake_encoder)
    assert _ask(index, fake_encoder, "Which tool is FeedBear?")[0] == "tool.txt"


def test_near_duplicates_are_dropped(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    text = "The board named a new chairman of the company in March after a long search."
    files = {"a.txt": text, "b.txt": text + " ", "c.txt": "A chairman leads the board."}
    index = _index(tmp_path, files, fake_encoder)
    found = _ask(index, fake_encoder, "Who is the new chairman of the board?")
    assert found[0] in ("a.txt", "b.txt")
    assert not {"a.txt", "b.txt"} <= set(found)
    assert "c.txt" in found


def test_fused_scores_are_ordered_and_bounded(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    files = {f"d{i}.txt": f"Paragraph {i} on product roadmaps and strategy {i}." for i in range(6)}
    index = _index(tmp_path, files, fake_encoder)
    vector = fake_encoder.encode_queries(["roadmaps strategy"])[0]
    hits = retrieve(index, vector, lexical.terms("roadmaps strategy"), 5)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1.0 + 1e-6 for s in scores)
    assert len({h.chunk for h in hits}) == len(hits)


def test_dense_only_match_still_retrieved(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    files = {"a.txt": "Alpha beta gamma.", "b.txt": "Delta epsilon zeta."}
    index = _index(tmp_path, files, fake_encoder)
    # No query term survives stopword removal, so only the dense side can find anything.
    vector = fake_encoder.encode_queries(["alpha"])[0]
    hits = retrieve(index, vector, [], 2)
    assert index.chunks[hits[0].chunk].doc_id == "a.txt"


def test_damaged_index_is_refused(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    index = _index(tmp_path, {"a.txt": "Some text here."}, fake_encoder)
    vectors = tmp_path / "index" / "versions" / index.version / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(store.IndexUnavailable, match="checksum"):
        load_index(tmp_path / "index")


def test_incompatible_model_is_refused(tmp_path: Path, fake_encoder: FakeEncoder) -> None:
    index = _index(tmp_path, {"a.txt": "Some text here."}, fake_encoder)
    check_compatible(index.manifest, fake_encoder.model, "fake")
    with pytest.raises(store.IndexUnavailable, match="rebuild"):
        check_compatible(index.manifest, FakeEncoder(dimension=16).model, "fake")
    with pytest.raises(store.IndexUnavailable, match="encoder"):
        check_compatible(index.manifest, fake_encoder.model, "onnx-int8")
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)


def test_best_sentence_cosines_take_each_passages_best(tmp_path: Path,
                                                       fake_encoder: FakeEncoder) -> None:
    files = {"a.txt": "Alpha beta gamma. Delta epsilon zeta. Eta theta.",
             "b.txt": "Iota kappa lambda. Mu nu xi omicron.", "c.txt": "Pi rho sigma tau."}
    index = _index(tmp_path, files, fake_encoder)
    vector = fake_encoder.encode_queries(["delta epsilon"])[0]
    chunks = np.arange(len(index.chunks))
    rows, starts, _ = pool_sentences(index, chunks)
    best = best_of(rows @ vector, starts)
    expected = [float((index.sentence_matrix(int(i)) @ vector).max()) for i in chunks]
    assert np.allclose(best, expected, atol=1e-3)
    # Each hit carries the sentence vectors retrieval read for it, the very floats the index
    # gives, so scoring its sentences for the answer needs no second read.
    hits = retrieve(index, vector, ["delta", "epsilon"], 3)
    assert hits
    for hit in hits:
        assert hit.sentences is not None
        assert np.array_equal(hit.sentences, index.sentence_matrix(hit.chunk))


@pytest.mark.parametrize("width", [384, 8, 1])
def test_float16_rows_widen_to_numpy_s_floats(width: int) -> None:
    # Every float16 value, in rows past WIDEN_FROM and below it; rows holding an infinity or
    # a NaN take numpy's conversion, the others the fast one.
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    rows = np.resize(every, (-(-len(every) // width), width))
    finite = rows[np.isfinite(rows).all(axis=1)]
    for chosen in (rows, finite, finite[: retrieval.WIDEN_FROM - 1], finite[:0]):
        widened = as_float32(chosen)
        assert widened.dtype == np.float32
        assert np.array_equal(widened.view(np.uint32), chosen.astype(np.float32).view(np.uint32))
    assert len(finite) >= retrieval.WIDEN_FROM


def test_one_matching_sentence_lifts_its_passage(tmp_path: Path, fake_encoder: FakeEncoder,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The answer is the last sentence of a passage about something else.
    other = ("The cafeteria serves lunch from noon. The menu changes weekly and lists soups, "
             "salads and a hot dish. Vegetarian options are marked on the board. ")
    files = {"cafe.txt": other + "Parking permits renew every March.",
             "parking.txt": "Parking is free on weekends near the parking garage entrance."}
    index = _index(tmp_path, files, fake_encoder)
    vector = fake_encoder.encode_queries(["when do parking permits renew"])[0]
    terms = lexical.terms("when do parking permits renew")
    monkeypatch.setattr(retrieval, "SENTENCE_WEIGHT", 0.0)
    without = retrieve(index, vector, terms, 2)
    monkeypatch.setattr(retrieval, "SENTENCE_WEIGHT", 2.0)
    with_sentences = retrieve(index, vector, terms, 2)
    assert index.chunks[with_sentences[0].chunk].doc_id == "cafe.txt"
    cafe = next(h for h in without if index.chunks[h.chunk].doc_id == "cafe.txt")
    assert without.index(cafe) > 0 or cafe.score < with_sentences[0].score
    assert all(0.0 <= h.score <= 1.0 + 1e-6 for h in with_sentences)


def test_hits_carry_the_exhaustive_bm25_scores(tmp_path: Path, fake_encoder: FakeEncoder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Passages of which the dense candidates and the BM25 candidates are different sets.
    files = {f"d{i}.txt": f"Item {i} lists budget {i % 3} and plans for team {i % 5}. "
             f"Notes {i * 7} follow." for i in range(120)}
    index = _index(tmp_path, files, fake_encoder)
    for question in ("budget 2 for team 4", "plans notes 21", "team 1 budget"):
        terms = lexical.terms(question)
        vector = fake_encoder.encode_queries([question])[0]
        exhaustive = index.lexical.scores(terms)
        hits = retrieve(index, vector, terms, 10, candidates=8)
        assert hits
        for hit in hits:
            assert hit.lexical == float(exhaustive[hit.chunk])


def test_a_big_index_searches_beside_bm25_with_the_same_hits(
        tmp_path: Path, fake_encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"{n}.txt": f"Note {n} on travel, leave and badges. Item {n * 7}." for n in range(30)}
    index = _index(tmp_path, files, fake_encoder)
    vector = fake_encoder.encode_queries(["travel badges"])[0]
    alone = retrieve(index, vector, ["travel", "badg"], 5)
    threads: list[str] = []
    search = retrieval.dense_candidates

    def recording(*args: Any) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return search(*args)

    monkeypatch.setattr(retrieval, "dense_candidates", recording)
    monkeypatch.setattr(retrieval, "PARALLEL_DENSE_FROM", 0)
    beside = retrieve(index, vector, ["travel", "badg"], 5)
    assert threads and threads[0].startswith("dense")
    assert [(h.chunk, h.score) for h in beside] == [(h.chunk, h.score) for h in alone]
