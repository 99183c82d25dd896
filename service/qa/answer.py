"""Composing an answer: the best-supported sentences of the retrieved passages, each cited."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np

from service.index import lexical
from service.index.acronyms import initials_match
from service.ingest import markup
from service.ingest.chunking import REFERS_BACK
from service.ingest.corpus import Document
from service.qa.answertype import NO_WANT, Want, gives, gives_exactly
from service.qa.retrieval import Hit, SearchIndex

MAX_ANSWER_CHARS = 500
DECLINE_TEXT = ("The text does not answer this. The passages below are the closest it has, "
                "and they may not be relevant.")

# Sentence score = weights . (cosine to the question, share of the question's term weight the
# sentence contains, the passage's fused retrieval score).
SENTENCE_WEIGHTS = (0.6, 0.25, 0.15)
# Added to the score of a sentence that gives the kind of answer the question wants.
TYPE_WEIGHT = 0.08
# Added again when it gives an amount or a duration in the form asked: the number joined to
# what the question counts or to a unit.
EXACT_TYPE_WEIGHT = 0.04
# Passages are re-ordered by their fused retrieval score plus this times their best sentence's
# score: a passage with a sentence that answers moves above one that only resembles the
# question as a whole. Chosen on the dev halves (README, "Quality"; 0.75-1.5 gave the same).
RERANK_WEIGHT = 1.0
# Taken from the score of a sentence that only leads elsewhere: one ending in a colon (the
# answer is in the list after it) or a short pointer ("See the Transit page.").
LEAD_IN_PENALTY = 0.06
# A second sentence joins the answer when it scores this close to the first; a sentence that
# continues the first ("They can ...") joins more easily, since it usually completes it.
SECOND_SENTENCE_RATIO = 0.9
CONTINUATION_RATIO = 0.8
_SPACE_BEFORE_PUNCT = re.compile(r" ([.,;:!?)])")
# Logistic model of P(the quoted passage addresses the question) from the best sentence's
# cosine, term coverage and whether it gives the kind of answer wanted, fitted by
# eval/calibrate.py on SciFact claims and the dev halves of two intranet-style question sets
# (README, "Quality"). Below DECLINE_BELOW the answer is declined: the highest threshold that
# still answers 95% of the answerable calibration examples, since a cited weak answer can be
# checked, a false decline cannot.
CONFIDENCE_COEF = (-7.37, 7.10, 4.42, 0.27)
DECLINE_BELOW = 0.08


@dataclass(frozen=True)
class Citation:
    n: int
    doc_id: str
    title: str
    heading: str
    start: int
    end: int
    text: str
    score: float
    highlights: tuple[tuple[int, int], ...]
    page: int | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    answered: bool
    confidence: float
    citations: tuple[Citation, ...]
    # The text as (quote, citation number or None) pieces, joined by spaces. Clients place
    # citation markers from these, never by pattern: a quoted sentence may contain "[2]".
    parts: tuple[tuple[str, int | None], ...] = ()
    # The question's unit vector as retrieval encoded it: the answer store keeps it (with the
    # question text, when that is kept) so the insights can group questions by meaning.
    query_vector: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ScoredSentence:
    hit: int  # position in the hit list
    position: int  # index among its passage's sentences
    start: int
    end: int
    score: float
    cosine: float
    coverage: float
    typed: bool = False  # gives the kind of answer the question wants


def coverage(index: SearchIndex, query_terms: Sequence[str], text: str) -> float:
    """Share of the question's IDF weight whose terms occur in `text` (0..1)."""
    weights = [(t, index.lexical.term_idf(t)) for t in set(query_terms)]
    return _share(weights, set(lexical.terms(text)))


def _share(weights: Sequence[tuple[Hashable, float]], present: AbstractSet[Hashable]) -> float:
    total = sum(w for _, w in weights)
    if total <= 0:
        return 0.0
    return sum(w for key, w in weights if key in present) / total


def score_sentences(index: SearchIndex, query_vector: np.ndarray, query_terms: Sequence[str],
                    hits: Sequence[Hit], want: Want = NO_WANT) -> list[ScoredSentence]:
    """Every sentence of the hit passages, best first; a sentence that gives the kind of
    answer the question wants (an amount, a time, a name, a verdict) scores higher."""
    scored: list[ScoredSentence] = []
    w_cos, w_cov, w_hit = SENTENCE_WEIGHTS
    # coverage() by the sentence term ids computed at load, not by re-reading each sentence.
    terms = index.sentence_terms
    # The question's terms by id; one no sentence uses gets an id of its own below zero, so
    # marking one such term present never marks the others.
    unknown = {t: -2 - n for n, t in enumerate(sorted({
        t for t in (*query_terms, *(a for a, _ in want.spelled_out),
                    *(term for _, term in want.undefined)) if terms.id_of(t) < 0}))}

    def asked(term: str) -> int:
        return unknown.get(term, terms.id_of(term))

    weights = [(asked(t), index.lexical.term_idf(t)) for t in set(query_terms)]
    # A question's abbreviation is present where the sentence spells it out instead.
    spelled = {asked(a): frozenset(terms.id_of(t) for t in e) for a, e in want.spelled_out}
    undefined = {asked(term): token for token, term in want.undefined}
    # ... and the question's spelled-out form is present where the sentence abbreviates it.
    short = {terms.id_of(a): frozenset(asked(t) for t in e) for a, e in want.abbreviated}
    short.pop(-1, None)
    # A question term is answered by its negation too: "paid?" by "unpaid".
    negated = {terms.id_of(p + t): asked(t) for t in set(query_terms) for p in ("un", "non")}
    # ... and the question's negated word by the plain one: "unclear?" by "not clear".
    negated.update({terms.id_of(t[len(p):]): asked(t) for t in set(query_terms)
                    for p in ("un", "non") if t.startswith(p) and len(t) > len(p) + 3})
    negated.pop(-1, None)
    for h, hit in enumerate(hits):
        chunk = index.chunks[hit.chunk]
        view = index.views[chunk.doc_id]
        first = int(index.sentence_ptr[hit.chunk])
        # As Python floats and sets, read once a passage: per sentence, numpy's scalars and
        # small reads cost more than the arithmetic.
        matrix = hit.sentences if hit.sentences is not None else index.sentence_matrix(hit.chunk)
        cosines = (matrix @ query_vector).tolist()
        sets = terms.run(first, first + len(chunk.sentences))
        for p, ((start, end), cos, present) in enumerate(
                zip(chunk.sentences, cosines, sets, strict=True)):
            sentence = view[start:end]
            if spelled or undefined or short or negated:
                present = present | {
                    a for a, e in spelled.items() if e <= present} | {
                    a for a, token in undefined.items() if initials_match(token, sentence)} | {
                    t for a, e in short.items() if a in present for t in e} | {
                    t for n, t in negated.items() if n in present}
            cov = _share(weights, present)
            score = w_cos * cos + w_cov * cov + w_hit * hit.score
            typed = gives(want, sentence)
            score += TYPE_WEIGHT * typed
            if typed and gives_exactly(want, sentence):
                score += EXACT_TYPE_WEIGHT
            if _leads_in(sentence):
                score -= LEAD_IN_PENALTY
            scored.append(ScoredSentence(h, p, start, end, score, cos, cov, typed))
    scored.sort(key=lambda s: -s.score)
    return scored


def confidence(best: ScoredSentence) -> float:
    bias, w_cos, w_cov, w_typed = CONFIDENCE_COEF
    return 1.0 / (1.0 + math.exp(-(bias + w_cos * best.cosine + w_cov * best.coverage
                                   + w_typed * best.typed)))


def rerank(hits: Sequence[Hit], sentences: Sequence[ScoredSentence], keep: int,
           ) -> tuple[list[Hit], list[ScoredSentence]]:
    """The `keep` hits best by their fused score plus RERANK_WEIGHT times their best
    sentence's score, in that order, and the sentences of those hits (`sentences` scored over
    `hits`, best first; their hit positions renumbered to the new order)."""
    best: dict[int, float] = {}
    for s in sentences:
        best.setdefault(s.hit, s.score)
    order = sorted(range(len(hits)),
                   key=lambda h: -(hits[h].score + RERANK_WEIGHT * best.get(h, 0.0)))[:keep]
    position = {h: n for n, h in enumerate(order)}
    # Only the sentences whose passage moved are copied (most questions move none), by the
    # constructor: dataclasses.replace reads the fields anew for each copy.
    return ([hits[h] for h in order],
            [s if position[s.hit] == s.hit else ScoredSentence(
                position[s.hit], s.position, s.start, s.end, s.score, s.cosine, s.coverage,
                s.typed) for s in sentences if s.hit in position])


def compose_answer(index: SearchIndex, query_vector: np.ndarray, query_terms: Sequence[str],
                   hits: Sequence[Hit], want: Want = NO_WANT, k: int | None = None,
                   keep: int | None = None) -> Answer:
    """Answer from the hits' best sentences; decline when support is too weak. The hits are
    first re-ranked by their best sentences (`rerank`), and only the best `keep` of them
    (default all) are read further. With `k` below that, the extra hits are candidates only: a
    passage whose sentence answers best is cited (first) even from below the top k, and k
    passages are cited."""
    sentences = score_sentences(index, query_vector, query_terms, hits, want)
    hits, sentences = rerank(hits, sentences, len(hits) if keep is None else keep)
    k = len(hits) if k is None else k
    if not sentences:
        return Answer(DECLINE_TEXT, False, 0.0, _citations(index, hits[:k], [], {}),
                      ((DECLINE_TEXT, None),))
    best = sentences[0]
    conf = confidence(best)
    if conf < DECLINE_BELOW:
        return Answer(DECLINE_TEXT, False, round(conf, 3),
                      _citations(index, hits[:k], [], {}), ((DECLINE_TEXT, None),))
    chosen = [best, *_companion(index, hits, sentences, best)]
    # Read in document order when both come from one passage.
    if len(chosen) == 2 and chosen[0].hit == chosen[1].hit and chosen[1].start < chosen[0].start:
        chosen.reverse()
    order = list(dict.fromkeys(s.hit for s in chosen))
    number = {h: n for n, h in enumerate(order, start=1)}
    parts: list[str] = []
    pieces: list[tuple[str, int | None]] = []
    highlights: dict[int, list[tuple[int, int]]] = {}
    budget = MAX_ANSWER_CHARS
    for s in chosen:
        doc_id = index.chunks[hits[s.hit].chunk].doc_id
        view = index.views[doc_id]
        end = _clip(view, s.start, s.end, budget - 6)
        quote = shown_sentence(index.documents[doc_id], view, s.start, end, budget - 6)
        quote += "…" if end < s.end else ""
        parts.append(f"{quote} [{number[s.hit]}]")
        pieces.append((quote, number[s.hit]))
        highlights.setdefault(s.hit, []).append((s.start, end))
        budget -= len(parts[-1]) + 1
    return Answer(" ".join(parts), True, round(conf, 3),
                  _citations(index, hits, order, highlights, k), tuple(pieces))


def _companion(index: SearchIndex, hits: Sequence[Hit], sentences: list[ScoredSentence],
               best: ScoredSentence) -> list[ScoredSentence]:
    """The sentence, if any, that should stand beside the best one in the answer."""
    text = index.documents[index.chunks[hits[best.hit].chunk].doc_id].text

    def fits(other: ScoredSentence) -> bool:
        return (other.end - other.start) + (best.end - best.start) + 10 <= MAX_ANSWER_CHARS

    neighbours = {s.position: s for s in sentences if s.hit == best.hit}
    before, after = neighbours.get(best.position - 1), neighbours.get(best.position + 1)
    # An answer opening with "They ..." needs the sentence that says who they are.
    if before and REFERS_BACK.match(text, best.start) and fits(before):
        return [before]
    for other in sentences[1:]:
        if other.score < SECOND_SENTENCE_RATIO * best.score:
            break
        if fits(other):
            return [other]
    if (after and REFERS_BACK.match(text, after.start) and fits(after)
            and after.score >= CONTINUATION_RATIO * best.score):
        return [after]
    return []


def shown_sentence(doc: Document, view: str, start: int, end: int, limit: int) -> str:
    """The quoted sentence as the answer shows it: the visible text with its white space
    folded, and a table row as `header: cell` pairs when its table has a header row."""
    if markup.is_markdown(doc.id):
        line_start, line_end = markup.line_bounds(doc.text, start)
        whole_row = not doc.text[end:line_end].strip(" \t|")
        if markup.is_table_row(doc.text[line_start:line_end]) and whole_row:
            cells = markup.row_cells(doc.text, view, line_start, line_end)
            header = markup.table_header(doc.text, view, line_start)
            if header and len(header) == len(cells) and header != cells:
                shown = "; ".join(f"{h}: {c}" if h else c
                                  for h, c in zip(header, cells, strict=True) if c)
                if len(shown) <= limit:
                    return shown
            return " · ".join(c for c in cells if c)
        # Blanked markup leaves a space before the punctuation that followed it.
        return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(view[start:end].split()))
    return " ".join(view[start:end].split())


def _clip(text: str, start: int, end: int, limit: int) -> int:
    """End of the longest prefix of text[start:end] within `limit` characters, at a word break."""
    if end - start <= limit:
        return end
    cut = text.rfind(" ", start, start + limit)
    return cut if cut > start else start + limit


def _citations(index: SearchIndex, hits: Sequence[Hit], used: list[int],
               highlights: dict[int, list[tuple[int, int]]], k: int | None = None,
               ) -> tuple[Citation, ...]:
    """Passages the answer quotes first (in the order quoted), then the rest by rank; k in
    all."""
    order = (used + [h for h in range(len(hits)) if h not in used])[:k]
    out = []
    for n, h in enumerate(order, start=1):
        chunk = index.chunks[hits[h].chunk]
        doc = index.documents[chunk.doc_id]
        out.append(Citation(n, doc.id, doc.title, chunk.heading, chunk.start, chunk.end,
                            doc.text[chunk.start : chunk.end], round(hits[h].score, 4),
                            tuple(sorted(highlights.get(h, []))), doc.page_at(chunk.start)))
    return tuple(out)


_POINTERS = ("see ", "refer to ", "visit ", "go to ", "check out ", "read ")


def _leads_in(sentence: str) -> bool:
    """A sentence that introduces what follows or points elsewhere, saying nothing itself."""
    text = sentence.rstrip()
    return text.endswith(":") or (text.lower().startswith(_POINTERS)
                                  and len(text.split()) <= 12)
