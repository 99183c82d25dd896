"""What kind of answer a question wants, and whether a sentence gives that kind.

"How many hours ..." wants an amount, "how long before ..." a duration, "who signs off ..." a
person or role, "when ..." a time, "is X paid?" a verdict. A sentence that shares the
question's words but not the kind of answer ("you can use leave to vote") is usually not the
answer ("you can receive up to 4 hours"). Both sides are read with plain word tests: English
function words and the shapes of numbers, times and names, nothing about any one corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from service.index import lexical
from service.index.acronyms import Acronyms, question_acronyms


class Kind(Enum):
    AMOUNT = "amount"  # how many, how much, how big, what percentage
    DURATION = "duration"  # how long, how far ahead, how early, how quickly
    FREQUENCY = "frequency"  # how often
    TIME = "time"  # when, what day, what time
    PERSON = "person"  # who, whom, whose
    PLACE = "place"  # where
    VERDICT = "verdict"  # is / can / do / should ... ?
    STEP = "step"  # how do I / how can we / how to / what's the best way to
    OTHER = "other"


_WORD = re.compile(r"[a-z0-9']+")
# Openers of yes/no questions: auxiliaries and modals.
_AUXILIARIES = frozenset(
    "is are was were am do does did can could should shall will would may might must "
    "have has had isn't aren't don't doesn't can't won't shouldn't".split())
_WH = frozenset("what which who whom whose when where how".split())
_HOW_STEP = frozenset("do does did can could should would will must may might to".split())
_FILLERS = frozenset("so and but ok okay hey hi hello please quick question also "
                     "then well um".split())
_HOW_AMOUNT = frozenset("many much big large high low old tall heavy".split())
_HOW_DURATION = frozenset("long far early soon quickly fast late".split())
_TIME_NOUNS = frozenset("day days date time week month year hour deadline".split())

_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
    "forty fifty sixty hundred thousand million billion half quarter dozen double twice "
    "once single first second third".split())
_TIME_UNITS = frozenset(
    "second seconds minute minutes min mins hour hours hr hrs day days week weeks weekly "
    "month months monthly year years yearly annually quarter quarters quarterly business "
    "night nights".split())
_WEEKDAYS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays "
    "thursdays fridays saturdays sundays weekday weekdays weekend weekends".split())
_MONTHS = frozenset(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split())
_TIME_WORDS = frozenset(
    "before after within until by prior advance ahead immediately right away am pm noon "
    "midnight morning afternoon evening deadline due".split())
_FREQUENCY_WORDS = frozenset(
    "every each daily weekly monthly yearly annually quarterly biweekly once twice per "
    "always usually regularly".split())
_VERDICT_WORDS = frozenset(
    "yes no not cannot can't don't doesn't isn't aren't won't shouldn't mustn't never only "
    "must may can should required require requires allowed allow allows prohibited "
    "permitted okay ok need needs needed eligible".split())
# Units a length or size is given in ("at least 16 characters").
_SIZE_UNITS = frozenset(
    "character characters digit digits letter letters word words page pages line lines "
    "item items percent inch inches foot feet meter meters metre metres mile miles km cm mm "
    "kb mb gb tb pound pounds lb lbs kg".split())
# Words that end what a "how many ..." question counts: an auxiliary, a pronoun, a
# preposition or an article.
_COUNT_ENDS = _AUXILIARIES | frozenset("i we you they he she it my our your there to for of "
                                       "in on at per a an the".split())
_PLACE_WORDS = frozenset(
    "room floor building office street avenue suite at located location address website "
    "page site".split())
# Words that say how something is done: a means ("through a roadmap", "using HTML", "via the
# portal") or an instruction ("ask your team", "email the desk", "submit the form").
_STEP_WORDS = frozenset(
    "through using via use ask email contact visit submit click send call fill request "
    "select type follow open enter complete".split())
# Agent nouns name people and roles: supervisor, director, coordinator, specialist, employee.
_AGENT_SUFFIXES = ("or", "ist", "ian", "ee", "officer", "official", "team", "staff", "office",
                   "manager", "lead", "owner", "contact", "committee", "board", "department")


def question_kind(question: str) -> Kind:
    """The kind of answer a question wants, from its wh-word or auxiliary."""
    return _kind(_WORD.findall(question.lower()))


def _kind(tokens: list[str]) -> Kind:
    # "what's", "who's", "how's": the question word without its contraction.
    words = [base if (base := w.split("'")[0]) in _WH else w for w in tokens]
    # A question often comes after a clause of context: "I'm out of sick leave - how many ..."
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        if word == "how" and following:
            if following in _HOW_AMOUNT:
                return Kind.AMOUNT
            if following in _HOW_DURATION:
                # "How long does the password have to be?" asks for a length, not a time.
                if following == "long" and words[-1] == "be":
                    return Kind.AMOUNT
                return Kind.DURATION
            if following == "often":
                return Kind.FREQUENCY
            # "How do I book it?", "how can a lead find out ...?", "how to apply?": a way, a
            # step. ("How is X different ...?" asks something else.)
            if following in _HOW_STEP:
                return Kind.STEP
        if word == "when":
            return Kind.TIME
        if word in ("what", "which"):
            # The first question word decides: "what happens when ..." asks what, not when.
            if following in _TIME_NOUNS:
                return Kind.TIME
            # "What's the best way to ...?" asks for a way.
            return Kind.STEP if {"way", "ways"} & set(words[i + 1 : i + 4]) else Kind.OTHER
        if word in ("who", "whom", "whose"):
            return Kind.PERSON
        if word == "where":
            return Kind.PLACE
    first = next((w for w in words if w not in _FILLERS), "")
    if first in _AUXILIARIES:
        return Kind.VERDICT
    return Kind.OTHER


@dataclass(frozen=True)
class Want:
    """What a question wants: the kind of answer, the words it already says, and how its
    abbreviations may be written out in the text."""

    kind: Kind = Kind.OTHER
    asked: frozenset[str] = frozenset()
    # (abbreviation's term, its expansion's terms), for those the corpus defines
    spelled_out: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # abbreviations as typed that the corpus does not define, with their terms
    undefined: tuple[tuple[str, str], ...] = ()
    # (abbreviation's term, its expansion's terms) for expansions the question spells out
    abbreviated: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # What a "how many / how much" question counts ("hours", "free sessions"), as terms.
    counted: frozenset[str] = frozenset()
    # Units an amount or a duration of the kind wanted is given in (words).
    units: frozenset[str] = frozenset()


NO_WANT = Want()


def wanted(question: str, known: Acronyms | None = None) -> Want:
    defined = known.spelled_out(question) if known else []
    stems = {a for a, _ in defined}
    undefined = []
    for token in question_acronyms(question):
        term = lexical.terms(token)
        if term and term[0] not in stems:
            undefined.append((token, term[0]))
    short = known.abbreviated(lexical.terms(question)) if known else []
    words = _WORD.findall(question.lower())
    kind = _kind(words)
    units: frozenset[str] = frozenset()
    if kind is Kind.DURATION:
        units = _TIME_UNITS
    elif kind is Kind.AMOUNT:
        # "How long does it have to be?" asks for a size; "how many / how much" for anything.
        units = _SIZE_UNITS if "how long" in " ".join(words) else _TIME_UNITS | _SIZE_UNITS
    return Want(kind, frozenset(words), tuple((a, tuple(e)) for a, e in defined),
                tuple(undefined), tuple((a, tuple(e)) for a, e in short),
                _counted(words) if kind is Kind.AMOUNT else frozenset(), units)


def _counted(words: list[str]) -> frozenset[str]:
    """The terms of what "how many X" or "how much X" counts: the words after "many" or
    "much" up to an auxiliary, a pronoun or a preposition ("how many hours off can I take"
    counts "hours off")."""
    for i in range(len(words) - 1):
        if words[i] == "how" and words[i + 1] in ("many", "much"):
            span = []
            for word in words[i + 2:]:
                if word in _COUNT_ENDS:
                    break
                span.append(word)
            return frozenset(lexical.terms(" ".join(span)))
    return frozenset()


def gives(want: Want, sentence: str) -> bool:
    """Whether `sentence` contains an answer of the kind wanted (a number, a time, a name, a
    verdict); a number the question itself names ("a level 4 rating") is not an answer."""
    kind, asked = want.kind, want.asked
    if kind is Kind.OTHER:
        return False
    words = _WORD.findall(sentence.lower())

    def has_number() -> bool:  # asked only by the kinds that need it: every sentence is read
        return any(_is_number(w) and w not in asked for w in words)

    if kind is Kind.AMOUNT:
        return "%" in sentence or "$" in sentence or has_number()
    if kind is Kind.DURATION:
        return any(w in _TIME_UNITS for w in words) and has_number()
    if kind is Kind.FREQUENCY:
        return any(w in _FREQUENCY_WORDS or w in _WEEKDAYS for w in words)
    if kind is Kind.TIME:
        return (any(w in _WEEKDAYS or w in _MONTHS for w in words)
                or (any(w in _TIME_UNITS or w in _TIME_WORDS for w in words) and has_number()))
    if kind is Kind.PERSON:
        return _names_someone(sentence, words)
    if kind is Kind.PLACE:
        return any(w in _PLACE_WORDS for w in words) or _has_proper_noun(sentence)
    if kind is Kind.STEP:
        # Each word with the one after it (the last with ""); a sentence of no words gives none.
        return any(w in _STEP_WORDS or (w == "by" and following.endswith("ing"))
                   for w, following in zip(words, words[1:] + [""] if words else [], strict=True))
    # A verdict: a modal or negation, or the question's own word negated ("paid" -> "unpaid").
    return any(w in _VERDICT_WORDS or (w[:2] == "un" and w[2:] in asked)
               or (w[:3] == "non" and w[3:].lstrip("-") in asked) for w in words)


def gives_exactly(want: Want, sentence: str) -> bool:
    """Whether `sentence` gives the amount or duration asked for in the form asked: a number
    joined to what the question counts or to a unit ("up to 4 hours", "16 characters",
    "2.1%"), not merely some number ("if you need less than 4, enter ...")."""
    if not want.units:
        return False
    if want.kind is Kind.AMOUNT and ("%" in sentence or "$" in sentence):
        return True
    words = _WORD.findall(sentence.lower())
    for i, word in enumerate(words):
        if not _is_number(word) or word in want.asked:
            continue
        following = words[i + 1 : i + 4]
        if any(w in want.units for w in following[:2]):
            return True
        if want.counted and want.counted & set(lexical.terms(" ".join(following))):
            return True
    return False


def _is_number(word: str) -> bool:
    """A word that states a number: digits ("4", "2.1") or a number word ("four", "half")."""
    return word[0].isdigit() or word in _NUMBER_WORDS


def _names_someone(sentence: str, words: list[str]) -> bool:
    return _has_proper_noun(sentence) or any(
        len(w) > 4 and w.endswith(_AGENT_SUFFIXES) for w in words)


def _has_proper_noun(sentence: str) -> bool:
    """A capitalised word past the first: a name, a title, an office."""
    tokens = sentence.split()
    return any(t[:1].isupper() and t[1:2].islower() for t in tokens[1:])
