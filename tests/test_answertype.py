"""What kind of answer a question wants, and which sentences give it."""

from __future__ import annotations

import pytest

from service.index.acronyms import learn
from service.qa.answertype import Kind, gives, gives_exactly, question_kind, wanted


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
    # The first question word decides: a "when" after "what" joins a clause.
    ("what happens when roles are unclear?", Kind.OTHER),
    ("what time does it close when it snows?", Kind.TIME),
    # A way or a step; "how is X different" asks something else.
    ("how do I book a meeting room?", Kind.STEP),
    ("How can a lead find out what the team needs?", Kind.STEP),
    ("how to apply for a badge?", Kind.STEP),
    ("what's the best way to reach the help desk?", Kind.STEP),
    ("how is the award different from a bonus?", Kind.OTHER),
    # Contracted question words count as the words.
    ("who's the go-to contact for the tool?", Kind.PERSON),
    ("where's the link to fix a typo?", Kind.PLACE),
    ("what's the plan for the launch?", Kind.OTHER),
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
    step = wanted("how does the lead share the plan with stakeholders?")
    assert gives(step, "They can share it with stakeholders through a roadmap.")
    assert gives(step, "Ask the people on the team how to help them.")
    assert gives(step, "Teams stay aligned by meeting every week.")
    assert not gives(step, "The plan matters to stakeholders.")
    # A "sentence" of no words at all (a row of dashes, an emoji) gives nothing, for any kind.
    for question in ("how does the lead share the plan?", "how many?", "how long?", "how often?",
                     "when?", "where?", "who?", "is it paid?"):
        assert not gives(wanted(question), "— — —")


def test_amounts_given_in_the_form_asked() -> None:
    hours = wanted("how many hours off can I take to go vote?")
    assert hours.counted == frozenset({"hour"})  # "off" is a stopword
    # Both give a number; only one joins it to what is counted.
    exact = "You can receive up to 4 hours for each election event."
    loose = "If you need less than 4, enter the amount you used."
    assert gives(hours, exact) and gives(hours, loose)
    assert gives_exactly(hours, exact) and not gives_exactly(hours, loose)
    sessions = wanted("how many free counseling sessions does the program give me?")
    assert gives_exactly(sessions, "You can receive six free sessions a year.")
    assert not gives_exactly(sessions, "Six people run the program.")
    length = wanted("how long does my password need to be?")
    assert length.kind is Kind.AMOUNT and not length.counted
    assert gives_exactly(length, "Passwords must be 16 characters.")
    # A length is not given in days.
    assert not gives_exactly(length, "Passwords must be changed every 90 days.")
    assert gives_exactly(wanted("how much leave do I get?"), "You get 13 days a year.")
    # "long" elsewhere does not make a "how many" question ask for a size.
    assert gives_exactly(wanted("how much time off for a long illness?"), "Up to 30 days.")
    assert gives_exactly(wanted("how much is the award?"), "Up to 2.1% of pay.")
    # The question's own number is not the answer, joined to a unit or not.
    assert not gives_exactly(wanted("how many days do I get for 3 years?"),
                             "After 3 years of service you get more.")
    assert gives_exactly(wanted("how long does it take?"), "It takes three weeks.")
    assert not gives_exactly(wanted("how long does it take?"), "Three people review it.")
    assert not gives_exactly(wanted("who approves it?"), "It takes 3 days.")


def test_abbreviations_are_read_from_the_question() -> None:
    known = learn(["You earn paid time off (PTO) every pay period."])
    want = wanted("How much PTO and CEO time?", known)
    assert want.spelled_out == (("pto", ("paid", "time")),)  # "off" is a stopword
    assert want.undefined == (("CEO", "ceo"),)
