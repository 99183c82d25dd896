"""What kind of answer a question wants, and which sentences give it."""

from __future__ import annotations

import pytest

from service.index.acronyms import learn
from service.qa.answertype import Kind, gives, question_kind, wanted


@pytest.mark.parametrize(("question", "kind"), [
    ("how many hours off can I take to go vote?", Kind.AMOUNT),
    ("I'm out of sick leave - how much can I borrow?", Kind.AMOUNT),
    ("how long does the passcode have to be?", Kind.AMOUNT),
    ("how long before my term ends does the renewal start?", Kind.DURATION),
    ("how far ahead should I ask?", Kind.DURATION),
    ("how often does the group meet?", Kind.FREQUENCY),
    ("when is the self-assessment due?", Kind.TIME),
    ("what day of the week are badges made?", Kind.TIME),
    ("who signs off on my trip?", Kind.PERSON),
    ("where do I get my badge?", Kind.PLACE),
    ("is FMLA time paid?", Kind.VERDICT),
    ("so can I delete a message?", Kind.VERDICT),
    ("what is the main difference between the roles?", Kind.OTHER),
])
def test_question_kinds(question: str, kind: Kind) -> None:
    assert question_kind(question) is kind


def test_sentences_that_give_the_kind() -> None:
    amount = wanted("how many hours can I take?")
    assert gives(amount, "You can receive up to 4 hours for each election.")
    assert not gives(amount, "You can use administrative leave to vote.")
    # A number the question names is not an answer.
    level = wanted("how big is the award for a level 4 rating?")
    assert not gives(level, "Awards for level 4 are set by the board.")
    assert gives(level, "Level 4: up to 2.1% of pay.")
    assert gives(wanted("how long does it take?"), "It takes three weeks on average.")
    assert not gives(wanted("how long does it take?"), "It takes some patience.")
    assert gives(wanted("when are badges made?"), "Badges are made every Wednesday.")
    assert gives(wanted("who approves it?"), "Your supervisor approves it.")
    assert gives(wanted("who approves it?"), "Approval comes from Jane Doe.")
    assert gives(wanted("can I delete it?"), "Users are prohibited from deleting messages.")
    assert not gives(wanted("what is it?"), "It is a tool.")
    assert gives(wanted("is the leave paid?"), "You get 12 unpaid weeks.")


def test_abbreviations_are_read_from_the_question() -> None:
    known = learn(["You earn paid time off (PTO) every pay period."])
    want = wanted("How much PTO and CEO time?", known)
    assert want.spelled_out == (("pto", ("paid", "time")),)  # "off" is a stopword
    assert want.undefined == (("CEO", "ceo"),)
