"""Follow-up questions: rewrite the last turn into a standalone query using earlier turns."""

from __future__ import annotations

import re
from collections.abc import Sequence

from service import lexical

_ANAPHORA = frozenset(
    "it its it's they them their theirs themselves he him his she her hers this that these "
    "those there such".split()
)
_CONNECTOR = re.compile(r"^\s*(?:and|also|but|so|then|what about|how about|and what about)\b",
                        re.IGNORECASE)
# Question openers and closers that carry no topic: "what does X do?" is about X.
_OPENER = re.compile(
    r"^\s*(?:please\s+|so\s+|and\s+)?(?:(?:can|could) you\s+)?(?:tell me(?: more)? about|"
    r"tell me what|explain|describe|define|summari[sz]e|what(?:'s| is| are| was| were| does| do|"
    r"did)?|who(?:'s| is| are| was| were)?|how (?:does|do|did|is|are|can|should)|why (?:does|do|"
    r"is|are)|when (?:does|do|did|is|are)|where (?:does|do|is|are)|which)\s+", re.IGNORECASE)
_CLOSER = re.compile(r"\s+(?:do|does|mean|means|work|works|involve|entail)?\s*[?.!]*\s*$",
                     re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
# "What about the VP of Product?" asks the previous question again about something else.
_SWITCH = re.compile(r"^\s*(?:and|but|so)?\s*(?:what|how) about\s+(?P<subject>.+?)\s*[?.!]*\s*$",
                     re.IGNORECASE)


def _mentions_anaphor(text: str) -> bool:
    return any(w in _ANAPHORA for w in re.findall(r"[a-z']+", text.lower()))


def is_followup(question: str) -> bool:
    """Whether a turn leans on earlier ones: a pronoun, a connector, or almost no content."""
    if _CONNECTOR.match(question) or _mentions_anaphor(question):
        return True
    return len(lexical.terms(question)) <= 1


def topic_of(question: str) -> str:
    """The subject of a question: 'What does a VP of Product do?' -> 'VP of Product'."""
    topic = _CLOSER.sub("", _OPENER.sub("", question, count=1))
    topic = _ARTICLE.sub("", topic.strip())
    return topic.strip(" ?.!") or question.strip(" ?.!")


def standalone_query(user_turns: Sequence[str]) -> str:
    """The query retrieval should use for the last user turn."""
    current = user_turns[-1].strip()
    if len(user_turns) < 2 or not is_followup(current):
        return current
    anchor = next((t for t in reversed(user_turns[:-1]) if not is_followup(t)), user_turns[0])
    topic = topic_of(anchor)
    switch = _SWITCH.match(current)
    if switch and topic and topic in anchor and not _mentions_anaphor(switch["subject"]):
        return anchor.strip().replace(topic, _ARTICLE.sub("", switch["subject"]), 1)
    missing = set(lexical.terms(topic)) - set(lexical.terms(current))
    if not missing:
        return current
    return f"{current} ({topic})"
