"""Follow-up resolution: which turns lean on earlier ones, and the standalone query."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from service.qa.conversation import is_followup, standalone_query, topic_of


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("What does a VP of Product do?", "VP of Product"),
        ("Tell me about Bloomberg's head of product.", "Bloomberg's head of product"),
        ("Who is the chief product officer?", "chief product officer"),
        ("Explain product roadmaps", "product roadmaps"),
    ],
)
def test_topic_of(question: str, topic: str) -> None:
    assert topic_of(question) == topic


@pytest.mark.parametrize(
    ("question", "followup"),
    [
        ("And how do they share their strategy?", True),
        ("Who became chairman of its board?", True),
        ("What about salaries?", True),
        ("Why?", True),
        ("What degree does a head of product typically have?", False),
        ("Who was named chairman of Bloomberg's new board of directors?", False),
    ],
)
def test_is_followup(question: str, followup: bool) -> None:
    assert is_followup(question) is followup


def test_standalone_query_adds_the_topic_of_the_last_self_contained_turn() -> None:
    turns = ["What does a chief product officer do?", "And how do they share their strategy?",
             "What tools do they use?"]
    assert standalone_query(turns) == "What tools do they use? (chief product officer)"


@pytest.mark.parametrize(
    ("turns", "query"),
    [
        (["What does a chief product officer do?", "What about a VP of Product?"],
         "What does a VP of Product do?"),
        (["Who is the head of product at Bloomberg?", "And how about the CEO"],
         "Who is the CEO?"),
        (["Where do I get my badge photo taken at the DC office?", "what about in Chicago?"],
         "Where do I get my badge photo taken in Chicago?"),
        (["Can I use my personal Docker Hub account for work?", "what about npm?"],
         "Can I use my personal npm account for work?"),
        # A pronoun in the new subject still needs the topic: no swap.
        (["What does a chief product officer do?", "What about their salary?"],
         "What about their salary? (chief product officer)"),
    ],
)
def test_what_about_asks_the_previous_question_of_a_new_subject(turns: list[str],
                                                                 query: str) -> None:
    assert standalone_query(turns) == query


def test_self_contained_questions_pass_through() -> None:
    turns = ["What does a VP of Product do?", "What degree does a head of product have?"]
    assert standalone_query(turns) == turns[-1]
    assert standalone_query(["Only one turn?"]) == "Only one turn?"


def test_topic_already_present_is_not_repeated() -> None:
    turns = ["Tell me about FeedBear.", "Is FeedBear free? And is it popular?"]
    assert standalone_query(turns) == turns[-1]


HOSTILE_TURNS = [
    "zebra" + " " * 100_000 + "giraffe",
    "what" + " " * 100_000 + "x",
    "what about" + " " * 100_000 + "x" + " " * 100_000,
    "and" + " \t" * 50_000 + "what about " + "?" * 100_000 + "x",
    "tell me " * 12_000 + "do" + " ?" * 50_000 + "!",
    "so " * 33_000 + "does" + " " * 1000 + "?" * 1000,
    ("a " * 50_000) + "\n",
]


@pytest.mark.parametrize("turn", HOSTILE_TURNS, ids=range(len(HOSTILE_TURNS)))
def test_followup_resolution_is_linear_on_hostile_turns(
        turn: str, within: Callable[[float], AbstractContextManager[None]]) -> None:
    with within(1.0):
        is_followup(turn)
        topic_of(turn)
        standalone_query([turn, "and it?"])
        standalone_query(["What does a VP of Product do?", turn])
        standalone_query([turn, turn])
