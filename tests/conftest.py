"""Shared fixtures: a fast fake encoder, and the shipped corpus indexed with the real model."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.index.encoder import ModelInfo, OnnxEncoder, describe_model
from service.index.indexing import build_index, encoder_folder, open_encoder
from service.settings import Settings
from tests.fakes import FakeEncoder as FakeEncoder  # re-exported for the test modules
from tests.tokens import Key, ec_key, rsa_key

ROOT = Path(__file__).resolve().parent.parent
SEED_CORPUS = ROOT / "corpus"


class TooSlow(AssertionError):
    """A call on hostile input outran its (generous) time limit: not linear time."""


@contextlib.contextmanager
def _within(seconds: float) -> Iterator[None]:
    # SIGALRM interrupts even a backtracking regex (the re engine checks for signals), so a
    # call that would run for hours fails the test instead of hanging the suite.
    def expire(signum: int, frame: object) -> None:
        raise TooSlow(f"took over {seconds:g} s on hostile input")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def within() -> Callable[[float], contextlib.AbstractContextManager[None]]:
    """`with within(1.0): f(hostile)` fails when f takes longer; limits are generous, so this
    checks for super-linear blow-ups, not speed."""
    return _within


@pytest.fixture(scope="session", autouse=True)
def clean_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No `QA_*` variable of the caller's shell reaches the suite, and the answer store of any
    app a test builds lives in a temporary folder, never in the repository's data/."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("QA_")]:
            patch.delenv(name)
        patch.setenv("QA_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(SEED_CORPUS, target)
    return target


@pytest.fixture
def fake_settings(tmp_path: Path, corpus_dir: Path, fake_encoder: FakeEncoder) -> Settings:
    """Settings with an index of the shipped corpus built by the fake encoder."""
    settings = Settings(corpus_dir=corpus_dir, index_dir=tmp_path / "index", rate_limit=0,
                        data_dir=tmp_path / "data")
    build_index(settings, encoder=fake_encoder)
    return settings


@pytest.fixture
def fake_client(fake_settings: Settings, fake_encoder: FakeEncoder) -> Iterator[TestClient]:
    with TestClient(create_app(fake_settings, encoder=fake_encoder)) as client:
        yield client


# A second small corpus, on another subject than the shipped article.
NOTES_CORPUS = {
    "keeper.md": "# The lighthouse keeper\n\nThe Zephyr lighthouse keeper writes every passing "
                 "ship into a red ledger. The red ledger is kept in the lamp room beside the "
                 "brass telescope. Nobody but the keeper may write in the ledger.\n",
    "lamp/oil.txt": "Lamp oil is delivered by boat on the first Monday of each month. The "
                    "keeper signs for the barrels and stores them in the cellar under the "
                    "tower, away from the lamp room.\n",
}


def write_corpus(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, "utf-8")
    return folder


@pytest.fixture
def collections_file(tmp_path: Path, fake_encoder: FakeEncoder) -> Path:
    """A collections file naming two indexed corpora (fake encoder): `article`, the shipped
    corpus, public; `notes`, a small other one, for group `hr` only."""
    root = tmp_path / "collections"
    shutil.copytree(SEED_CORPUS, root / "article")
    write_corpus(root / "notes", NOTES_CORPUS)
    for name in ("article", "notes"):
        build_index(Settings(corpus_dir=root / name, index_dir=root / "index" / name),
                    encoder=fake_encoder)
    path = root / "collections.toml"
    path.write_text("""
[collections.article]
title = "The article"
corpus_dir = "article"
index_dir = "index/article"
allowed_origins = ["https://article.example"]
access = "public"

[collections.notes]
title = "The notes"
corpus_dir = "notes"
index_dir = "index/notes"
access = ["hr"]
""", "utf-8")
    return path


@pytest.fixture(scope="session")
def real_model() -> ModelInfo:
    return describe_model(None)


@pytest.fixture(scope="session")
def real_encoder_dir(tmp_path_factory: pytest.TempPathFactory, real_model: ModelInfo) -> Path:
    """One ONNX export of the packaged model for the whole session (export takes seconds)."""
    index_dir = tmp_path_factory.mktemp("real-index")
    settings = Settings(corpus_dir=SEED_CORPUS, index_dir=index_dir)
    open_encoder(settings, real_model, threads=2)
    return encoder_folder(index_dir, OnnxEncoder.kind, real_model)


@pytest.fixture(scope="session")
def real_settings(real_encoder_dir: Path) -> Settings:
    """The shipped corpus indexed with the real packaged model, as `make index` does."""
    index_dir = real_encoder_dir.parent.parent
    settings = Settings(corpus_dir=SEED_CORPUS, index_dir=index_dir, rate_limit=0, cache_size=0)
    build_index(settings)
    return settings


@pytest.fixture(scope="session")
def real_client(real_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(real_settings)) as client:
        yield client


class Postgres:
    """A throwaway PostgreSQL server from Debian's package on a loopback port."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.fail("no PostgreSQL: apt-get install -y postgresql (.ci/run does)")
        self.bin = Path(found[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="qa-pg-"))
        self.port = free_port()
        self._count = 0
        # PostgreSQL refuses to run as root: as root, run it as the postgres user.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            entry = pwd.getpwnam("postgres")
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self.prefix, str(self.bin / tool), *args],
                                capture_output=True, text=True, timeout=120)
        if result.returncode:
            pytest.fail(f"{tool} failed: {result.stdout}{result.stderr}")

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        self._count += 1
        name = f"qa_test_{self._count}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, fake_settings: Settings,
                   tmp_path: Path) -> Settings:
    """The fake-encoder settings with an answer store of each kind (the same tests run on
    both): SQLite in a temporary folder, or a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        return fake_settings.model_copy(update={"data_dir": tmp_path / "store"})
    server: Postgres = request.getfixturevalue("postgres")
    return fake_settings.model_copy(update={"database_url": SecretStr(server.new_database())})


def start_service(env: dict[str, str], log: Path,
                  extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """`uvicorn --factory service.app:create_app` on a free port, once its store is open."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra],
            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            r = httpx.get(f"{origin}/readyz", timeout=2)
            if r.status_code == 200 and r.json()["store"]["status"] == "ok":
                return proc, origin
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the service did not become ready:\n{log.read_text()}")


# Signing keys for the identity tests (tests/tokens.py makes them; one of each per module).
@pytest.fixture(scope="module")
def rsa() -> Key:
    return rsa_key()


@pytest.fixture(scope="module")
def ec() -> Key:
    return ec_key()
