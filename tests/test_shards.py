"""Embedding in shards and merging them: the merged version equals a one-shot build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scripts import build_index as cli
from service.index import store
from service.index.indexing import BuildError, build_index
from service.index.shards import parse_shard
from service.settings import Settings
from tests.conftest import SEED_CORPUS


def _corpus(folder: Path) -> Path:
    """The shipped corpus and enough notes of varied length for several encoder batches."""
    shutil.copytree(SEED_CORPUS, folder)
    for n in range(12):
        sentences = " ".join(f"Rule {n}.{k} says item {k} of list {n} is reviewed every "
                             f"{k + n} weeks by team {n % 3}." for k in range(1 + n * 3))
        (folder / f"note-{n}.md").write_text(f"# Note {n}\n\n{sentences}\n", "utf-8")
    return folder


def _index(folder: Path, encoders: Path) -> Path:
    shutil.copytree(encoders.parent, folder / "encoders")
    return folder


def _files(index: Path) -> dict[str, str]:
    manifest = store.read_manifest(index / "versions" / str(store.current_version(index)))
    return dict(manifest["files"])


def _run(*args: str | Path) -> int:
    return cli.main([str(a) for a in args])


def test_two_shards_merge_into_the_one_shot_version(tmp_path: Path,
                                                    real_encoder_dir: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    one = _index(tmp_path / "one-shot", real_encoder_dir)
    sharded = _index(tmp_path / "sharded", real_encoder_dir)
    shards = tmp_path / "shards"
    assert build_index(Settings(corpus_dir=corpus, index_dir=one, build_processes=1)).published
    common = ("--corpus", corpus, "--index", sharded, "--shards-dir", shards)
    assert _run(*common, "--shard", "0/2") == 0
    with pytest.raises(BuildError, match=r"shards 1/2 are missing"):
        build_index(Settings(corpus_dir=corpus, index_dir=sharded), shards=shards)
    assert _run(*common, "--shard", "1/2") == 0
    infos = [json.loads((shards / f"shard-{i}-of-2" / "shard.json").read_text()) for i in (0, 1)]
    assert all(info["chunks"] > 0 for info in infos)  # both shards did some of the work
    assert store.current_version(sharded) is None  # shards publish nothing
    assert _run(*common, "--merge-shards") == 0
    assert _files(sharded) == _files(one)  # every file of the version, byte for byte

    # An incremental build: the shards embed only the new document's chunks, on top of the
    # served version, and the merge still equals the one-shot build.
    (corpus / "late.md").write_text("# Late\n\nA late note about parking permits.\n", "utf-8")
    one_report = build_index(Settings(corpus_dir=corpus, index_dir=one, build_processes=1))
    for shard in ("0/2", "1/2"):
        assert _run(*common, "--shard", shard) == 0
    merged = build_index(Settings(corpus_dir=corpus, index_dir=sharded), shards=shards)
    assert (merged.embedded, merged.reused) == (one_report.embedded, one_report.reused)
    assert 0 < merged.embedded < merged.chunks
    assert _files(sharded) == _files(one)


def test_shards_made_for_another_corpus_are_refused(tmp_path: Path,
                                                    real_encoder_dir: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    index = _index(tmp_path / "index", real_encoder_dir)
    shards = tmp_path / "shards"
    common = ("--corpus", corpus, "--index", index, "--shards-dir", shards)
    for shard in ("0/2", "1/2"):
        assert _run(*common, "--shard", shard) == 0
    (corpus / "note-3.md").write_text("# Note 3\n\nRewritten after the shards ran.\n", "utf-8")
    with pytest.raises(BuildError, match=r"another corpus, index or settings"):
        build_index(Settings(corpus_dir=corpus, index_dir=index), shards=shards)
    assert store.current_version(index) is None
    assert _run(*common, "--merge-shards") == 1


def test_a_damaged_shard_is_refused(tmp_path: Path, real_encoder_dir: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    index = _index(tmp_path / "index", real_encoder_dir)
    shards = tmp_path / "shards"
    common = ("--corpus", corpus, "--index", index, "--shards-dir", shards)
    assert _run(*common, "--shard", "0/1") == 0
    vectors = shards / "shard-0-of-1" / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-5] ^= 0x10
    vectors.write_bytes(bytes(data))
    with pytest.raises(BuildError, match=r"vectors.npy does not match its checksum"):
        build_index(Settings(corpus_dir=corpus, index_dir=index), shards=shards)


@pytest.mark.parametrize("text", ["2/2", "1", "a/3", "-1/2", "0/0", "1/5000"])
def test_bad_shard_names_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_parse_shard() -> None:
    assert parse_shard("3/4") == (3, 4)
