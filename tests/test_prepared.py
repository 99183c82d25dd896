"""service.index.prepared: the serving encoder saved for this machine and mapped from a file,
with the same vectors, made once, and never read from a folder someone else can write."""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from service.index import prepared
from service.index.encoder import ModelInfo, OnnxEncoder

QUESTIONS = ["What does a head of product do?", "Who owns the roadmap?", "x",
             "How is feedback collected from customers of the product team? " * 8]


def mapped_files() -> set[str]:
    """Files this process has mapped into memory."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return {line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6}


def test_the_prepared_encoder_maps_its_weights_and_gives_the_same_vectors(
        tmp_path: Path, real_encoder_dir: Path, real_model: ModelInfo) -> None:
    exported = OnnxEncoder(real_encoder_dir, real_model)
    served = OnnxEncoder(real_encoder_dir, real_model, prepared_in=tmp_path / "cache")
    assert exported.prepared is None
    assert served.prepared is not None and served.prepared.parent.parent == tmp_path / "cache"
    # The weights are read from the file, not copied: every process mapping it shares them.
    assert str(served.prepared.parent / prepared.WEIGHTS) in mapped_files()
    for question in QUESTIONS:
        np.testing.assert_allclose(served.encode_queries([question]),
                                   exported.encode_queries([question]), atol=1e-6)
    np.testing.assert_allclose(served.encode_queries(QUESTIONS),
                               exported.encode_queries(QUESTIONS), atol=1e-6)


def test_it_is_made_once_by_whoever_comes_first(tmp_path: Path, real_encoder_dir: Path) -> None:
    root = tmp_path / "cache"
    source = real_encoder_dir / "model.onnx"
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: prepared.prepared_model(source, root), range(3)))
    assert paths[0] is not None and paths == [paths[0]] * 3
    made = paths[0].stat().st_ino, (paths[0].parent / prepared.WEIGHTS).stat().st_ino
    # No half-made folder is left behind, and a later start uses the same files.
    assert [p.name for p in root.iterdir() if p.name != ".lock"] == [paths[0].parent.name]
    again = prepared.prepared_model(source, root)
    assert again == paths[0]
    assert (again.stat().st_ino, (again.parent / prepared.WEIGHTS).stat().st_ino) == made


def test_the_folder_names_the_model_runtime_and_cpu(
        tmp_path: Path, real_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = real_encoder_dir / "model.onnx"
    other = tmp_path / "other.onnx"
    other.write_bytes(source.read_bytes()[:-1] + b"\0")
    here = prepared.folder_for(source, tmp_path)
    assert prepared.folder_for(other, tmp_path) != here
    monkeypatch.setattr(prepared, "cpu_identity", lambda: "another-cpu")
    assert prepared.folder_for(source, tmp_path) != here


def test_a_folder_others_can_write_is_not_used(
        tmp_path: Path, real_encoder_dir: Path, real_model: ModelInfo,
        caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="service.index.prepared"):
        encoder = OnnxEncoder(real_encoder_dir, real_model, prepared_in=root)
    assert encoder.prepared is None and list(root.iterdir()) == []
    assert "writable by others" in caplog.text
    assert encoder.encode_queries(["Who owns the roadmap?"]).shape == (1, real_model.dimension)


def test_a_failure_to_prepare_falls_back_to_the_exported_model(
        tmp_path: Path, real_encoder_dir: Path, real_model: ModelInfo,
        caplog: pytest.LogCaptureFixture) -> None:
    # A folder whose ONNX file is not a model: preparing fails, the reason is logged, and
    # nothing is left in the cache.
    broken = tmp_path / "broken"
    shutil.copytree(real_encoder_dir, broken)
    source = broken / "model.onnx"
    source.write_bytes(b"not a model")
    root = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="service.index.prepared"):
        assert prepared.prepared_model(source, root) is None
    assert "cannot prepare" in caplog.text
    assert [p.name for p in root.iterdir()] == [".lock"]
    # A file where the folder should be is refused too.
    (tmp_path / "file").write_text("x")
    assert prepared.prepared_model(real_encoder_dir / "model.onnx", tmp_path / "file") is None
