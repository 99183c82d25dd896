"""Index versions on disk: the pointer, rollback, verification, pruning and the build lock."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from service.index import store
from service.index.indexing import VECTORS, build_index, is_stale
from service.qa.retrieval import load_index
from service.settings import Settings
from tests.conftest import FakeEncoder


def _publish(settings: Settings, encoder: FakeEncoder, count: int) -> list[str]:
    """`count` more versions (forced rebuilds of the same corpus), oldest first."""
    out = []
    for _ in range(count):
        report = build_index(settings, encoder=encoder, force=True)
        assert report.version is not None
        out.append(report.version)
    return out


def test_versions_sort_in_publishing_order(fake_settings: Settings,
                                           fake_encoder: FakeEncoder) -> None:
    first = store.current_version(fake_settings.index_dir)
    later = _publish(fake_settings, fake_encoder, 2)
    assert store.list_versions(fake_settings.index_dir) == [first, *later]
    assert store.current_version(fake_settings.index_dir) == later[-1]


def test_rollback_defaults_to_the_previous_version(fake_settings: Settings,
                                                   fake_encoder: FakeEncoder) -> None:
    first = store.current_version(fake_settings.index_dir)
    second, third = _publish(fake_settings, fake_encoder, 2)
    assert store.rollback(fake_settings.index_dir) == second
    assert store.current_version(fake_settings.index_dir) == second
    assert store.rollback(fake_settings.index_dir) == first
    assert load_index(fake_settings.index_dir).version == first
    with pytest.raises(store.NoSuchVersion, match="no version older than"):
        store.rollback(fake_settings.index_dir)
    assert store.rollback(fake_settings.index_dir, third) == third


def test_rollback_refuses_unknown_and_damaged_versions(fake_settings: Settings,
                                                       fake_encoder: FakeEncoder) -> None:
    first = store.current_version(fake_settings.index_dir)
    (second,) = _publish(fake_settings, fake_encoder, 1)
    with pytest.raises(store.NoSuchVersion, match="no published version 'nope'"):
        store.rollback(fake_settings.index_dir, "nope")
    _flip_byte(fake_settings.index_dir / "versions" / str(first) / VECTORS)
    with pytest.raises(store.IndexUnavailable, match="does not match its checksum"):
        store.rollback(fake_settings.index_dir)
    assert store.current_version(fake_settings.index_dir) == second


def test_describe_versions_marks_current_and_damaged(fake_settings: Settings,
                                                     fake_encoder: FakeEncoder) -> None:
    first = store.current_version(fake_settings.index_dir)
    (second,) = _publish(fake_settings, fake_encoder, 1)
    _truncate(fake_settings.index_dir / "versions" / str(first) / VECTORS)
    old, new = store.describe_versions(fake_settings.index_dir)
    assert (old.name, old.current, new.name, new.current) == (first, False, second, True)
    assert "vectors.npy does not match its checksum" in old.problem
    assert new.problem == "" and new.documents == 1 and new.chunks > 0


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_flip_byte, _truncate])
def test_verify_refuses_a_damaged_file(fake_settings: Settings, damage: object) -> None:
    version = store.current_version(fake_settings.index_dir)
    folder = fake_settings.index_dir / "versions" / str(version)
    assert callable(damage)
    damage(folder / "chunks.json")
    with pytest.raises(store.IndexUnavailable, match=r"chunks.json does not match its checksum"):
        store.verify(folder)
    with pytest.raises(store.IndexUnavailable, match="run `make index`"):
        load_index(fake_settings.index_dir)


def test_verify_refuses_a_missing_file_and_a_damaged_manifest(fake_settings: Settings) -> None:
    folder = fake_settings.index_dir / "versions" / str(
        store.current_version(fake_settings.index_dir))
    (folder / "dense.faiss").unlink()
    with pytest.raises(store.IndexUnavailable, match="dense.faiss is missing"):
        store.verify(folder)
    (folder / store.MANIFEST).write_text('{"format": 1, "files": ', "utf-8")
    with pytest.raises(store.IndexUnavailable, match="manifest.json is damaged"):
        store.verify(folder)


def test_prune_keeps_the_newest_and_the_current_and_clears_leftovers(
        fake_settings: Settings, fake_encoder: FakeEncoder) -> None:
    index_dir = fake_settings.index_dir
    first = store.current_version(index_dir)
    versions = [first, *_publish(fake_settings, fake_encoder, 4)]
    # build_index prunes to keep_versions (3) itself.
    assert store.list_versions(index_dir) == versions[-3:]
    store.rollback(index_dir, versions[2])
    (index_dir / "versions" / ".staging-killed").mkdir()
    (index_dir / "versions" / ".deleting-killed").mkdir()
    (index_dir / ".CURRENT.999.tmp").write_text("half", "utf-8")
    assert store.prune(index_dir, keep=1) == [versions[3]]
    assert store.list_versions(index_dir) == [versions[2], versions[4]]
    assert sorted(p.name for p in (index_dir / "versions").iterdir()) == [
        versions[2], versions[4]]
    assert not (index_dir / ".CURRENT.999.tmp").exists()


def test_set_current_replaces_the_pointer_whole(tmp_path: Path) -> None:
    store.set_current(tmp_path, "v1")
    store.set_current(tmp_path, "v2")
    assert (tmp_path / store.CURRENT).read_text("utf-8") == "v2\n"
    assert store.current_version(tmp_path) == "v2"
    assert [p.name for p in tmp_path.iterdir()] == [store.CURRENT]


def test_second_build_lock_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    assert store.lock_holder(tmp_path) is None
    with store.build_lock(tmp_path):
        holder = store.lock_holder(tmp_path)
        assert holder is not None and holder.startswith(f"pid {os.getpid()} on ")
        for _ in range(2):  # a failed attempt must not erase the holder's note
            with pytest.raises(store.BuildLocked, match=f"pid {os.getpid()} on"):
                with store.build_lock(tmp_path):
                    pass
    assert store.lock_holder(tmp_path) is None
    with store.build_lock(tmp_path):
        pass


def test_cli_lists_and_rolls_back(fake_settings: Settings, fake_encoder: FakeEncoder,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from scripts import build_index as cli

    index = str(fake_settings.index_dir)
    first = store.current_version(fake_settings.index_dir)
    (second,) = _publish(fake_settings, fake_encoder, 1)
    assert cli.main(["--index", index, "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[first, "built"], ["*", second]]
    assert cli.main(["--index", index, "--rollback"]) == 0
    assert f"now serving {first} (was {second})" in capsys.readouterr().out
    assert cli.main(["--index", index, "--rollback", second]) == 0
    assert store.current_version(fake_settings.index_dir) == second
    assert cli.main(["--index", index, "--rollback", "missing"]) == 1
    assert f"rollback failed, still serving {second}" in capsys.readouterr().err
    assert cli.main(["--index", str(fake_settings.index_dir / "none"), "--list"]) == 1


def test_cli_names_what_changed(fake_settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from scripts import build_index as cli

    monkeypatch.setattr(cli, "build_index",
                        lambda settings, **kw: build_index(settings, encoder=FakeEncoder(), **kw))
    corpus = fake_settings.corpus_dir
    for n in range(12):
        (corpus / f"page-{n:02d}.md").write_text(f"# Page {n}\n\nText number {n}.\n", "utf-8")
    args = ["--corpus", str(corpus), "--index", str(fake_settings.index_dir)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    # From one document to several, titles join every passage's context: all are embedded.
    assert "(+12 ~0 -0 documents; 27 chunks embedded, 1 reused)" in out
    assert "  added: page-00.md, page-01.md, " in out and "page-09.md and 2 more\n" in out
    (corpus / "page-00.md").unlink()
    (corpus / "page-01.md").write_text("# Page 1\n\nNew text.\n", "utf-8")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "  changed: page-01.md\n  removed: page-00.md\n" in out and "added" not in out
    assert "(+0 ~1 -1 documents; 1 chunks embedded, 26 reused)" in out


def test_current_must_name_a_version_inside_the_index(fake_settings: Settings,
                                                      fake_encoder: FakeEncoder) -> None:
    index_dir = fake_settings.index_dir
    version = str(store.current_version(index_dir))
    # A complete, valid copy of the version outside the index folder.
    outside = index_dir.parent / "evil"
    shutil.copytree(index_dir / "versions" / version, outside)
    for pointer in ("../../evil", str(outside), "x/../../../evil", "..", ".staging-x"):
        (index_dir / store.CURRENT).write_text(pointer + "\n", "utf-8")
        with pytest.raises(store.IndexUnavailable, match="does not hold a version name"):
            store.current_version(index_dir)
        with pytest.raises(store.IndexUnavailable):
            load_index(index_dir)
        assert is_stale(fake_settings) is not None  # --if-stale rebuilds instead of trusting it
        assert not any(v.current for v in store.describe_versions(index_dir))  # --list
    # A build takes a bad CURRENT as none and replaces it.
    report = build_index(fake_settings, encoder=fake_encoder)
    assert report.published and store.current_version(index_dir) == report.version != version


def test_manifest_file_names_must_stay_in_the_version_folder(fake_settings: Settings) -> None:
    index_dir = fake_settings.index_dir
    folder = index_dir / "versions" / str(store.current_version(index_dir))
    manifest = json.loads((folder / store.MANIFEST).read_text("utf-8"))
    outside = index_dir.parent / "outside.bin"
    outside.write_bytes(b"x")
    manifest["files"]["../../../outside.bin"] = store.sha256_file(outside)
    (folder / store.MANIFEST).write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(store.IndexUnavailable, match="not a file of the version folder"):
        store.verify(folder)


@pytest.mark.parametrize("folder", ["../outside", "/tmp/outside", "encoders/../../outside",
                                    "encoders/a/b", "encoders/.hidden", "elsewhere/x", ""])
def test_the_encoder_folder_must_be_a_plain_name_under_encoders(tmp_path: Path,
                                                                folder: str) -> None:
    with pytest.raises(store.IndexUnavailable, match="outside"):
        store.encoder_files(tmp_path, {"folder": folder, "files": {"model.onnx": "0"}})
    with pytest.raises(store.IndexUnavailable, match="outside"):
        store.encoder_files(tmp_path, {"folder": "encoders/ok", "files": {"../x": "0"}})
    assert store.encoder_files(tmp_path, {"folder": "encoders/ok", "files": {"m": "1"}}) == (
        tmp_path / "encoders" / "ok", {"m": "1"})


def test_quick_verify_checks_big_files_by_size_and_samples(
        fake_settings: Settings, fake_encoder: FakeEncoder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "FULL_CHECK_BYTES", 1024)
    monkeypatch.setattr(store, "SAMPLE_BLOCKS", 2)
    monkeypatch.setattr(store, "SAMPLE_BYTES", 16)
    (fake_settings.corpus_dir / "new.txt").write_text("A new note.", "utf-8")
    build_index(fake_settings, encoder=fake_encoder)
    folder = fake_settings.index_dir / "versions" / str(
        store.current_version(fake_settings.index_dir))
    big = store.deferred(store.read_manifest(folder))
    assert "vectors.npy" in big and "manifest.json" not in big
    path = folder / "vectors.npy"
    original = path.read_bytes()
    middle = bytearray(original)
    middle[len(middle) // 2] ^= 0x01
    path.write_bytes(bytes(middle))
    store.verify(folder, quick=True)  # between the samples: only the full check sees it
    with pytest.raises(store.IndexUnavailable, match="vectors.npy does not match"):
        store.verify(folder)
    with pytest.raises(store.IndexUnavailable, match="vectors.npy does not match"):
        store.verify_files(folder, big)
    for damaged in (original[:-1] + bytes([original[-1] ^ 1]), original[:-8]):
        path.write_bytes(damaged)  # a sampled block, or the size
        with pytest.raises(store.IndexUnavailable, match="vectors.npy does not match"):
            store.verify(folder, quick=True)
