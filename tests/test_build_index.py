"""scripts/build_index.py with collections: one (--collection) or each (--all), and one
collection's failed build never touching another's served version."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scripts import build_index as cli
from service.app import create_app
from service.http.identity import Identity, current_identity
from service.index import store
from service.index.indexing import build_index
from service.settings import Settings
from tests.conftest import FakeEncoder


@pytest.fixture
def fake_builds(monkeypatch: pytest.MonkeyPatch, collections_file: Path) -> Path:
    """The CLI building with the fake encoder, QA_COLLECTIONS_FILE naming the two collections;
    returns the folder holding the corpora and indexes."""
    def fake(settings: Settings, **kw: Any) -> Any:
        return build_index(settings, encoder=FakeEncoder(), **kw)

    monkeypatch.setattr(cli, "build_index", fake)
    monkeypatch.setenv("QA_COLLECTIONS_FILE", str(collections_file))
    return collections_file.parent


def _current(root: Path, name: str) -> str | None:
    return store.current_version(root / "index" / name)


def test_one_collection_is_built_alone(fake_builds: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    before = {n: _current(fake_builds, n) for n in ("article", "notes")}
    (fake_builds / "notes" / "bell.txt").write_text("The fog bell rings every minute.", "utf-8")
    assert cli.main(["--collection", "notes"]) == 0
    out = capsys.readouterr().out
    assert f"collection notes: {fake_builds / 'notes'} -> {fake_builds / 'index' / 'notes'}" in out
    assert "added: bell.txt" in out
    assert _current(fake_builds, "notes") != before["notes"]
    assert _current(fake_builds, "article") == before["article"]
    assert cli.main(["--collection", "notes", "--list"]) == 0
    assert len(store.list_versions(fake_builds / "index" / "notes")) == 2


def test_all_builds_each_and_a_failure_leaves_the_others(
        fake_builds: Path, collections_file: Path, fake_encoder: FakeEncoder,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(collections_file=collections_file, rate_limit=0, reload_interval=0)
    app = create_app(settings, encoder=fake_encoder)

    async def hr() -> Identity:
        return Identity("ann", frozenset({"hr"}))

    app.dependency_overrides[current_identity] = hr
    with TestClient(app) as client:
        served = client.get("/api/collections/notes").json()["index_version"]
        # The notes corpus is gone: its build fails; the article's goes on.
        shutil.rmtree(fake_builds / "notes")
        (fake_builds / "article" / "extra.txt").write_text("A short extra page.", "utf-8")
        assert cli.main(["--all"]) == 1
        captured = capsys.readouterr()
        assert "collection article:" in captured.out and "collection notes:" in captured.out
        assert "build failed, nothing published" in captured.err
        assert "failed: notes (the others were built" in captured.err
        assert _current(fake_builds, "notes") == served
        library = client.app.state.library  # type: ignore[attr-defined]
        for shelf in library:
            shelf.engine.reload_if_changed()
        after = {c["name"]: c for c in client.get("/api/collections").json()}
        assert after["notes"]["index_version"] == served
        assert after["article"]["index_version"] == _current(fake_builds, "article")
        assert after["article"]["documents"] == 2
        r = client.post("/api/collections/notes/ask", json={"question": "Who keeps the ledger?"})
        assert r.status_code == 200 and r.json()["index_version"] == served


def test_all_without_a_collections_file_builds_the_one_index(
        monkeypatch: pytest.MonkeyPatch, fake_settings: Settings,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "build_index",
                        lambda settings, **kw: build_index(settings, encoder=FakeEncoder(), **kw))
    monkeypatch.setenv("QA_CORPUS_DIR", str(fake_settings.corpus_dir))
    monkeypatch.setenv("QA_INDEX_DIR", str(fake_settings.index_dir))
    (fake_settings.corpus_dir / "more.txt").write_text("More text here.", "utf-8")
    assert cli.main(["--all", "--if-stale"]) == 0
    out = capsys.readouterr().out
    assert "collection" not in out and "building index:" in out
    assert "more.txt" in out


def test_wrong_uses_are_refused(fake_builds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--collection", "nope"]) == 2
    assert "no collection 'nope'; declared: article, notes" in capsys.readouterr().err
    for args in (["--all", "--list"], ["--collection", "notes", "--all"],
                 ["--collection", "notes", "--corpus", "x"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(args)
        assert exited.value.code == 2


def test_a_bad_collections_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[collections.a]\ntitle = 1\n", "utf-8")
    monkeypatch.setenv("QA_COLLECTIONS_FILE", str(bad))
    assert cli.main(["--all"]) == 2
    assert f"{bad}: collections.a." in capsys.readouterr().err


def test_each_collection_reloads_and_rolls_back_on_its_own(
        fake_builds: Path, collections_file: Path, fake_encoder: FakeEncoder,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(collections_file=collections_file, rate_limit=0, reload_interval=0.05)
    with TestClient(create_app(settings, encoder=fake_encoder)) as client:
        def served() -> dict[str, str]:
            return {c["name"]: c["index_version"]
                    for c in client.get("/api/collections").json()}

        first = served()
        assert set(first) == {"article"}  # `notes` is for group hr only
        (fake_builds / "article" / "extra.txt").write_text("A short extra page.", "utf-8")
        assert cli.main(["--collection", "article"]) == 0
        newer = _current(fake_builds, "article")
        deadline = time.monotonic() + 10
        while served()["article"] != newer:
            assert time.monotonic() < deadline, "the new version was never served"
            time.sleep(0.05)
        notes = _current(fake_builds, "notes")
        capsys.readouterr()
        assert cli.main(["--collection", "article", "--rollback"]) == 0
        assert f"now serving {first['article']} (was {newer})" in capsys.readouterr().out
        while served()["article"] != first["article"]:
            assert time.monotonic() < deadline + 10, "the rollback was never served"
            time.sleep(0.05)
        assert _current(fake_builds, "notes") == notes
