"""Readers run in worker processes: a hang, a crash or a memory balloon costs one named
problem and one worker; the others go on."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

from service.ingest.document import Document, Extraction, ReadError
from service.ingest.registry import BY_NAME
from service.ingest.sandbox import ParseLimits, ReaderPool, read_isolated

FIXTURES = Path(__file__).resolve().parent / "fixtures"


# Readers misbehaving the ways real parsers do; module-level so the child can import them.
def _hang(data: bytes, name: str) -> Extraction:
    while True:
        time.sleep(0.05)


def _segfault(data: bytes, name: str) -> Extraction:
    ctypes.string_at(0)
    return [], []


def _balloon(data: bytes, name: str) -> Extraction:
    hoard = [bytearray(64 * 2**20) for _ in range(64)]
    return [Document(name, "", str(len(hoard)))], []


def _refuse(data: bytes, name: str) -> Extraction:
    raise ReadError("refused on purpose")


def _bug(data: bytes, name: str) -> Extraction:
    return [], [][1]


def _pid(data: bytes, name: str) -> Extraction:
    return [Document(name, "", str(os.getpid()))], []


LIMITS = ParseLimits(timeout=10, memory_mb=256)


def test_a_real_reader_runs_in_the_child() -> None:
    docs, problems = read_isolated(BY_NAME["pdf"].read, "pdf",
                                   (FIXTURES / "fmla.pdf").read_bytes(), "a/fmla.pdf", LIMITS)
    assert problems == [] and docs[0].id == "a/fmla.pdf" and len(docs[0].pages) == 3


def test_a_hanging_reader_is_stopped_at_the_time_limit() -> None:
    started = time.monotonic()
    docs, problems = read_isolated(_hang, "test", b"", "slow.pdf", ParseLimits(1.0, 256))
    assert time.monotonic() - started < 8
    assert docs == [] and [p.source for p in problems] == ["slow.pdf"]
    assert "took longer than 1 s and was stopped" in problems[0].reason


def test_a_crashing_reader_is_named_with_its_signal() -> None:
    docs, problems = read_isolated(_segfault, "test", b"", "crash.pdf", LIMITS)
    assert docs == [] and problems[0].reason == "the test reader crashed (killed by SIGSEGV)"


def test_a_reader_over_its_memory_limit_is_stopped() -> None:
    docs, problems = read_isolated(_balloon, "test", b"", "big.docx", LIMITS)
    assert docs == []
    assert problems[0].reason.startswith("the test reader ran out of memory (limit 256 MB")


def test_read_errors_and_bugs_become_problems() -> None:
    assert read_isolated(_refuse, "test", b"", "x.pdf", LIMITS)[1][0].reason == (
        "refused on purpose")
    reason = read_isolated(_bug, "test", b"", "x.pdf", LIMITS)[1][0].reason
    assert reason == "the test reader failed (IndexError: list index out of range)"


def test_a_pool_keeps_its_worker_and_replaces_a_lost_one() -> None:
    with ReaderPool(ParseLimits(1.0, 256)) as pool:
        first = pool.read(_pid, "test", b"", "a.pdf")[0][0].text
        assert pool.read(_pid, "test", b"", "b.pdf")[0][0].text == first
        assert "took longer" in pool.read(_hang, "test", b"", "c.pdf")[1][0].reason
        assert "crashed" in pool.read(_segfault, "test", b"", "d.pdf")[1][0].reason
        after = pool.read(_pid, "test", b"", "e.pdf")[0][0].text
        assert after not in (first, str(os.getpid()))
