"""Where the time of one /api/ask goes, step by step, measured in-process on the served index."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.http.api import AskRequest, _response
from service.http.identity import ANONYMOUS
from service.index import lexical
from service.index.encoder import describe_model
from service.qa.answer import compose_answer
from service.qa.answertype import wanted
from service.qa.engine import ANSWER_POOL, RERANK_POOL, Engine
from service.qa.retrieval import CANDIDATES, dense_candidates, retrieve
from service.settings import Settings


def _median_us(step: Callable[[str], Any], questions: Sequence[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        for q in questions:
            started = time.perf_counter()
            step(q)
            times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1e6, 1)


def breakdown(index_dir: Path, questions: Sequence[str], repeat: int = 20) -> dict[str, float]:
    """Median microseconds of each step, alone (warm caches), and of the whole answer in the
    order a request runs it (the encoder's pass leaves the caches colder for the rest)."""
    engine = Engine(Settings(index_dir=index_dir, cache_size=0), describe_model(None))
    snap = engine.load()
    index = snap.index
    vectors = {q: snap.encoder.encode_queries([q])[0] for q in questions}
    terms = {q: lexical.terms(q) for q in questions}
    # As Snapshot.ask does for top_k 3: the passages it re-ranks, and the ones it reads.
    read = 3 + ANSWER_POOL
    pool = max(read, RERANK_POOL)
    hits = {q: retrieve(index, vectors[q], terms[q], pool) for q in questions}
    wants = {q: wanted(q, index.acronyms) for q in questions}

    def compose(q: str) -> Any:
        return compose_answer(index, vectors[q], terms[q], hits[q], wants[q], 3, read)

    answers = {q: compose(q) for q in questions}
    n = min(CANDIDATES, len(index.chunks))
    steps = {
        "validate request": lambda q: AskRequest.model_validate({"question": q, "top_k": 3}),
        "encode": lambda q: snap.encoder.encode_queries([q]),
        "lexical terms": lambda q: lexical.terms(q),
        "dense search (FAISS)": lambda q: dense_candidates(index, vectors[q], n),
        "BM25 top-50": lambda q: index.lexical.top(terms[q], n),
        "retrieve (both, fused, deduped)": lambda q: retrieve(index, vectors[q], terms[q], pool),
        "sentence scoring, re-ranking + compose": compose,
        "response JSON": lambda q: _response(q, answers[q], snap, time.perf_counter(), None,
                                             "/api/ask", "default", ANONYMOUS),
        "whole answer, request order": lambda q: snap.ask(q, 3),
    }
    return {name: _median_us(step, questions, repeat) for name, step in steps.items()}
