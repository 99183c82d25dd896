"""`make eval`: answer and retrieval quality on every evaluation corpus, in one table.

Corpora: the shipped article (public questions, and our own paraphrases in eval/sets/), the
TTS handbook (246 Markdown pages: the public questions, and eval/sets/tts-fresh.jsonl, 30
questions on 24 pages the public ones do not touch, written by someone who had not seen the
service's code and scored untuned) and SciFact's training queries. Indexes are built into
temporary folders through scripts/build_index.py, exactly as a user would build them; ../shared
is only read. Plain BM25 and plain dense rows over the same chunks stand beside ours. The
questions of each corpus are split in two by a hash of their id: `dev` is what tuning looked
at, `held-out` what it did not. Prints the table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from service.index import lexical  # noqa: E402
from service.index.encoder import describe_model  # noqa: E402
from service.qa.conversation import standalone_query  # noqa: E402
from service.qa.engine import Engine, Snapshot  # noqa: E402
from service.qa.retrieval import dense_candidates  # noqa: E402
from service.settings import Settings  # noqa: E402

K = 3
MAX_CITE, MAX_ANSWER = 1200, 500


def norm(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.replace("\u201c", '"').replace("\u201d", '"').lower().split())


def split_of(qid: str) -> str:
    """A fixed half of the questions, by id: tuning looked only at `dev`. Ids numbered in
    order alternate (odd numbers are dev), so both halves keep the set's mix of kinds."""
    digits = qid[len(qid.rstrip("0123456789")):]
    if digits:
        return "dev" if int(digits) % 2 == 1 else "held-out"
    return "dev" if hashlib.sha256(qid.encode()).digest()[0] % 2 == 0 else "held-out"


# What the evaluation measures: the product's defaults, whatever QA_* the shell has set, except
# the chunk size when `--chunk-chars` asks for another (for comparing sizes).
CHUNK_CHARS = Settings.model_fields["chunk_chars"].default


def build(corpus: Path, index: Path, encoder: str = "onnx-int8") -> float:
    """Build through the CLI, as users do; returns seconds (an unchanged corpus is a no-op)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update({"HF_HUB_OFFLINE": "1", "QA_ENCODER": encoder,
                "QA_CHUNK_CHARS": str(CHUNK_CHARS)})
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), "--corpus",
                    str(corpus), "--index", str(index)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def open_snapshot(corpus: Path, index: Path, encoder: str = "onnx-int8") -> Snapshot:
    settings = Settings(corpus_dir=corpus, index_dir=index, encoder=encoder,  # type: ignore[arg-type]
                        chunk_chars=CHUNK_CHARS)
    engine = Engine(settings, describe_model(settings.model_dir))
    return engine.load()


# --- retrievers: the product's, and the two plain baselines over the same chunks ---

Retriever = Callable[[Snapshot, str, int], list[int]]


def ours(snap: Snapshot, query: str, k: int) -> list[int]:
    _, _, hits = snap.search(query, k)
    return [h.chunk for h in hits]


def plain_dense(snap: Snapshot, query: str, k: int) -> list[int]:
    vector = snap.encoder.encode_queries([query])[0]
    return [int(i) for i in dense_candidates(snap.index, vector, k)]


def plain_bm25(snap: Snapshot, query: str, k: int) -> list[int]:
    ids, _ = snap.index.lexical.top(lexical.terms(query), k)
    return [int(i) for i in ids]


RETRIEVERS: dict[str, Retriever] = {"ours": ours, "plain BM25": plain_bm25,
                                    "plain dense": plain_dense}


# --- question sets with gold phrases ---

@dataclass
class Figures:
    answerable: int = 0
    hit: int = 0
    rr: float = 0.0
    answer1: int = 0
    unanswerable: int = 0
    declined: int = 0
    false_declines: int = 0
    followups: int = 0
    followup_hits: int = 0
    cite_chars: list[int] = field(default_factory=list)
    answer_chars: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # (confidence, whether the answer is right) for every question, for calibration
    confidences: list[tuple[float, bool]] = field(default_factory=list)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def _hit_rank(texts: Sequence[str], gold: Sequence[str]) -> int | None:
    return next((r for r, t in enumerate(texts, 1)
                 if len(t) <= MAX_CITE and any(g in norm(t) for g in gold)), None)


def eval_questions(snap: Snapshot, questions: Sequence[dict[str, Any]],
                   chats: Sequence[dict[str, Any]], misses: list[str],
                   ) -> dict[str, dict[str, Figures]]:
    """Figures per retriever and per split ('all', 'dev', 'held-out')."""
    out: dict[str, dict[str, Figures]] = {}
    for name, retriever in RETRIEVERS.items():
        figs = {s: Figures() for s in ("all", "dev", "held-out")}
        for q in questions:
            selected = (figs["all"], figs[split_of(q["id"])])
            gold = [norm(g) for g in q["gold"]]
            if name == "ours":
                started = time.perf_counter()
                answer = snap.ask(q["question"], K)
                took = (time.perf_counter() - started) * 1000
                texts = [c.text for c in answer.citations]
                right = (answer.answered and len(answer.text) <= MAX_ANSWER
                         and any(g in norm(answer.text) for g in gold))
                for f in selected:
                    f.latencies.append(took)
                    f.cite_chars += [len(t) for t in texts]
                    f.answer_chars.append(len(answer.text))
                    f.confidences.append((answer.confidence, bool(q["answerable"] and right)))
                if not q["answerable"]:
                    for f in selected:
                        f.unanswerable += 1
                        f.declined += not answer.answered
                    if answer.answered:
                        misses.append(f"NO-DECLINE {q['id']} {q['question']!r} "
                                      f"({answer.confidence}) -> {answer.text[:100]!r}")
                    continue
                for f in selected:
                    f.answer1 += right
                    f.false_declines += not answer.answered
                if not right:
                    misses.append(f"ANSWER {q['id']} {q['question']!r} ({answer.confidence}) "
                                  f"-> {answer.text[:120]!r}")
            elif not q["answerable"]:
                continue
            else:
                texts = [snap.index.text(i) for i in retriever(snap, q["question"], K)]
            rank = _hit_rank(texts, gold)
            for f in selected:
                f.answerable += 1
                if rank:
                    f.hit += 1
                    f.rr += 1 / rank
            if not rank and name == "ours":
                misses.append(f"MISS {q['id']} {q['question']!r}")
        for c in chats:
            selected = (figs["all"], figs[split_of(c["id"])])
            query = standalone_query(c["turns"]) if name == "ours" else c["turns"][-1]
            texts = [snap.index.text(i) for i in retriever(snap, query, K)]
            found = _hit_rank(texts, [norm(g) for g in c["gold"]]) is not None
            for f in selected:
                f.followups += 1
                f.followup_hits += found
            if not found and name == "ours":
                misses.append(f"CHAT-MISS {c['id']} {query!r}")
        out[name] = figs
    return out


# --- SciFact: document ranking ---

def scifact_corpus(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "corpus.jsonl").exists():
        with gzip.open(SHARED / "eval" / "scifact" / "corpus.jsonl.gz", "rb") as src:
            (target / "corpus.jsonl").write_bytes(src.read())
    return target


def scifact_queries() -> tuple[dict[str, str], dict[str, set[str]]]:
    folder = SHARED / "eval" / "scifact"
    queries = {r["_id"]: r["text"] for r in read_jsonl(folder / "queries_train.jsonl")}
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


def eval_scifact(snap: Snapshot) -> dict[str, dict[str, float]]:
    queries, qrels = scifact_queries()
    out: dict[str, dict[str, float]] = {}
    for name, retriever in RETRIEVERS.items():
        per_split: dict[str, list[tuple[float, float]]] = {"all": [], "dev": [], "held-out": []}
        for qid, text in queries.items():
            score = ndcg_recall(rank_documents(snap, retriever(snap, text, 100)), qrels[qid])
            per_split["all"].append(score)
            per_split[split_of(qid)].append(score)
        for s, scores in per_split.items():
            out[f"{name}|{s}"] = {"ndcg@10": float(np.mean([x[0] for x in scores])),
                                  "recall@10": float(np.mean([x[1] for x in scores])),
                                  "queries": len(scores)}
    return out


# --- printing ---

def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


HEADER = ["corpus", "split", "retriever", "hit@3", "MRR@3", "answer@1", "declines",
          "false declines", "follow-ups", "median cite", "median answer", "p50 ms"]


def rows_for(corpus: str, figures: dict[str, dict[str, Figures]], splits: bool) -> list[list[str]]:
    rows = []
    for split in ("all", "dev", "held-out") if splits else ("all",):
        for name, figs in figures.items():
            f = figs[split]
            if name != "ours" and split != "all":
                continue
            row = [corpus, split, name, f"{f.hit}/{f.answerable}",
                   f"{f.rr / max(f.answerable, 1):.3f}"]
            if name == "ours":
                row += [f"{f.answer1}/{f.answerable}", f"{f.declined}/{f.unanswerable}",
                        f"{f.false_declines}/{f.answerable}",
                        f"{f.followup_hits}/{f.followups}" if f.followups else "-",
                        f"{statistics.median(f.cite_chars):.0f}",
                        f"{statistics.median(f.answer_chars):.0f}",
                        f"{statistics.median(f.latencies):.2f}"]
            else:
                row += ["-", "-", "-",
                        f"{f.followup_hits}/{f.followups}" if f.followups else "-",
                        "-", "-", "-"]
            rows.append(row)
    return rows


def calibration(figs: Figures, bins: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 1.01),
                ) -> str:
    """Predicted confidence against the observed share of right answers, per bin."""
    parts = []
    for lo, hi in zip(bins, bins[1:], strict=False):
        inside = [right for conf, right in figs.confidences if lo <= conf < hi]
        if inside:
            mean = statistics.mean(c for c, _ in figs.confidences if lo <= c < hi)
            parts.append(f"[{lo:.1f},{min(hi, 1):.1f}) n={len(inside)} predicted {mean:.2f} "
                         f"observed {sum(inside) / len(inside):.2f}")
    return "; ".join(parts)


def to_json(figures: dict[str, dict[str, Figures]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, figs in figures.items():
        for split, f in figs.items():
            out[f"{name}|{split}"] = {
                "hit@3": f.hit, "answerable": f.answerable,
                "mrr@3": round(f.rr / max(f.answerable, 1), 4), "answer@1": f.answer1,
                "declined": f.declined, "unanswerable": f.unanswerable,
                "false_declines": f.false_declines, "followup_hits": f.followup_hits,
                "followups": f.followups,
                "median_citation_chars": statistics.median(f.cite_chars) if f.cite_chars else None,
                "median_answer_chars":
                    statistics.median(f.answer_chars) if f.answer_chars else None,
                "p50_ms": round(statistics.median(f.latencies), 3) if f.latencies else None}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global CHUNK_CHARS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--only", choices=["article", "tts", "scifact"], action="append",
                        help="evaluate only these corpora (repeatable)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep built indexes here and reuse them (default: a temp folder)")
    parser.add_argument("--misses", action="store_true", help="list every miss")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--chunk-chars", type=int, default=CHUNK_CHARS,
                        help="longest passage (default: the product's); use a fresh --work")
    args = parser.parse_args(argv)
    # Settings read the environment for what is not passed: a QA_* variable in the shell must
    # not change what is measured.
    for name in [k for k in os.environ if k.startswith("QA_")]:
        del os.environ[name]
    CHUNK_CHARS = args.chunk_chars
    wanted = set(args.only or ["article", "tts", "scifact"])
    if args.skip_scifact:
        wanted.discard("scifact")
    figures: dict[str, Any] = {}
    rows = [HEADER]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qa-eval-") as tmp:
        work = args.work or Path(tmp)
        sets = ROOT / "eval" / "sets"
        tts = SHARED / "eval" / "tts-handbook"
        corpora: list[tuple[str, Path, list[tuple[str, Path, Path | None]]]] = []
        if "article" in wanted:
            corpora.append(("article", ROOT / "corpus", [
                ("article, public", SHARED / "eval" / "seed_qa.jsonl",
                 SHARED / "eval" / "chat_followups.jsonl"),
                ("article, our paraphrases", sets / "article-paraphrases.jsonl", None)]))
        if "tts" in wanted:
            corpora.append(("tts", tts / "corpus",
                            [("TTS handbook", tts / "qa.jsonl", tts / "chat.jsonl"),
                             ("TTS handbook, fresh", sets / "tts-fresh.jsonl", None)]))
        for key, corpus, question_sets in corpora:
            seconds = build(corpus, work / f"{key}-index")
            snap = open_snapshot(corpus, work / f"{key}-index")
            notes.append(f"{key}: index built in {seconds:.1f} s, "
                         f"{len(snap.index.chunks)} chunks")
            for label, qa, chat in question_sets:
                misses: list[str] = []
                result = eval_questions(snap, read_jsonl(qa), read_jsonl(chat) if chat else [],
                                        misses)
                figures[label] = to_json(result)
                rows += rows_for(label, result, splits=label == "TTS handbook")
                notes.append(f"calibration, {label}: {calibration(result['ours']['all'])}")
                if args.misses:
                    notes += [f"  {label}: {m}" for m in misses]
        if "scifact" in wanted:
            corpus = scifact_corpus(work / "scifact-corpus")
            seconds = build(corpus, work / "scifact-index")
            snap = open_snapshot(corpus, work / "scifact-index")
            notes.append(f"scifact: index built in {seconds:.1f} s, "
                         f"{len(snap.index.chunks)} chunks")
            scifact = eval_scifact(snap)
            figures["scifact"] = scifact
            sci_rows = [["SciFact train", "split", "retriever", "nDCG@10", "recall@10",
                         "queries"]]
            for key2, r in scifact.items():
                name, split = key2.split("|")
                if name == "ours" or split == "all":
                    sci_rows.append(["SciFact train", split, name, f"{r['ndcg@10']:.4f}",
                                     f"{r['recall@10']:.4f}", str(r["queries"])])
            notes.append("\n" + table(sci_rows))
    print(table(rows))
    for note in notes:
        print(note)
    out = args.out or Path(tempfile.gettempdir()) / "qa-eval.json"
    out.write_text(json.dumps(figures, indent=2, default=str), "utf-8")
    print(f"\nfigures written to {out}")
    return figures


if __name__ == "__main__":
    main()
