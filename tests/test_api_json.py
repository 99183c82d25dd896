"""The answer routes write their JSON directly: byte for byte what the response models give."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel

from service.http.api import AskResponse, ChatResponse


def _model_rendering(model: type[BaseModel], body: dict[str, Any]) -> bytes:
    """How FastAPI renders a route's `response_model`: validate, dump, compact json.dumps;
    except that a citation without a page has no `page` at all (rather than null)."""
    content = model.model_validate(body).model_dump(mode="json")
    for citation in content["citations"]:
        if citation["page"] is None:
            del citation["page"]
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def test_ask_json_is_the_response_model_rendering(fake_client: TestClient) -> None:
    for question, top_k in (("What does a head of product do?", 3),
                            ("Is head of product higher than director?", 5),
                            ("How do I bake sourdough bread?", 1)):
        r = fake_client.post("/api/ask", json={"question": question, "top_k": top_k})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.content == _model_rendering(AskResponse, r.json())


def test_chat_json_is_the_response_model_rendering(fake_client: TestClient) -> None:
    messages = [{"role": "user", "content": "What does a head of product do?"},
                {"role": "assistant", "content": "They lead the product team."},
                {"role": "user", "content": "And what degree do they have?"}]
    r = fake_client.post("/api/chat", json={"messages": messages})
    assert r.status_code == 200
    body = r.json()
    assert list(body)[-1] == "query"
    assert r.content == _model_rendering(ChatResponse, body)


def test_non_ascii_text_is_written_as_utf8(fake_client: TestClient) -> None:
    r = fake_client.post("/api/ask", json={"question": "Qu’est-ce qu’un head of product ?"})
    assert r.status_code == 200
    assert "’" in r.content.decode("utf-8")
    assert r.content == _model_rendering(AskResponse, r.json())
