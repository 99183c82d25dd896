"""`make eval`: answer and retrieval quality on the default corpus and on SciFact, with baselines.

Indexes are built into temporary folders through scripts/build_index.py, exactly as a user
would build them; ../shared is only read. Prints one table per corpus and writes the figures
as JSON (path printed at the end).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from service import lexical  # noqa: E402
from service.conversation import standalone_query  # noqa: E402
from service.encoder import describe_model  # noqa: E402
from service.engine import Engine, Snapshot  # noqa: E402
from service.settings import Settings  # noqa: E402

K = 3
MAX_CITE, MAX_ANSWER = 1200, 500


def norm(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").lower().split())


def build(corpus: Path, index: Path, encoder: str = "onnx-int8") -> float:
    """Build through the CLI, as users do; returns seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QA_ENCODER": encoder}
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), "--corpus",
                    str(corpus), "--index", str(index)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def open_snapshot(corpus: Path, index: Path, encoder: str = "onnx-int8") -> Snapshot:
    settings = Settings(corpus_dir=corpus, index_dir=index, encoder=encoder)  # type: ignore[arg-type]
    engine = Engine(settings, describe_model(settings.model_dir))
    return engine.load()


# --- retrievers: the product's hybrid, and the two plain baselines over the same chunks ---

Retriever = Callable[[Snapshot, str, int], list[int]]


def hybrid(snap: Snapshot, query: str, k: int) -> list[int]:
    _, _, hits = snap.search(query, k)
    return [h.chunk for h in hits]


def plain_dense(snap: Snapshot, query: str, k: int) -> list[int]:
    vector = snap.encoder.encode_queries([query])[0]
    _, ids = snap.index.dense.search(vector.reshape(1, -1), k)
    return [int(i) for i in ids[0] if i >= 0]


def plain_bm25(snap: Snapshot, query: str, k: int) -> list[int]:
    ids, _ = snap.index.lexical.top(lexical.terms(query), k)
    return [int(i) for i in ids]


RETRIEVERS: dict[str, Retriever] = {"hybrid (ours)": hybrid, "plain dense": plain_dense,
                                    "plain BM25": plain_bm25}


# --- default corpus ---

@dataclass
class SeedFigures:
    hit: int = 0
    rr: float = 0.0
    answer1: int = 0
    answerable: int = 0
    declined: int = 0
    unanswerable: int = 0
    false_declines: int = 0
    followup_hits: int = 0
    followups: int = 0


def eval_default(snap: Snapshot, misses: list[str]) -> dict[str, Any]:
    qa = [json.loads(line) for line in (SHARED / "eval" / "seed_qa.jsonl").open()]
    chats = [json.loads(line) for line in (SHARED / "eval" / "chat_followups.jsonl").open()]
    out: dict[str, Any] = {}
    for name, retriever in RETRIEVERS.items():
        fig = SeedFigures()
        for q in (q for q in qa if q["answerable"]):
            fig.answerable += 1
            gold = [norm(g) for g in q["gold"]]
            texts = [snap.index.text(i) for i in retriever(snap, q["question"], K)]
            rank = next((r for r, t in enumerate(texts, 1)
                         if len(t) <= MAX_CITE and any(g in norm(t) for g in gold)), None)
            if rank:
                fig.hit += 1
                fig.rr += 1 / rank
            elif name == "hybrid (ours)":
                misses.append(f"MISS {q['id']} {q['question']!r}")
        for c in chats:
            fig.followups += 1
            query = standalone_query(c["turns"]) if name == "hybrid (ours)" else c["turns"][-1]
            texts = [snap.index.text(i) for i in retriever(snap, query, K)]
            if any(norm(g) in norm(t) for t in texts for g in c["gold"]):
                fig.followup_hits += 1
            elif name == "hybrid (ours)":
                misses.append(f"CHAT-MISS {c['id']} {query!r}")
        out[name] = fig
    ours = out["hybrid (ours)"]
    latencies, cite_chars, answer_chars = [], [], []
    for q in qa:
        started = time.perf_counter()
        answer = snap.ask(q["question"], K)
        latencies.append((time.perf_counter() - started) * 1000)
        cite_chars += [len(c.text) for c in answer.citations]
        answer_chars.append(len(answer.text))
        if q["answerable"]:
            gold = [norm(g) for g in q["gold"]]
            if (answer.answered and len(answer.text) <= MAX_ANSWER
                    and any(g in norm(answer.text) for g in gold)):
                ours.answer1 += 1
            else:
                misses.append(f"ANSWER {q['id']} {q['question']!r} -> {answer.text[:90]!r}")
            if not answer.answered:
                ours.false_declines += 1
        else:
            ours.unanswerable += 1
            if not answer.answered:
                ours.declined += 1
            else:
                misses.append(f"NO-DECLINE {q['id']} {q['question']!r} ({answer.confidence})")
    return {
        "retrieval": {n: {"hit@3": f.hit, "mrr@3": round(f.rr / max(f.answerable, 1), 3),
                          "followup_hit@3": f.followup_hits} for n, f in out.items()},
        "answerable": ours.answerable, "followups": ours.followups,
        "answer@1": ours.answer1, "declined": ours.declined,
        "unanswerable": ours.unanswerable, "false_declines": ours.false_declines,
        "median_citation_chars": statistics.median(cite_chars),
        "max_citation_chars": max(cite_chars),
        "median_answer_chars": statistics.median(answer_chars),
        "p50_ms": round(statistics.median(latencies), 2),
    }


# --- SciFact ---

def scifact_corpus(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    with gzip.open(SHARED / "eval" / "scifact" / "corpus.jsonl.gz", "rb") as src:
        (target / "corpus.jsonl").write_bytes(src.read())
    return target


def scifact_queries() -> tuple[dict[str, str], dict[str, set[str]]]:
    folder = SHARED / "eval" / "scifact"
    queries = {}
    for line in (folder / "queries_train.jsonl").open():
        record = json.loads(line)
        queries[record["_id"]] = record["text"]
    qrels: dict[str, set[str]] = collections.defaultdict(set)
    for line in list((folder / "qrels_train.tsv").open())[1:]:
        qid, doc, score = line.split()
        if int(score) > 0:
            qrels[qid].add(doc)
    return {q: t for q, t in queries.items() if q in qrels}, qrels


def rank_documents(snap: Snapshot, chunk_ids: Sequence[int]) -> list[str]:
    """Documents in order of their best chunk."""
    seen: dict[str, None] = {}
    for i in chunk_ids:
        seen.setdefault(snap.index.chunks[i].doc_id, None)
    return list(seen)


def ndcg_recall(ranked: Sequence[str], relevant: set[str], k: int = 10) -> tuple[float, float]:
    dcg = sum(1 / math.log2(r + 2) for r, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    return dcg / ideal, len(set(ranked[:k]) & relevant) / len(relevant)


def eval_scifact(snap: Snapshot) -> dict[str, Any]:
    queries, qrels = scifact_queries()
    out: dict[str, Any] = {}
    for name, retriever in RETRIEVERS.items():
        scores = [ndcg_recall(rank_documents(snap, retriever(snap, text, 100)), qrels[qid])
                  for qid, text in queries.items()]
        out[name] = {"ndcg@10": round(float(np.mean([s[0] for s in scores])), 4),
                     "recall@10": round(float(np.mean([s[1] for s in scores])), 4)}
    out["queries"] = len(queries)
    return out


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--skip-torch", action="store_true",
                        help="skip the SciFact build with the torch reference encoder")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    misses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qa-eval-") as tmp:
        work = Path(tmp)
        build(ROOT / "corpus", work / "default-index")
        snap = open_snapshot(ROOT / "corpus", work / "default-index")
        figures["default"] = d = eval_default(snap, misses)
        print("\nDefault corpus (shared/eval/seed_qa.jsonl, chat_followups.jsonl), top_k=3")
        rows = [["retriever", "hit@3", "MRR@3", "follow-up hit@3"]]
        for name, r in d["retrieval"].items():
            rows.append([name, f"{r['hit@3']}/{d['answerable']}", f"{r['mrr@3']:.3f}",
                         f"{r['followup_hit@3']}/{d['followups']}"])
        print(table(rows))
        print(f"answer@1 {d['answer@1']}/{d['answerable']}  declined {d['declined']}/"
              f"{d['unanswerable']}  false declines {d['false_declines']}/{d['answerable']}  "
              f"median citation {d['median_citation_chars']:.0f} chars (max "
              f"{d['max_citation_chars']})  median answer {d['median_answer_chars']:.0f} chars  "
              f"p50 {d['p50_ms']} ms (library, no HTTP)")
        for line in misses:
            print("  " + line)
        if not args.skip_scifact:
            corpus = scifact_corpus(work / "scifact-corpus")
            seconds = build(corpus, work / "scifact-index")
            snap = open_snapshot(corpus, work / "scifact-index")
            figures["scifact"] = s = eval_scifact(snap)
            s["build_seconds"] = round(seconds, 1)
            print(f"\nSciFact training queries ({s['queries']}), document ranking "
                  f"(index built in {seconds:.0f} s)")
            rows = [["retriever", "nDCG@10", "recall@10"]]
            rows += [[n, f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}"]
                     for n, r in s.items() if isinstance(r, dict)]
            if not args.skip_torch:
                seconds = build(corpus, work / "scifact-torch", encoder="torch")
                ref = open_snapshot(corpus, work / "scifact-torch", encoder="torch")
                s["torch"] = eval_scifact(ref)["hybrid (ours)"]
                rows.append(["hybrid, torch encoder", f"{s['torch']['ndcg@10']:.4f}",
                             f"{s['torch']['recall@10']:.4f}"])
            print(table(rows))
            print("published for reference (SciFact test split): all-MiniLM-L6-v2 0.645, "
                  "BM25 0.687")
    out = args.out or Path(tempfile.gettempdir()) / "qa-eval.json"
    out.write_text(json.dumps(figures, indent=2, default=str), "utf-8")
    print(f"\nfigures written to {out}")
    return figures


if __name__ == "__main__":
    main()
