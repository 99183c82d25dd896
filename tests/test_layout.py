"""How a version stores documents and chunks: arrays and offsets read back lazily, and the
layout before it still read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.index import acronyms, layout
from service.ingest import markup
from service.ingest.chunking import Chunk
from service.ingest.corpus import Document

DOCS = [
    Document("a.md", "Á title", "# Head\n\nFirst line.\nSecond — line.\n", source="a.md"),
    Document("b/c.pdf", "Paged", "Page one text. Page two text.", (0, 15), source="b/c.pdf"),
    Document("rec-1", "", "Paid time off (PTO) is earned monthly. PTO rolls over.",
             source="x.jsonl"),
]
CHUNKS = [
    Chunk("a.md", 8, 20, "Head", ((8, 19),)),
    Chunk("a.md", 20, 35, "Head", ((20, 35),)),
    Chunk("b/c.pdf", 0, 29, "", ((0, 14), (15, 29))),
    Chunk("rec-1", 0, 54, "", ((0, 38), (39, 54))),
]
KEYS = [f"{i:032x}" for i in range(len(CHUNKS))]


def _write(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    layout.write_documents(folder, DOCS)
    layout.write_chunks(folder, CHUNKS, {d.id: i for i, d in enumerate(DOCS)}, KEYS)
    return folder


def test_documents_and_chunks_read_back_as_written(tmp_path: Path) -> None:
    folder = _write(tmp_path / "v")
    documents = layout.read_documents(folder)
    assert list(documents) == [d.id for d in DOCS] and len(documents) == 3
    assert [documents[d.id] for d in DOCS] == DOCS
    assert "rec-1" in documents and "nope" not in documents
    assert documents.get("nope") is None
    table = layout.read_chunks(folder, documents.ids)
    assert list(table) == CHUNKS and len(table) == 4
    assert table[-1] == CHUNKS[-1] and table[1:3] == CHUNKS[1:3]
    with pytest.raises(IndexError):
        table[4]
    assert layout.keys_of(table) == KEYS
    assert table.sentence_ptr.tolist() == [0, 1, 2, 4, 6]
    views = layout.Views(documents)
    assert [views[d.id] for d in DOCS] == [markup.view_of(d.id, d.text) for d in DOCS]
    assert len(views) == 3 and "a.md" in views


def test_the_layout_before_offsets_and_arrays_is_read_the_same(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    with (folder / layout.DOCUMENTS).open("w", encoding="utf-8") as fh:
        for d in DOCS:
            record: dict[str, object] = {"id": d.id, "title": d.title, "text": d.text,
                                         "source": d.source}
            if d.pages:
                record["pages"] = list(d.pages)
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    rows = [[[d.id for d in DOCS].index(c.doc_id), c.start, c.end, c.heading,
             [list(s) for s in c.sentences], key] for c, key in zip(CHUNKS, KEYS, strict=True)]
    (folder / layout.CHUNKS).write_text(json.dumps({"chunks": rows}), "utf-8")
    documents = layout.read_documents(folder)
    assert [documents[d.id] for d in DOCS] == DOCS
    table = layout.read_chunks(folder, documents.ids)
    assert list(table) == CHUNKS and layout.keys_of(table) == KEYS


def test_inconsistent_files_are_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "v")
    offsets = np.load(folder / layout.DOCUMENT_OFFSETS)
    np.save(folder / layout.DOCUMENT_OFFSETS, offsets[:-1])
    with pytest.raises(ValueError, match="offsets"):
        layout.read_documents(folder)
    folder = _write(tmp_path / "w")
    np.save(folder / layout.CHUNK_DOCS, np.array([0, 0, 1, 7], dtype=np.int32))
    with pytest.raises(ValueError, match="past the documents"):
        layout.read_chunks(folder, layout.read_documents(folder).ids)
    folder = _write(tmp_path / "x")
    np.save(folder / layout.CHUNK_SENTENCE_PTR, np.array([0, 1, 2, 4, 9], dtype=np.int64))
    with pytest.raises(ValueError, match="do not match"):
        layout.read_chunks(folder, layout.read_documents(folder).ids)


def test_abbreviations_are_stored_whole_and_learned_when_absent(tmp_path: Path) -> None:
    folder = _write(tmp_path / "v")
    views = layout.Views(layout.read_documents(folder))
    learned = acronyms.learn(views.values())
    assert learned.expansions  # the corpus defines PTO
    assert layout.read_acronyms(folder, views) == learned  # not stored: learned now
    layout.write_acronyms(folder, learned)
    (folder / layout.DOCUMENTS).write_text("", "utf-8")  # stored: the texts are not read
    assert layout.read_acronyms(folder, {}) == learned
    (folder / layout.ACRONYMS).write_text(json.dumps({"expansions": {}}), "utf-8")
    assert layout.read_acronyms(folder, views) == learned  # other fields: learned again


@pytest.mark.parametrize("map_up_to", [0, layout.MAP_UP_TO], ids=["read", "mapped"])
def test_rows_read_what_the_array_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        map_up_to: int) -> None:
    # Read by positional reads, and (a small file) mapped: the same rows either way.
    monkeypatch.setattr(layout, "MAP_UP_TO", map_up_to)
    values = np.arange(60, dtype=np.float16).reshape(12, 5)
    np.save(tmp_path / "a.npy", values)
    rows = layout.Rows(tmp_path / "a.npy")
    assert (rows._mapped is not None) == bool(map_up_to)
    assert rows.shape == (12, 5) and len(rows) == 12 and rows.dtype == np.float16
    assert np.array_equal(rows[3], values[3]) and np.array_equal(rows[-1], values[-1])
    assert np.array_equal(rows[2:7], values[2:7]) and rows[7:2].shape == (0, 5)
    assert np.array_equal(rows[np.array([9, 0, 9, 4])], values[[9, 0, 9, 4]])
    assert np.array_equal(rows.spans(np.array([1, 8, 5]), np.array([3, 8, 7])),
                          values[[1, 2, 5, 6]])
    assert np.array_equal(np.asarray(rows), values)
    with pytest.raises(IndexError):
        rows[np.array([12])]
    (tmp_path / "b.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-10])
    with pytest.raises(ValueError, match="not as long"):
        layout.Rows(tmp_path / "b.npy")
