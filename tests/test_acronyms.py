"""Abbreviations learned from the corpus, and spelled-out forms recognised in sentences."""

from __future__ import annotations

import time

from service.index import lexical
from service.index.acronyms import find_definitions, initials_match, learn, looks_like_acronym


def test_definitions_in_both_orders() -> None:
    text = ("Use the Employee Assistance Program (EAP) for counseling. "
            "FMLA (Family and Medical Leave Act) covers it. A note (see below) is not one.")
    found = {a: w for a, w in find_definitions(text)}
    assert found == {"EAP": ["Employee", "Assistance", "Program"],
                     "FMLA": ["Family", "and", "Medical", "Leave", "Act"]}


def test_a_defined_abbreviation_is_spelled_out() -> None:
    known = learn(["You earn paid time off (PTO) each pay period."])
    # "off" is a stopword, so the expansion's terms are these two.
    assert known.spelled_out("How much PTO do I get?") == [("pto", ["paid", "time"])]
    # Lower case may be an ordinary word: not read as the abbreviation.
    assert known.spelled_out("how much pto do I get?") == []


def test_undefined_abbreviations_match_their_initials() -> None:
    assert initials_match("CEO", "He was appointed chief executive officer last year.")
    assert initials_match("VP", "The Vice President of Product decides.")
    assert not initials_match("CEO", "The chairman of the board executive.")
    assert looks_like_acronym("CEO") and looks_like_acronym("PMs") and looks_like_acronym("CoE")
    assert not looks_like_acronym("Hello") and not looks_like_acronym("A")


def test_hostile_text_is_scanned_in_linear_time() -> None:
    for text in ("(" * 200_000, "(AB) " * 40_000, "word " * 40_000 + "(ABCDEFGH)"):
        started = time.perf_counter()
        learn([text])
        assert time.perf_counter() - started < 3.0


def test_a_spelled_out_question_finds_the_abbreviation() -> None:
    known = learn(["Staff may take Paid Parental Leave (PPL) after a birth.",
                   "The Employee Assistance Program (EAP) offers counseling."])
    question = lexical.terms("How long is paid parental leave?")
    assert known.abbreviated(question) == [("ppl", ["paid", "parent", "leav"])]
    # Only a whole expansion counts, and not when the question uses the short form itself.
    assert known.abbreviated(lexical.terms("Is parental leave paid for PPL?")) == []
    assert known.abbreviated(lexical.terms("Is leave paid?")) == []
