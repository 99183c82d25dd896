"""Insights: figures per day, gaps in the text, unhelpful answers, cited and uncited documents."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import orjson
import sqlalchemy as sa
from pydantic import BaseModel

from service.index import lexical
from service.ingest.chunking import Chunk
from service.ingest.corpus import Document
from service.usage.records import DAY, Store, answer_docs, answers, feedback

TOP = 10
MAX_GROUPED = 5000  # the most recent declined questions considered for grouping
# Cosine of two questions' vectors (all-MiniLM-L6-v2) at which they are one. Near-identical
# wordings measured 0.88-0.98 ("How do I reset my password?" / "I forgot my password, how can
# I change it?"); questions about one thing that ask something else mostly 0.5-0.79 ("How do
# I renew the travel card?" / "How do I reset the travel card?"), a few up to 0.83. Looser
# paraphrases (0.5-0.78) stay apart: two groups for one gap hide less than one for two.
SAME_MEANING = 0.8
GROUP_BLOCK = 512
NEVER_CITED_SHOWN = 200


class DayOut(BaseModel):
    day: str
    questions: int
    answered: int
    declined: int
    helpful: int
    not_helpful: int
    p50_ms: float | None
    p95_ms: float | None


class GapOut(BaseModel):
    count: int
    example: str
    variants: int


class PassageOut(BaseModel):
    doc_id: str
    start: int
    end: int
    title: str | None
    heading: str | None
    text: str | None


class UnhelpfulOut(BaseModel):
    not_helpful: int
    helpful: int
    citations: list[PassageOut]
    comments: list[str]
    example_question: str | None


class DocCount(BaseModel):
    doc_id: str
    title: str | None
    count: int


class InsightsOut(BaseModel):
    collection: str
    since: str
    until: str
    days: int
    questions_stored: bool
    questions: int
    answered: int
    declined: int
    answered_share: float | None
    helpful: int
    not_helpful: int
    helpful_share: float | None
    p50_ms: float | None
    p95_ms: float | None
    per_day: list[DayOut]
    unanswered: list[GapOut]
    not_helpful_answers: list[UnhelpfulOut]
    most_cited: list[DocCount]
    never_cited: list[str]
    never_cited_total: int
    index_version: str | None


@dataclass(frozen=True)
class Corpus:
    """What insights read from the served index: titles and the passage behind a citation."""

    version: str | None
    documents: Mapping[str, Document] = field(default_factory=dict)
    chunks: Sequence[Chunk] = ()

    @cached_property
    def headings(self) -> dict[tuple[str, int], str]:
        return {(c.doc_id, c.start): c.heading for c in self.chunks if c.heading}

    def title(self, doc_id: str) -> str | None:
        doc = self.documents.get(doc_id)
        return doc.title if doc is not None else None


def _iso(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _percentiles(values: np.ndarray) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    p50, p95 = np.percentile(values, [50, 95])
    return round(float(p50), 2), round(float(p95), 2)


def group_questions(questions: Iterable[tuple[str, bytes | None]],
                    threshold: float = SAME_MEANING, top: int = TOP) -> list[GapOut]:
    """Questions that mean nearly the same merged: wordings with equal stemmed content words
    first, then, by the encoder's vectors stored with them, any whose cosine with a bigger
    group's first one reaches `threshold`. A question stored without a vector (recorded
    before vectors were kept) is merged by its words only."""
    by_terms: dict[frozenset[str], Counter[str]] = defaultdict(Counter)
    vector_of: dict[frozenset[str], bytes] = {}
    for q, vector in questions:
        terms = frozenset(lexical.terms(q)) or frozenset([q.strip().lower()])
        by_terms[terms][q.strip()] += 1
        if vector and terms not in vector_of:
            vector_of[terms] = vector
    keys = sorted(by_terms, key=lambda k: (-sum(by_terms[k].values()), min(by_terms[k])))
    # Vectors of one model only: the most common size (another model's are left out).
    size = Counter(len(v) for v in vector_of.values()).most_common(1)
    with_vector = [k for k in keys if size and len(vector_of.get(k, b"")) == size[0][0]]
    leader_of = _leaders(with_vector, vector_of, threshold)
    members: dict[frozenset[str], list[frozenset[str]]] = defaultdict(list)
    for key in keys:
        members[leader_of.get(key, key)].append(key)
    out = []
    for group in members.values():
        wordings: Counter[str] = Counter()
        for key in group:
            wordings.update(by_terms[key])
        example = min(wordings, key=lambda w: (-wordings[w], len(w), w))
        out.append(GapOut(count=sum(wordings.values()), example=example, variants=len(wordings)))
    out.sort(key=lambda g: (-g.count, g.example))
    return out[:top]


def _leaders(keys: Sequence[frozenset[str]], vector_of: Mapping[frozenset[str], bytes],
             threshold: float) -> dict[frozenset[str], frozenset[str]]:
    """Each key's group leader: in order (most asked first), a key joins the most similar
    leader so far when the cosine reaches `threshold`, else leads a group of its own.
    Similarities are computed a block of keys at a time, as matrix products."""
    if not keys:
        return {}
    packed = np.frombuffer(b"".join(vector_of[k] for k in keys), dtype=np.float16)
    vectors = packed.astype(np.float32).reshape(len(keys), -1)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
    leaders: list[int] = []
    leader_of: dict[frozenset[str], frozenset[str]] = {}
    for start in range(0, len(keys), GROUP_BLOCK):
        block = vectors[start:start + GROUP_BLOCK]
        to_leaders = block @ vectors[leaders].T if leaders else np.zeros((len(block), 0))
        block_sims = block @ block.T
        made = np.zeros(len(block), dtype=bool)  # which of the block's keys lead a group
        for j in range(len(block)):
            best, score = -1, threshold
            if to_leaders.shape[1]:
                column = int(np.argmax(to_leaders[j]))
                if to_leaders[j, column] >= score:
                    best, score = leaders[column], float(to_leaders[j, column])
            if j and made[:j].any():
                row = np.where(made[:j], block_sims[j, :j], -1.0)
                column = int(np.argmax(row))
                if row[column] >= score:
                    best = start + column
            if best < 0:
                made[j] = True
                best = start + j
            leader_of[keys[start + j]] = keys[best]
        leaders.extend(start + int(position) for position in np.flatnonzero(made))
    return leader_of


def compute(store: Store, corpus: Corpus, *, collection: str, days: int,
            questions_stored: bool, cutoff: float, now: float | None = None) -> InsightsOut:
    """The insights for the last `days` days (never past retention, `cutoff`). Each read is
    one pass over a covering index of the period; the arithmetic is done here, in numpy."""
    now = time.time() if now is None else now
    today = int(now // DAY)
    first_day = today - days + 1
    since = max(first_day * DAY, cutoff)
    a, f, d = answers, feedback, answer_docs
    in_period = sa.and_(a.c.collection == collection, a.c.at >= since)

    rows = store.rows(sa.select(a.c.day, a.c.answered, a.c.latency_ms).where(in_period))
    table = np.array(rows, dtype=np.float64).reshape(-1, 3)
    day_of = table[:, 0].astype(np.int64) - first_day
    answered_of = table[:, 1] > 0
    lat = table[:, 2]
    total_by_day = np.bincount(day_of, minlength=days)[:days]
    answered_by_day = np.bincount(day_of, weights=answered_of, minlength=days)[:days]

    vote_rows = store.rows(sa.select(f.c.answer_at, f.c.helpful).where(
        f.c.collection == collection, f.c.answer_at >= since))
    votes = np.array(vote_rows, dtype=np.float64).reshape(-1, 2)
    vote_day = (votes[:, 0] // DAY).astype(np.int64) - first_day
    voted_by_day = np.bincount(vote_day, minlength=days)[:days]
    helpful_by_day = np.bincount(vote_day, weights=votes[:, 1] > 0, minlength=days)[:days]

    order = np.argsort(day_of, kind="stable")
    sorted_days, sorted_lat = day_of[order], lat[order]
    bounds = np.searchsorted(sorted_days, np.arange(days + 1))
    per_day = []
    for i in range(days):
        p50, p95 = _percentiles(sorted_lat[bounds[i]:bounds[i + 1]])
        total, answered_n = int(total_by_day[i]), int(answered_by_day[i])
        voted, helpful_n = int(voted_by_day[i]), int(helpful_by_day[i])
        per_day.append(DayOut(day=_iso(first_day + i), questions=total, answered=answered_n,
                              declined=total - answered_n, helpful=helpful_n,
                              not_helpful=voted - helpful_n, p50_ms=p50, p95_ms=p95))

    unanswered: list[GapOut] = []
    if questions_stored:
        declined = store.rows(sa.select(a.c.question, a.c.question_vector).where(
            in_period, sa.not_(a.c.answered), a.c.question.is_not(None))
            .order_by(a.c.at.desc()).limit(MAX_GROUPED))
        unanswered = group_questions((str(q), bytes(v) if v is not None else None)
                                     for q, v in declined)

    # From the votes (few) to their answers, never the other way round.
    bad_votes = sa.select(f.c.answer_id, f.c.helpful).where(
        f.c.collection == collection, f.c.answer_at >= since).subquery()
    not_helpful_int = sa.case((bad_votes.c.helpful, 0), else_=1)
    helpful_int = sa.case((bad_votes.c.helpful, 1), else_=0)
    worst = store.query(
        sa.select(a.c.quoted, sa.func.sum(not_helpful_int), sa.func.sum(helpful_int),
                  sa.func.max(a.c.question))
        .select_from(bad_votes.join(a, a.c.id == bad_votes.c.answer_id))
        .group_by(a.c.quoted).having(sa.func.sum(not_helpful_int) > 0)
        .order_by(sa.func.sum(not_helpful_int).desc(), a.c.quoted).limit(TOP))
    unhelpful = []
    for quoted, bad, good, question in worst:
        comments = [str(r[0]) for r in store.query(
            sa.select(f.c.comment).select_from(f.join(a, a.c.id == f.c.answer_id))
            .where(f.c.collection == collection, f.c.answer_at >= since,
                   a.c.quoted == quoted, sa.not_(f.c.helpful), f.c.comment.is_not(None))
            .order_by(f.c.at.desc()).limit(3))]
        unhelpful.append(UnhelpfulOut(
            not_helpful=int(bad), helpful=int(good or 0),
            citations=[_passage(corpus, doc, start, end) for doc, start, end in
                       orjson.loads(quoted)],
            comments=comments, example_question=question if questions_stored else None))

    cited = {str(doc): int(n) for doc, n in store.rows(
        sa.select(d.c.doc_id, sa.func.count()).where(
            d.c.collection == collection, d.c.at >= since, d.c.answered).group_by(d.c.doc_id))}
    most = sorted(cited.items(), key=lambda item: (-item[1], item[0]))[:TOP]
    never = sorted(set(corpus.documents) - set(cited))

    total_all, answered_all = int(total_by_day.sum()), int(answered_by_day.sum())
    voted_all, helpful_all = int(voted_by_day.sum()), int(helpful_by_day.sum())
    p50, p95 = _percentiles(lat)
    return InsightsOut(
        collection=collection, since=_iso(first_day), until=_iso(today), days=days,
        questions_stored=questions_stored, questions=total_all, answered=answered_all,
        declined=total_all - answered_all, answered_share=_share(answered_all, total_all),
        helpful=helpful_all, not_helpful=voted_all - helpful_all,
        helpful_share=_share(helpful_all, voted_all), p50_ms=p50, p95_ms=p95,
        per_day=per_day, unanswered=unanswered, not_helpful_answers=unhelpful,
        most_cited=[DocCount(doc_id=doc, title=corpus.title(doc), count=n) for doc, n in most],
        never_cited=never[:NEVER_CITED_SHOWN], never_cited_total=len(never),
        index_version=corpus.version)


def _passage(corpus: Corpus, doc_id: str, start: int, end: int) -> PassageOut:
    doc = corpus.documents.get(doc_id)
    text = doc.text if doc is not None else None
    return PassageOut(doc_id=doc_id, start=start, end=end, title=corpus.title(doc_id),
                      heading=corpus.headings.get((doc_id, start)),
                      text=text[start:end] if text is not None and end <= len(text) else None)


def to_csv(report: InsightsOut, table: str) -> str:
    """One table of the report as CSV: `days`, `unanswered`, `not_helpful` or `documents`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rows: Sequence[Sequence[object]]
    if table == "days":
        writer.writerow(["day", "questions", "answered", "declined", "helpful", "not_helpful",
                         "p50_ms", "p95_ms"])
        rows = [[d.day, d.questions, d.answered, d.declined, d.helpful, d.not_helpful,
                 "" if d.p50_ms is None else d.p50_ms, "" if d.p95_ms is None else d.p95_ms]
                for d in report.per_day]
    elif table == "unanswered":
        writer.writerow(["count", "variants", "example"])
        rows = [[g.count, g.variants, _cell(g.example)] for g in report.unanswered]
    elif table == "not_helpful":
        writer.writerow(["not_helpful", "helpful", "citations", "comments"])
        rows = [[u.not_helpful, u.helpful,
                 " | ".join(f"{c.doc_id}:{c.start}-{c.end}" for c in u.citations),
                 _cell(" | ".join(u.comments))] for u in report.not_helpful_answers]
    elif table == "documents":
        writer.writerow(["doc_id", "title", "cited"])
        rows = [[_cell(c.doc_id), _cell(c.title or ""), c.count] for c in report.most_cited]
        rows = [*rows, *[[_cell(doc), _cell(""), 0] for doc in report.never_cited]]
    else:
        raise ValueError(f"no table {table!r}: days, unanswered, not_helpful or documents")
    writer.writerows(rows)
    return out.getvalue()


def _cell(text: str) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheets: keep it text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
