"""Crash safety: builders killed with SIGKILL, damaged files, a full disk, two builders at once."""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.index import store
from service.index.indexing import CHUNKS, VECTORS, build_index
from service.qa.retrieval import load_index
from service.settings import Settings
from tests.conftest import ROOT, FakeEncoder

KILLS = 20


def _builder(mode: str, settings: Settings,
             preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fault_builder", mode, str(settings.corpus_dir),
         str(settings.index_dir)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=preexec_fn)


def _wait_for_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == expected, f"builder said {line!r}; stderr: {proc.stderr and proc.stderr.read()}"


def _serving(client: TestClient, version: str) -> bool:
    return bool(client.get("/readyz").json()["index_version"] == version)


@pytest.fixture
def running(fake_settings: Settings, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    """A service that polls for new versions while the builder is being killed."""
    settings = fake_settings.model_copy(update={"reload_interval": 0.02})
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        yield client


def test_builders_killed_at_random_points_never_break_the_index(
        fake_settings: Settings, fake_encoder: FakeEncoder, running: TestClient) -> None:
    rng = random.Random(20240605)
    index_dir = fake_settings.index_dir
    mid_build = attempts = 0
    while mid_build < KILLS:
        attempts += 1
        assert attempts <= 3 * KILLS, f"only {mid_build} kills landed inside a build"
        before = store.current_version(index_dir)
        proc = _builder("loop", fake_settings)
        _wait_for_line(proc, "ready")
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        said = out.split("\n")[:-1]  # a line cut short by the kill has no newline
        mid_build += bool(said) and said[-1].startswith("start")

        current = store.current_version(index_dir)
        assert current is not None
        finished = [line.split()[2] for line in said if line.startswith("done")]
        # The pointer names the last version the builder finished or, if it was killed
        # between switching the pointer and saying so, the newer one it was publishing.
        # (Version names sort in publishing order.)
        assert current >= (finished[-1] if finished else str(before))
        assert current in store.list_versions(index_dir)
        for version in store.list_versions(index_dir):
            store.verify(index_dir / "versions" / version)
        assert load_index(index_dir).version == current

        deadline = time.monotonic() + 20
        while not _serving(running, current):
            assert time.monotonic() < deadline, "the running service did not follow CURRENT"
            time.sleep(0.01)
        assert running.post("/api/ask", json={"question": "head of product"}).status_code == 200
        with TestClient(create_app(fake_settings, encoder=fake_encoder)) as fresh:
            assert _serving(fresh, current)
            r = fresh.post("/api/ask", json={"question": "What number is this build?"})
            assert r.status_code == 200 and r.json()["index_version"] == current

    # The next build finds the lock free and sweeps up what the killed builders left.
    (fake_settings.corpus_dir / "note.txt").write_text("After the storm.\n", "utf-8")
    report = build_index(fake_settings, encoder=fake_encoder)
    assert report.published
    assert not list((index_dir / "versions").glob(".staging-*"))
    assert not list(index_dir.glob(".CURRENT.*"))
    assert len(store.list_versions(index_dir)) <= fake_settings.keep_versions


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_current_version_is_refused_at_start(
        fake_settings: Settings, fake_encoder: FakeEncoder, damage: str) -> None:
    folder = fake_settings.index_dir / "versions" / str(
        store.current_version(fake_settings.index_dir))
    for name in (VECTORS, CHUNKS):
        path = folder / name
        data = bytearray(path.read_bytes())
        if damage == "flip":
            data[len(data) // 3] ^= 0x08
        else:
            del data[len(data) - 7:]
        path.write_bytes(bytes(data))
    with pytest.raises(store.IndexUnavailable, match="does not match its checksum"):
        with TestClient(create_app(fake_settings, encoder=fake_encoder)):
            pass
    with pytest.raises(store.IndexUnavailable, match="does not match its checksum"):
        load_index(fake_settings.index_dir)


def _small_disk() -> None:
    # A file-size limit makes every write past 4 KiB fail with EFBIG, like a full disk would
    # with ENOSPC; the signal that would otherwise kill the process is ignored, so the
    # builder sees the failed write and must handle it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_build_on_a_full_disk_fails_and_publishes_nothing(fake_settings: Settings) -> None:
    index_dir = fake_settings.index_dir
    before = store.current_version(index_dir)
    versions = store.list_versions(index_dir)
    (fake_settings.corpus_dir / "new.txt").write_text("Fresh text. " * 200, "utf-8")
    proc = _builder("once", fake_settings, preexec_fn=_small_disk)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "build failed, nothing published: [Errno 27] File too large" in err
    assert store.current_version(index_dir) == before
    assert store.list_versions(index_dir) == versions
    assert not list((index_dir / "versions").glob(".staging-*"))
    # With room again, the same build goes through.
    proc = _builder("once", fake_settings)
    assert proc.communicate(timeout=60)[0] and proc.returncode == 0
    assert store.current_version(index_dir) != before


def test_two_concurrent_builds_one_fails_at_once_naming_the_holder(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    index_dir = fake_settings.index_dir
    before = store.current_version(index_dir)
    (fake_settings.corpus_dir / "new.txt").write_text("Text for a build.", "utf-8")
    holder = _builder("hold", fake_settings)
    try:
        _wait_for_line(holder, "locked")
        second = _builder("once", fake_settings)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert f"another build is running on {index_dir} (pid {holder.pid} on " in err
        with pytest.raises(store.BuildLocked, match=f"pid {holder.pid} on"):
            build_index(fake_settings, encoder=fake_encoder)
        assert store.current_version(index_dir) == before
    finally:
        holder.communicate(input="", timeout=30)
    assert holder.returncode == 0
    assert build_index(fake_settings, encoder=fake_encoder).published


def test_the_lock_dies_with_a_killed_holder(fake_settings: Settings,
                                            fake_encoder: FakeEncoder) -> None:
    holder = _builder("hold", fake_settings)
    _wait_for_line(holder, "locked")
    assert store.lock_holder(fake_settings.index_dir) is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)
    assert store.lock_holder(fake_settings.index_dir) is None
    shutil.rmtree(fake_settings.index_dir / "versions")
    assert build_index(fake_settings, encoder=fake_encoder).published
