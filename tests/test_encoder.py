"""The exported ONNX encoder: int8, small batches, sessions side by side, the same vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.index import encoder as encoder_module
from service.index.encoder import (
    BATCH_CHARS,
    ONNX_EXPORT,
    ModelInfo,
    OnnxEncoder,
    TorchEncoder,
    plan_batches,
    preload_tokenizer,
)
from service.settings import Settings
from tests.conftest import ROOT

PASSAGES = [
    "A head of product leads the product team and owns the roadmap.",
    "Chief product officers sit at the top of the product ladder.",
    "x",
    "The treasurer manages the budget. " * 20,
    "Feedback can be collected with FeedBear by the product team. " * 5,
    "Directors of product report to the VP of product.",
]
SPANS = [[(0, min(len(t), 30)), (min(len(t), 30), len(t))] for t in PASSAGES]


def test_planned_batches_cover_every_text_once_by_length() -> None:
    texts = ["a" * n for n in (5, 900, 40, 700, 40, 3000, 1, 300, 300, 300)]
    batches = plan_batches(texts, 4)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    lengths = [len(texts[i]) for b in batches for i in b]
    assert lengths == sorted(lengths)
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * max(len(texts[i]) for i in batch) <= BATCH_CHARS


def test_export_is_int8_and_recorded(real_encoder_dir: Path) -> None:
    graph = onnx.load(str(real_encoder_dir / "model.onnx")).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["MatMulInteger"] > 0, "weights quantized to int8"
    info = json.loads((real_encoder_dir / "encoder.json").read_text("utf-8"))
    assert info["export"] == ONNX_EXPORT
    assert real_encoder_dir.name.endswith(f"-e{ONNX_EXPORT}")


def test_sessions_side_by_side_give_the_same_vectors(real_encoder_dir: Path,
                                                     real_model: ModelInfo) -> None:
    one = OnnxEncoder(real_encoder_dir, real_model, threads=1)
    two = OnnxEncoder(real_encoder_dir, real_model, threads=2)
    v1, s1 = one.encode_passages(PASSAGES, SPANS, batch_size=2)
    v2, s2 = two.encode_passages(PASSAGES, SPANS, batch_size=2)
    np.testing.assert_array_equal(v1, v2)
    for a, b in zip(s1, s2, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(v1, axis=1), 1.0, rtol=1e-4)
    assert all(s.shape == (2, real_model.dimension) for s in s1)


def test_a_query_alone_matches_it_in_a_batch(real_encoder_dir: Path,
                                             real_model: ModelInfo) -> None:
    encoder = OnnxEncoder(real_encoder_dir, real_model, threads=2)
    texts = [t for t in PASSAGES if len(t) > 20]
    together = encoder.encode_queries(texts)
    for i, text in enumerate(texts):
        alone = encoder.encode_queries([text])[0]
        # Activations are quantized per batch, so neighbours move a vector a little (more
        # for a text of a few characters beside longer ones).
        assert float(alone @ together[i]) > 0.99


def test_a_preloaded_tokenizer_serves_encoders_of_the_same_bytes_only(
        real_encoder_dir: Path, real_model: ModelInfo, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder_module, "_PRELOADED", {})
    own = OnnxEncoder(real_encoder_dir, real_model)
    preload_tokenizer(real_encoder_dir, real_model)
    [preloaded] = encoder_module._PRELOADED.values()
    shared = OnnxEncoder(real_encoder_dir, real_model)
    assert shared._tokenizer is preloaded and own._tokenizer is not preloaded
    # Configured as an encoder's own: truncated to the model's limit, padded in a batch.
    texts = [PASSAGES[3] * 8, PASSAGES[0], "x"]
    np.testing.assert_array_equal(shared.encode_queries(texts), own.encode_queries(texts))
    np.testing.assert_array_equal(shared.encode_queries(texts[:1]), own.encode_queries(texts[:1]))
    # Another file's bytes (the same tokenizer written out again) get a tokenizer of their own.
    other = tmp_path / "other"
    shutil.copytree(real_encoder_dir, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text("utf-8"))
    (other / "tokenizer.json").write_text(json.dumps(tokenizer, indent=1), "utf-8")
    assert OnnxEncoder(other, real_model)._tokenizer is not preloaded


def test_int8_export_agrees_with_sentence_transformers(real_encoder_dir: Path,
                                                       real_model: ModelInfo) -> None:
    onnx_encoder = OnnxEncoder(real_encoder_dir, real_model, threads=1)
    reference = TorchEncoder(real_model, threads=1)
    texts = [t for t in PASSAGES if len(t) > 20]
    fast, fast_spans = onnx_encoder.encode_passages(texts, SPANS[: len(texts)])
    slow, slow_spans = reference.encode_passages(texts, SPANS[: len(texts)])
    assert float(np.min(np.sum(fast * slow, axis=1))) > 0.98
    for a, b in zip(fast_spans, slow_spans, strict=True):
        assert float(np.min(np.sum(a * b, axis=1))) > 0.97
    query = "Who sits at the top of the product ladder?"
    q_fast = onnx_encoder.encode_queries([query])[0]
    q_slow = reference.encode_queries([query])[0]
    assert float(q_fast @ q_slow) > 0.98


# Run in a fresh interpreter where the build extra's packages cannot be imported, as in the
# serving image: the app loads the exported encoder and answers; exporting says what is missing.
WITHOUT_BUILD_EXTRA = """
import importlib.abc, json, sys
from pathlib import Path

BLOCKED = {"torch", "sentence_transformers", "transformers", "onnx"}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
from fastapi.testclient import TestClient
from service.app import create_app
from service.index.encoder import EncoderError, describe_model, export_onnx
from service.settings import Settings

corpus, index, scratch = map(Path, sys.argv[1:4])
with TestClient(create_app(Settings(corpus_dir=corpus, index_dir=index))) as client:
    reply = client.post("/api/ask", json={"question": "What does a head of product do?"})
try:
    export_onnx(describe_model(None), scratch / "encoder")
    problem = ""
except EncoderError as exc:
    problem = str(exc)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"status": reply.status_code, "citations": len(reply.json()["citations"]),
                  "problem": problem, "loaded": loaded}))
"""


def test_serving_needs_none_of_the_build_dependencies(real_settings: Settings,
                                                      tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_BUILD_EXTRA, str(real_settings.corpus_dir),
         str(real_settings.index_dir), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["citations"] >= 1
    assert result["loaded"] == []
    assert result["problem"].startswith("torch is not installed: exporting the encoder")
    assert "pip install 'cited-qa[build]'" in result["problem"]
