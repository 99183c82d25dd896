"""Property tests: no input to /api/ask or /api/chat yields a 5xx; odd Unicode is 200 or 422."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.index.indexing import build_index
from service.settings import Settings
from tests.conftest import SEED_CORPUS, FakeEncoder

EXAMPLES = settings(max_examples=1000, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    encoder = FakeEncoder()
    index_dir: Path = tmp_path_factory.mktemp("properties") / "index"
    config = Settings(corpus_dir=SEED_CORPUS, index_dir=index_dir, rate_limit=0)
    build_index(config, encoder=encoder)
    with TestClient(create_app(config, encoder=encoder)) as test_client:
        yield test_client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
top_k = st.integers(-2, 60) | json_values
# Mostly valid text, so that many examples get past validation into retrieval and answering.
plain_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=200)
ask_shaped = st.fixed_dictionaries({"question": plain_text | json_values},
                                   optional={"top_k": top_k, "extra": json_values})
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "user", "assistant", "system"])
                                 | json_values, "content": plain_text | json_values})
chat_shaped = st.fixed_dictionaries(
    {"messages": st.lists(message, max_size=22) | json_values}, optional={"top_k": top_k})

# Characters that break naive text handling: combining marks, bidi overrides and isolates,
# zero-width joiners, NUL and other controls, BOM, NFKC expanders, astral emoji, noncharacters.
WEIRD = ("\u0301\u0308\u0336\u20dd\u202e\u202d\u2066\u2067\u2068\u2069\u200b\u200c\u200d"
         "\u2060\x00\x07\x1b\x7f\x85\ufeff\ufdfa\u3000\u00a0\U0001f600\U0001f469\u200d\U0001f4bb"
         "\uffff\U0010fffe\u0000\t\n\r")
weird_text = st.text(st.sampled_from(WEIRD) | st.characters(), max_size=60).map(
    lambda t: "head of product " + t if len(t) % 2 else t)


def _post(client: TestClient, path: str, body: bytes,
          content_type: str = "application/json") -> int:
    r = client.post(path, content=body, headers={"Content-Type": content_type})
    return r.status_code


@EXAMPLES
@given(body=json_values | ask_shaped)
def test_any_json_to_ask_is_answered_or_refused(client: TestClient, body: object) -> None:
    assert _post(client, "/api/ask", json.dumps(body).encode()) in (200, 422)


@EXAMPLES
@given(body=json_values | chat_shaped)
def test_any_json_to_chat_is_answered_or_refused(client: TestClient, body: object) -> None:
    assert _post(client, "/api/chat", json.dumps(body).encode()) in (200, 422)


@EXAMPLES
@given(path=st.sampled_from(["/api/ask", "/api/chat"]), body=st.binary(max_size=300),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-"
                                     "form-urlencoded", "multipart/form-data; boundary=x",
                                     "application/json; charset=latin-1"]))
def test_any_bytes_never_yield_a_server_error(client: TestClient, path: str, body: bytes,
                                              content_type: str) -> None:
    assert _post(client, path, body, content_type) < 500


def _escaped(text: str) -> bytes:
    # ensure_ascii writes a lone surrogate as a \\udXXX escape, the only way JSON can carry it.
    return json.dumps({"question": text, "top_k": 3}).encode()


@EXAMPLES
@given(question=weird_text)
def test_weird_unicode_questions_are_answered_or_refused(client: TestClient,
                                                         question: str) -> None:
    r = client.post("/api/ask", content=_escaped(question),
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 422)
    if r.status_code == 200:
        assert r.json()["question"] == unicodedata.normalize("NFKC", question).strip()
    else:
        assert r.json()["detail"]


@EXAMPLES
@given(turns=st.lists(weird_text, min_size=1, max_size=4))
def test_weird_unicode_chats_are_answered_or_refused(client: TestClient,
                                                     turns: list[str]) -> None:
    messages = [{"role": "user", "content": t} for t in turns]
    r = client.post("/api/chat", content=json.dumps({"messages": messages}).encode(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 422)


@pytest.mark.parametrize("body", [
    b'{"question": "\\ud800"}',
    b'{"question": "a\\udfff b"}',
    b'{"question": "\\ud83d\\ude00 head of product"}',
    b'{"question": "\\u0000"}',
    b'{"question": "\xff\xfe"}',
    b'{"question": "ok", "question": "\\ud800"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"question": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"question": "x", "top_k": 1e400}',
    b'{"question": "x", "top_k": NaN}',
    b'{"question": "x", "top_k": 100000000000000000000000000000000000000}',
])
def test_known_nasty_bodies(client: TestClient, body: bytes) -> None:
    assert _post(client, "/api/ask", body) in (200, 400, 422)
