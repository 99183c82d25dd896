"""Follow-up questions: rewrite the last turn into a standalone query using earlier turns."""

from __future__ import annotations

import re
from collections.abc import Sequence

from service.index import lexical

# Turns are untrusted and up to 4,000 characters each, so the phrase matching below is plain
# string scanning: every step moves forward or tries one of a fixed set of words, linear in
# the text on any input (the regexes it replaces backtracked without bound on long runs of
# spaces).

_ANAPHORA = frozenset(
    "it its it's they them their theirs themselves he him his she her hers this that these "
    "those there such".split()
)
_CONNECTORS = ("and", "also", "but", "so", "then", "what about", "how about", "and what about")
# Question openers that carry no topic ("what does X do?" is about X), in the order tried.
_LEADS = ("please", "so", "and")
_ASKS = ("can you", "could you")
_OPENERS = (
    "tell me more about", "tell me about", "tell me what", "explain", "describe", "define",
    "summarise", "summarize",
    "what's", "what is", "what are", "what was", "what were", "what does", "what do", "what did",
    "what",
    "who's", "who is", "who are", "who was", "who were", "who",
    *(f"how {v}" for v in ("does", "do", "did", "is", "are", "can", "should")),
    *(f"why {v}" for v in ("does", "do", "is", "are")),
    *(f"when {v}" for v in ("does", "do", "did", "is", "are")),
    *(f"where {v}" for v in ("does", "do", "is", "are")),
    "which",
)
# Verbs that close a question without adding to its topic ("... do?", "... mean?").
_CLOSERS = ("do", "does", "mean", "means", "work", "works", "involve", "entail")
_ARTICLE = re.compile(r"(?:the|a|an)\s", re.IGNORECASE)
_SWITCH_LEADS = ("and", "but", "so")
_PUNCT = "?.!"


def _spaces(text: str, i: int) -> int:
    """The end of the run of whitespace starting at i."""
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _word(text: str, i: int, word: str) -> int | None:
    """The end of `word` when text[i:] starts with it (any case), else None."""
    end = i + len(word)
    return end if text[i:end].lower() == word else None


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _tail_start(text: str) -> int:
    """Where the trailing run of whitespace, then ?.! marks, then whitespace begins."""
    i = len(text)
    for in_run in (str.isspace, lambda ch: ch in _PUNCT, str.isspace):
        while i > 0 and in_run(text[i - 1]):
            i -= 1
    return i


def _opener_end(question: str) -> int | None:
    """Where the topic starts after a leading opener such as 'could you explain', or None."""
    start = _spaces(question, 0)
    for lead in (*_LEADS, None):
        after_lead: int | None = start
        if lead is not None:
            end = _word(question, start, lead)
            after_lead = _spaces(question, end) if end is not None else None
            if after_lead == end:
                continue  # a lead word needs whitespace after it
        if after_lead is None:
            continue
        for ask in (*_ASKS, None):
            after_ask: int | None = after_lead
            if ask is not None:
                end = _word(question, after_lead, ask)
                after_ask = _spaces(question, end) if end is not None else None
                if after_ask == end:
                    continue
            if after_ask is None:
                continue
            for opener in _OPENERS:
                end = _word(question, after_ask, opener)
                if end is not None and end < len(question) and question[end].isspace():
                    return _spaces(question, end)
    return None


def _closer_start(topic: str) -> int:
    """Where a trailing 'do?', 'mean?' or bare '?' (with the space before it) begins."""
    tail = _tail_start(topic)
    for word in _CLOSERS:
        begin = tail - len(word)
        if begin > 0 and topic[begin:tail].lower() == word and topic[begin - 1].isspace():
            while begin > 0 and topic[begin - 1].isspace():
                begin -= 1
            return begin
    body = tail
    while body < len(topic) and topic[body].isspace():
        body += 1
    if body > tail:
        return tail  # whitespace before the marks
    trailing = len(topic)
    while trailing > 0 and topic[trailing - 1].isspace():
        trailing -= 1
    return trailing


def _switch_subject(question: str) -> str | None:
    """The new subject of 'and what about X?', or None when the turn is not of that form."""
    start = _spaces(question, 0)
    tail = _tail_start(question)
    for lead in (*_SWITCH_LEADS, None):
        at = start
        if lead is not None:
            end = _word(question, start, lead)
            if end is None:
                continue
            at = _spaces(question, end)
        for ask in ("what about", "how about"):
            end = _word(question, at, ask)
            if end is None:
                continue
            gap = _spaces(question, end)
            if gap == end:
                continue
            if gap < len(question):
                subject = question[gap : max(tail, gap + 1)]
                if "\n" not in subject:
                    return subject
                continue
            # Only whitespace follows: the subject is its last character that is not a
            # line break, as long as one character of whitespace stays before it.
            for i in range(gap - 1, end, -1):
                if question[i] != "\n":
                    return question[i]
    return None


def _mentions_anaphor(text: str) -> bool:
    return any(w in _ANAPHORA for w in re.findall(r"[a-z']+", text.lower()))


def _starts_with_connector(question: str) -> bool:
    at = _spaces(question, 0)
    for word in _CONNECTORS:
        end = _word(question, at, word)
        if end is not None and (end == len(question) or not _is_word_char(question[end])):
            return True
    return False


def is_followup(question: str) -> bool:
    """Whether a turn leans on earlier ones: a pronoun, a connector, or almost no content."""
    if _starts_with_connector(question) or _mentions_anaphor(question):
        return True
    return len(lexical.terms(question)) <= 1


def _drop_article(text: str) -> str:
    match = _ARTICLE.match(text)
    return text[_spaces(text, match.end()):] if match else text


def topic_of(question: str) -> str:
    """The subject of a question: 'What does a VP of Product do?' -> 'VP of Product'."""
    opener = _opener_end(question)
    topic = question[opener:] if opener is not None else question
    topic = topic[: _closer_start(topic)]
    topic = _drop_article(topic.strip())
    return topic.strip(" ?.!") or question.strip(" ?.!")


_FIRST_PERSON = frozenset("i my me we our us".split())
_PREPOSITIONS = frozenset("in at on for from with to during after before under over near".split())


def _switch(anchor: str, topic: str, subject: str) -> str | None:
    """The previous question asked again about `subject`: "what about in Chicago?" swaps the
    last prepositional phrase ("at the DC office"), a subject for a question about the asker's
    own thing swaps the name in it ("Docker Hub" -> "npm"), anything else the whole topic."""
    words = subject.split()
    body = anchor.rstrip(" ?.!")
    if words and words[0].lower() in _PREPOSITIONS:
        tokens = body.split(" ")
        for i in range(len(tokens) - 1, 0, -1):
            if tokens[i].lower() in _PREPOSITIONS:
                return " ".join(tokens[:i] + words).rstrip(" ?.!") + "?"
        return None
    # A topic about the asker's own thing ("I use my personal Docker Hub account") is a
    # clause, not a subject to swap whole: the name in it is what changes.
    name = _last_name(body)
    if name and _FIRST_PERSON & set(topic.lower().split()):
        return body.replace(name, _drop_article(subject), 1) + "?"
    if topic and topic in anchor:
        return anchor.replace(topic, _drop_article(subject), 1)
    return None


def _last_name(text: str) -> str:
    """The last run of capitalised words past the first word ("Docker Hub"); '' if none."""
    tokens = text.split(" ")
    end = None
    for i in range(len(tokens) - 1, 0, -1):
        word = tokens[i].strip(",;:")
        capital = word[:1].isupper() and word != "I"
        if capital and end is None:
            end = i
        elif not capital and end is not None:
            return " ".join(tokens[i + 1 : end + 1]).strip(",;:")
    return " ".join(tokens[1 : end + 1]).strip(",;:") if end is not None else ""


def standalone_query(user_turns: Sequence[str]) -> str:
    """The query retrieval should use for the last user turn."""
    current = user_turns[-1].strip()
    if len(user_turns) < 2 or not is_followup(current):
        return current
    anchor = next((t for t in reversed(user_turns[:-1]) if not is_followup(t)), user_turns[0])
    topic = topic_of(anchor)
    subject = _switch_subject(current)
    if subject is not None and not _mentions_anaphor(subject):
        switched = _switch(anchor.strip(), topic, subject)
        if switched is not None:
            return switched
    missing = set(lexical.terms(topic)) - set(lexical.terms(current))
    if not missing:
        return current
    return f"{current} ({topic})"
