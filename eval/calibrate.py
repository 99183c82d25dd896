"""Fit the answer-confidence model (service.answer.CONFIDENCE_COEF) on SciFact, check it on seed_qa.

The label is "the quoted passage comes from a document that addresses the claim". Examples:
SciFact training claims asked of the full SciFact index (positive when the quoted document is
relevant), the same claims with their relevant documents hidden (negative: related text remains
but not the answer), and the same claims asked of the default corpus (negative, off-topic).
The seed questions are never fitted on; they are the check. Prints the coefficients to copy,
and the decline threshold: the highest one that still answers 95% of the positives. Every
answer carries its citation, so a weak answer can be checked by the reader, while a false
decline hides what the text says; the threshold leans towards answering. (For comparison it
also prints the threshold maximizing Youden's J.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.run_eval import (  # noqa: E402
    build,
    open_snapshot,
    scifact_corpus,
    scifact_queries,
)
from service import lexical  # noqa: E402
from service.answer import score_sentences  # noqa: E402
from service.engine import Snapshot  # noqa: E402
from service.retrieval import retrieve  # noqa: E402

K = 3


def features(snap: Snapshot, query: str, hidden: set[str]) -> tuple[float, float, str] | None:
    """(cosine, coverage) of the best sentence and its document, as if `hidden` were absent."""
    vector = snap.encoder.encode_queries([query])[0]
    terms = lexical.terms(query)
    hits = retrieve(snap.index, vector, terms, K + 30 if hidden else K)
    hits = [h for h in hits if snap.index.chunks[h.chunk].doc_id not in hidden][:K]
    sentences = score_sentences(snap.index, vector, terms, hits)
    if not sentences:
        return None
    best = sentences[0]
    return best.cosine, best.coverage, snap.index.chunks[hits[best.hit].chunk].doc_id


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Newton's method for L2-regularized logistic regression; x includes the bias column."""
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (p - y) + l2 * w
        hess = x.T @ (x * (p * (1 - p))[:, None]) + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True,
                        help="folder for the indexes (reused when present)")
    args = parser.parse_args()
    work: Path = args.work
    if not (work / "scifact-index" / "CURRENT").exists():
        build(scifact_corpus(work / "scifact-corpus"), work / "scifact-index")
    if not (work / "default-index" / "CURRENT").exists():
        build(ROOT / "corpus", work / "default-index")
    scifact = open_snapshot(work / "scifact-corpus", work / "scifact-index")
    default = open_snapshot(ROOT / "corpus", work / "default-index")
    queries, qrels = scifact_queries()
    rows: list[tuple[float, float, int, int]] = []  # cosine, coverage, label, kind
    for qid, text in queries.items():
        full = features(scifact, text, set())
        if full:
            rows.append((full[0], full[1], int(full[2] in qrels[qid]), 0))
        for kind, (snap, hidden) in enumerate(((scifact, qrels[qid]), (default, set[str]())), 1):
            f = features(snap, text, hidden)
            if f:
                rows.append((f[0], f[1], 0, kind))
    data = np.array(rows)
    x = np.column_stack([np.ones(len(data)), data[:, 0], data[:, 1]])
    y = data[:, 2]
    w = fit_logistic(x, y)
    p = 1 / (1 + np.exp(-x @ w))
    print(f"examples {len(y)} (positive {int(y.sum())})")
    print(f"CONFIDENCE_COEF = ({w[0]:.2f}, {w[1]:.2f}, {w[2]:.2f})")
    print(f"training accuracy at 0.5: {float(((p >= 0.5) == y).mean()):.3f}")
    kinds = data[:, 3]
    best_j, best_t, recall_t = -1.0, 0.5, 0.0
    print("threshold  answered: positives  hidden-answer negatives  off-topic negatives")
    for t in np.arange(0.02, 0.61, 0.02):
        pos = float((p[y == 1] >= t).mean())
        hidden_rate = float((p[(y == 0) & (kinds == 1)] >= t).mean())
        off = float((p[kinds == 2] >= t).mean())
        neg = float((p[y == 0] >= t).mean())
        print(f"  {t:.2f}     {pos:.3f}{hidden_rate:25.3f}{off:25.3f}")
        if pos - neg > best_j:
            best_j, best_t = pos - neg, float(t)
        if pos >= 0.95:
            recall_t = float(t)
    print(f"DECLINE_BELOW = {recall_t:.2f}  (answers >= 95% of positives; Youden's J would "
          f"pick {best_t:.2f})")
    bins = np.linspace(0, 1, 6)
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        mask = (p >= lo) & (p < hi if hi < 1 else p <= hi)
        if mask.any():
            print(f"  predicted {lo:.1f}-{hi:.1f}: {int(mask.sum()):5d} examples, "
                  f"observed {float(y[mask].mean()):.2f}")


if __name__ == "__main__":
    main()
