"""Embedding a build's passages with the ONNX encoder over several processes.

The passages are cut into the encoder's small batches once, in the parent; each worker process
runs its own single-threaded session on whole batches. A batch gives the same vectors wherever
it is encoded, so a build over N processes (or N shards on N machines, service.index.shards)
equals a build in one. Processes, not threads: tokenizing and the per-sentence means hold the GIL.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from service.index.encoder import ModelInfo, OnnxEncoder, Span, plan_batches

# Below this many passages per process, starting processes (each imports onnxruntime and loads
# the model, ~1 s) costs more than it saves: the build embeds in its own process.
MIN_PER_PROCESS = 2_000
# Batches handed to a worker at a time: few enough round trips, small enough to keep every
# process busy to the end and the progress line moving.
BATCHES_PER_TASK = 16

_encoder: OnnxEncoder | None = None


def process_count(requested: int, passages: int) -> int:
    """How many processes to embed `passages` with: `requested` (0: one per usable core),
    fewer when each would get under MIN_PER_PROCESS passages."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = requested or cores or 1
    return max(1, min(wanted, passages // MIN_PER_PROCESS))


def _start(folder: str, model: ModelInfo) -> None:
    global _encoder
    _encoder = OnnxEncoder(Path(folder), model, threads=1)


def _encode(texts: list[list[str]], spans: list[list[list[Span]]],
            ) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    assert _encoder is not None, "worker started without its encoder"
    return [_encoder.encode_batch(t, s) for t, s in zip(texts, spans, strict=True)]


Sink = Callable[[list[int], np.ndarray, list[np.ndarray]], None]


def encode_batches(
    folder: Path, model: ModelInfo, texts: Sequence[str], spans: Sequence[Sequence[Span]],
    batches: Sequence[Sequence[int]], processes: int, sink: Sink,
    done: Callable[[int], None] | None = None,
) -> None:
    """Encode the passages in `batches` (indexes into `texts`), each batch whole by one of
    `processes` worker processes, and hand each batch's result to `sink(batch, vectors,
    sentence vectors)` as it arrives (in no particular order), so nothing waits in memory."""
    tasks = [list(batches[i : i + BATCHES_PER_TASK])
             for i in range(0, len(batches), BATCHES_PER_TASK)]
    # spawn: a fresh interpreter per worker, never a fork of a process holding onnxruntime's
    # and the builder's threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, context, initializer=_start,
                             initargs=(str(folder), model)) as pool:
        pending: dict[Future[list[tuple[np.ndarray, list[np.ndarray]]]], list[list[int]]] = {}
        queue = iter(tasks)

        def submit() -> None:
            task = next(queue, None)
            if task is not None:
                pending[pool.submit(_encode, *_payload(task, texts, spans))] = [
                    list(b) for b in task]

        # Two tasks in flight per process: none waits on the parent between tasks.
        for _ in range(2 * processes):
            submit()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                for batch, (pooled, sentences) in zip(task, future.result(), strict=True):
                    sink(batch, pooled, sentences)
                    if done:
                        done(len(batch))
                submit()


def _payload(task: Sequence[Sequence[int]], texts: Sequence[str],
             spans: Sequence[Sequence[Span]]) -> tuple[list[list[str]], list[list[list[Span]]]]:
    return ([[texts[i] for i in batch] for batch in task],
            [[list(spans[i]) for i in batch] for batch in task])


def encode_all(folder: Path, model: ModelInfo, texts: Sequence[str],
               spans: Sequence[Sequence[Span]], processes: int,
               done: Callable[[int], None] | None = None,
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every passage, over `processes` worker processes, batched as the encoder batches."""
    vectors = np.zeros((len(texts), model.dimension), dtype=np.float32)
    per_span: list[np.ndarray] = [np.empty((0, model.dimension), np.float32)] * len(texts)

    def keep(batch: list[int], pooled: np.ndarray, sentences: list[np.ndarray]) -> None:
        vectors[batch] = pooled
        for row, i in enumerate(batch):
            per_span[i] = sentences[row]

    encode_batches(folder, model, texts, spans, plan_batches(texts), processes, keep, done)
    return vectors, per_span
