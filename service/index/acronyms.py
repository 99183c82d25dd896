"""Abbreviations and their expansions, learned from the corpus itself.

A text that writes "paid time off (PTO)" or "FMLA (Family and Medical Leave Act)" defines an
abbreviation; a question may use the short form where the answer spells it out. Answers count
the spelled-out form as the abbreviation (`Acronyms.spelled_out`) and the abbreviation as a
spelled-out form the question uses (`Acronyms.abbreviated`), and `initials_match`
recognises an abbreviation the corpus never defines ("CEO") in a sentence that spells it out
("chief executive officer"). (Adding the other form to the search terms was tried: it lowered
SciFact's nDCG@10 by 0.01, whose abstracts define many abbreviations, and found nothing more
in the handbook.) All scans are
single passes with `str.find` and word lists: linear in the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from service.index import lexical

# Words an abbreviation usually skips: "VP of Product" is VP, "Family and Medical Leave" FML.
_SKIPPED = frozenset("of and for the to in on & a an".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_MAX_LETTERS = 8


def looks_like_acronym(token: str) -> bool:
    core = token[:-1] if token.endswith("s") and token[:-1].isupper() else token
    return (2 <= len(core) <= _MAX_LETTERS and core.isalpha()
            and sum(c.isupper() for c in core) >= 2 and core[0].isupper())


def _initials(words: Sequence[str]) -> str:
    return "".join(w[0].lower() for w in words if w.lower() not in _SKIPPED)


def _letters(acronym: str) -> str:
    core = acronym[:-1] if acronym.endswith("s") and acronym[:-1].isupper() else acronym
    return "".join(c.lower() for c in core if c.isupper()) or core.lower()


def find_definitions(text: str, limit: int = 100_000) -> Iterator[tuple[str, list[str]]]:
    """(abbreviation, expansion words) for each "Long Form (LF)" or "LF (Long Form)" in text;
    at most `limit` parentheses are looked at."""
    cursor = 0
    for _ in range(limit):
        open_at = text.find("(", cursor)
        if open_at < 0:
            return
        close_at = text.find(")", open_at + 1, open_at + 120)
        cursor = open_at + 1
        if close_at < 0:
            continue
        inside = text[open_at + 1 : close_at].strip()
        before = _WORD.findall(text[max(0, open_at - 120) : open_at])
        if looks_like_acronym(inside):
            letters = _letters(inside)
            for n in range(len(letters), min(len(before), len(letters) + 4) + 1):
                words = before[-n:]
                if _initials(words) == letters and words[0].lower() not in _SKIPPED:
                    yield inside, words
                    break
        elif before and looks_like_acronym(before[-1]):
            words = _WORD.findall(inside)
            if words and _initials(words) == _letters(before[-1]):
                yield before[-1], words


@dataclass
class Acronyms:
    """Abbreviation (lower case) -> the search terms of its expansion."""

    expansions: dict[str, list[str]] = field(default_factory=dict)
    # Expansion's first term -> the abbreviations whose expansion starts with it.
    by_first: dict[str, list[str]] = field(default_factory=dict)

    def spelled_out(self, question: str) -> list[tuple[str, list[str]]]:
        """(abbreviation's term, expansion's terms) for each abbreviation the question uses,
        as typed in capitals, that the corpus defines (in lower case it may be a word: "safe")."""
        found: list[tuple[str, list[str]]] = []
        for token in _WORD.findall(question):
            terms = self.expansions.get(token.lower())
            if not terms or not looks_like_acronym(token):
                continue
            stem = lexical.terms(token)
            if stem and all(stem[0] != f for f, _ in found):
                found.append((stem[0], terms))
        return found


    def abbreviated(self, question_terms: Sequence[str]) -> list[tuple[str, list[str]]]:
        """(abbreviation's term, expansion's terms) for each expansion the question spells
        out in full ("paid parental leave"), so a sentence may use the short form ("PPL")."""
        asked = set(question_terms)
        found: list[tuple[str, list[str]]] = []
        for first in asked:
            for key in self.by_first.get(first, ()):
                terms = self.expansions[key]
                stem = lexical.terms(key)
                if asked.issuperset(terms) and stem and stem[0] not in asked:
                    found.append((stem[0], terms))
        return found


def learn(texts: Iterable[str], per_text: int = 10_000) -> Acronyms:
    """The abbreviations the texts define (the first definition of each wins)."""
    out = Acronyms()
    for text in texts:
        for acronym, words in find_definitions(text, per_text):
            key = acronym.lower()
            terms = lexical.terms(" ".join(words))
            if key in out.expansions or not terms or len(terms) < 2:
                continue
            out.expansions[key] = terms
            out.by_first.setdefault(terms[0], []).append(key)
    return out


def question_acronyms(question: str) -> list[str]:
    """The abbreviations a question uses, as typed ("CEO", "PMs")."""
    return [t for t in _WORD.findall(question) if looks_like_acronym(t)]


def initials_match(acronym: str, sentence: str) -> bool:
    """Whether `sentence` spells out `acronym` as a run of words ("chief executive officer")."""
    letters = _letters(acronym)
    words = [w for w in _WORD.findall(sentence) if w.lower() not in _SKIPPED]
    n = len(letters)
    return any(all(words[i + j][0].lower() == letters[j] for j in range(n))
               for i in range(len(words) - n + 1))
