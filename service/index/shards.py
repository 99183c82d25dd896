"""Embedding a build in shards on several machines, then merging them into one published version.

Every shard reads the same corpus and the same served version, so it computes the same plan
(service.index.indexing.plan_build): the same chunks, the same chunks left to embed, cut into the
same encoder batches. Shard i of N encodes batches i, i+N, i+2N, ... whole and writes their
vectors, by chunk key, to `<folder>/shard-i-of-N/`. The merge (a normal build given the
folder) takes the vectors of every chunk to embed from the shards instead of the model, and
publishes. A batch gives the same vectors wherever it runs, so the merged version holds exactly
the vectors a one-shot build would.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.index import embedding, store
from service.index.encoder import OnnxEncoder, describe_model, export_onnx, plan_batches
from service.index.indexing import (
    EXTRACTED,
    BuildError,
    Plan,
    encoder_folder,
    parse_limits,
    plan_build,
    settings_fingerprint,
)
from service.ingest.corpus import read_documents
from service.settings import Settings

INFO, KEYS, ROWS, VECTORS, SENTENCES, COUNTS = (
    "shard.json", "keys.json", "rows.npy", "vectors.npy", "sentence_vectors.npy",
    "sentence_counts.npy")


@dataclass(frozen=True)
class ShardReport:
    shard: int
    of: int
    folder: Path
    chunks: int  # chunks this shard embedded
    todo: int  # chunks the whole build has to embed
    plan: str

    def summary(self) -> str:
        return (f"shard {self.shard} of {self.of}: embedded {self.chunks} of the build's "
                f"{self.todo} chunks to embed into {self.folder}")


def shard_folder(folder: Path, shard: int, of: int) -> Path:
    return folder / f"shard-{shard}-of-{of}"


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N) as (I, N); ValueError with the reason otherwise."""
    left, sep, right = text.partition("/")
    if not sep or not left.isdigit() or not right.isdigit():
        raise ValueError(f"a shard is written I/N, e.g. 0/4 (got {text!r})")
    shard, of = int(left), int(right)
    if not 0 <= shard < of <= 4096:
        raise ValueError(f"shard {shard}/{of}: need 0 <= I < N <= 4096")
    return shard, of


def embed_shard(settings: Settings, shard: int, of: int, folder: Path, *,
                corpus_dir: Path | None = None, index_dir: Path | None = None,
                done: Callable[[int], None] | None = None) -> ShardReport:
    """Embed shard `shard` of `of` of the build the corpus needs now and write it under
    `folder` (replacing an earlier run of the same shard). Publishes nothing."""
    corpus_dir = corpus_dir or settings.corpus_dir
    index_dir = index_dir or settings.index_dir
    if settings.encoder != OnnxEncoder.kind:
        raise BuildError(f"sharded embedding needs QA_ENCODER={OnnxEncoder.kind}")
    model = describe_model(settings.model_dir)
    settings_hash = settings_fingerprint(settings, model, settings.encoder)
    docs, _ = read_documents(corpus_dir, settings.max_file_bytes, limits=parse_limits(settings),
                             cache_dir=index_dir / EXTRACTED, threads=settings.build_threads)
    plan = plan_build(settings, docs, model, settings.encoder, index_dir, settings_hash)
    texts = [plan.inputs[i][0] for i in plan.todo]
    spans = [plan.inputs[i][1] for i in plan.todo]
    batches = plan_batches(texts)[shard::of]
    rows = sorted(i for batch in batches for i in batch)
    encoder_dir = encoder_folder(index_dir, OnnxEncoder.kind, model)
    export_onnx(model, encoder_dir)
    vectors = np.zeros((len(texts), model.dimension), dtype=np.float32)
    per_span = [np.empty((0, model.dimension), np.float16)] * len(texts)

    def keep(batch: list[int], pooled: np.ndarray, sentences: list[np.ndarray]) -> None:
        vectors[batch] = pooled
        for row, i in enumerate(batch):
            per_span[i] = sentences[row].astype(np.float16)

    processes = embedding.process_count(settings.build_processes, len(rows))
    if processes > 1:
        embedding.encode_batches(encoder_dir, model, texts, spans, batches, processes, keep,
                                 done)
    else:
        encoder = OnnxEncoder(encoder_dir, model, threads=1)
        for batch in batches:
            keep(batch, *encoder.encode_batch([texts[i] for i in batch],
                                              [spans[i] for i in batch]))
            if done:
                done(len(batch))
    target = shard_folder(folder, shard, of)
    _write(target, {"shard": shard, "of": of, "plan": plan.fingerprint,
                    "settings_hash": settings_hash, "chunks": len(rows)},
           rows, [plan.keys[plan.todo[r]] for r in rows], vectors[rows],
           [per_span[r] for r in rows], model.dimension)
    return ShardReport(shard, of, target, len(rows), len(plan.todo), plan.fingerprint)


def _write(target: Path, info: dict[str, object], rows: list[int], keys: list[str],
           vectors: np.ndarray, sentences: list[np.ndarray], dimension: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (work / KEYS).write_text(json.dumps(keys), "utf-8")
        np.save(work / ROWS, np.array(rows, dtype=np.int64), allow_pickle=False)
        np.save(work / VECTORS, vectors.astype(np.float32), allow_pickle=False)
        stacked = np.concatenate(sentences) if sentences else np.empty((0, dimension))
        np.save(work / SENTENCES, stacked.astype(np.float16), allow_pickle=False)
        np.save(work / COUNTS, np.array([len(s) for s in sentences], dtype=np.int64),
                allow_pickle=False)
        files = {name: store.sha256_file(work / name) for name in (KEYS, ROWS, VECTORS,
                                                                    SENTENCES, COUNTS)}
        (work / INFO).write_text(json.dumps({**info, "files": files}, indent=2), "utf-8")
        for path in work.iterdir():
            store.fsync_file(path)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
        store.fsync_dir(target.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def collect(folder: Path, plan: Plan, settings_hash: str,
            dimension: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The vectors of `plan.todo`, in that order, from the shards under `folder` made for this
    plan. BuildError naming what is missing when the shards do not cover it."""
    found: dict[int, tuple[int, Path]] = {}
    others = 0
    for info_path in sorted(folder.glob(f"shard-*/{INFO}")):
        info = json.loads(info_path.read_text("utf-8"))
        if info.get("plan") != plan.fingerprint or info.get("settings_hash") != settings_hash:
            others += 1
            continue
        found[int(info["shard"])] = (int(info["of"]), info_path.parent)
    counts = {of for of, _ in found.values()}
    if len(counts) != 1:
        stale = f" ({others} shard folders were made for another corpus, index or settings)" \
            if others else ""
        raise BuildError(f"no complete set of shards in {folder} for this build{stale}: embed "
                         f"every shard I/N of the corpus as it is now, then merge")
    (of,) = counts
    missing = sorted(set(range(of)) - set(found))
    if missing:
        raise BuildError(f"shards {', '.join(f'{m}/{of}' for m in missing)} are missing from "
                         f"{folder}: embed them, then merge")
    todo_keys = [plan.keys[i] for i in plan.todo]
    vectors = np.zeros((len(plan.todo), dimension), dtype=np.float32)
    per_span: list[np.ndarray | None] = [None] * len(plan.todo)
    for shard in range(of):
        path = found[shard][1]
        info = json.loads((path / INFO).read_text("utf-8"))
        for name, digest in info.get("files", {}).items():
            if not store.is_plain_name(name) or store.sha256_file(path / name) != digest:
                raise BuildError(f"{path / name} does not match its checksum (damaged?): "
                                 f"embed shard {shard}/{of} again")
        keys = json.loads((path / KEYS).read_text("utf-8"))
        rows = np.load(path / ROWS, allow_pickle=False)
        shard_vectors = np.load(path / VECTORS, allow_pickle=False)
        sentences = np.load(path / SENTENCES, allow_pickle=False).astype(np.float32)
        ptr = np.concatenate([[0], np.cumsum(np.load(path / COUNTS, allow_pickle=False))])
        if len(keys) != len(shard_vectors) or len(rows) != len(keys) or (
                len(ptr) != len(keys) + 1) or ptr[-1] != len(sentences) or (
                shard_vectors.shape[1:] != (dimension,)):
            raise BuildError(f"{path} is inconsistent: embed shard {shard}/{of} again")
        for n, (row, key) in enumerate(zip(rows.tolist(), keys, strict=True)):
            # Rows are positions in the plan's chunks to embed (the plan is the same, so the
            # keys must agree): two chunks with the same text in different batches each keep
            # their own batch's vector, as in a one-shot build.
            if not 0 <= row < len(todo_keys) or todo_keys[row] != key:
                raise BuildError(f"{path} does not match this build: embed shard {shard}/{of} "
                                 "again")
            vectors[row] = shard_vectors[n]
            per_span[row] = sentences[ptr[n] : ptr[n + 1]]
    absent = sum(1 for s in per_span if s is None)
    if absent:
        raise BuildError(f"the shards in {folder} lack {absent} of the {len(plan.todo)} chunks "
                         "to embed: embed every shard again, then merge")
    return vectors, [s for s in per_span if s is not None]
