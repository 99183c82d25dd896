"""The collections file: parsing, validation messages, relative folders, who may read."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app import StartupError, create_app
from service.catalog import (
    DEFAULT,
    CatalogError,
    Collection,
    is_collection_name,
    parse_catalog,
    read_catalog,
)
from service.http.identity import ANONYMOUS, Identity
from service.settings import Settings

GOOD = """
[collections.handbook]
title = "Employee handbook"
corpus_dir = "handbook"
index_dir = "/data/index/handbook"
allowed_origins = ["https://intranet.example.com/"]
access = "public"
questions = ["How do I request leave?"]

[collections.hr-only]
title = "HR notes"
corpus_dir = "hr"
index_dir = "index/hr"
access = ["hr", "managers"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "collections.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def test_a_valid_file_with_folders_relative_to_it(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    handbook, hr = parse_catalog(path)
    folder = path.parent.resolve()
    assert handbook == Collection(
        name="handbook", title="Employee handbook", corpus_dir=folder / "handbook",
        index_dir=Path("/data/index/handbook"),
        allowed_origins=("https://intranet.example.com",), groups=None,
        questions=("How do I request leave?",))
    assert hr.corpus_dir == folder / "hr" and hr.index_dir == folder / "index" / "hr"
    assert hr.groups == frozenset({"hr", "managers"}) and hr.allowed_origins == ()
    assert handbook.public and not hr.public


def test_who_may_read() -> None:
    open_one = Collection("a", "A", Path("c"), Path("i"))
    closed = Collection("b", "B", Path("c"), Path("j"), groups=frozenset({"hr", "managers"}))
    assert open_one.readable_by(ANONYMOUS) and open_one.readable_by(Identity("u", frozenset()))
    assert not closed.readable_by(ANONYMOUS)
    assert not closed.readable_by(Identity("u", frozenset({"sales"})))
    # Groups alone decide, not being signed in.
    assert not closed.readable_by(Identity("u"))
    assert closed.readable_by(Identity("u", frozenset({"sales", "managers"})))


def test_without_a_file_one_default_collection_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(corpus_dir=tmp_path / "c", index_dir=tmp_path / "i",
                        allowed_origins=["https://a.example"], demo_title="Ask it",
                        demo_questions=["Why?"])
    (only,) = read_catalog(settings)
    assert only == Collection(DEFAULT, "Ask it", tmp_path / "c", tmp_path / "i",
                              ("https://a.example",), None, ("Why?",))
    own = only.settings(settings)
    assert own.corpus_dir == tmp_path / "c" and own.demo_title == "Ask it"


@pytest.mark.parametrize(("text", "message"), [
    ("[collections.a\n", "not valid TOML"),
    ("title = 'x'\n", "unknown top-level key 'title'"),
    ("", "no collections"),
    ("[collections]\n", "no collections"),
    ('[collections.Bad]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n',
     "collections.Bad: a collection name is"),
    ('[collections.-x]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n',
     "collections.-x: a collection name is"),
    ("[collections]\na = 1\n", "collections.a: must be a table"),
    ('[collections.a]\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n',
     "collections.a.title: missing"),
    ('[collections.a]\ntitle="t"\nindex_dir="i"\naccess="public"\n',
     "collections.a.corpus_dir: missing"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\n',
     "collections.a.access: missing"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n'
     'acess="x"\n', "collections.a.acess: unknown key"),
    ('[collections.a]\ntitle=""\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n',
     "collections.a.title: must be a non-empty string"),
    ('[collections.a]\ntitle="t"\ncorpus_dir=3\nindex_dir="i"\naccess="public"\n',
     "collections.a.corpus_dir: must be a folder path"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="everyone"\n',
     "collections.a.access: \"public\" or a list of groups"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess=[]\n',
     "collections.a.access: an empty list of groups would let nobody read it"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess=["hr", 2]\n',
     "collections.a.access[1]: must be a non-empty string"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n'
     'allowed_origins=["intranet.example.com"]\n',
     "collections.a.allowed_origins[0]: 'intranet.example.com' is not an origin"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n'
     'allowed_origins="https://a.example"\n',
     "collections.a.allowed_origins: must be a list of strings"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n'
     f'questions={["q"] * 21}\n', "collections.a.questions: at most 20 entries"),
    ('[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\naccess="public"\n'
     '[collections.b]\ntitle="t"\ncorpus_dir="c"\nindex_dir="./i"\naccess="public"\n',
     "collections.b.index_dir: the same folder as collections.a.index_dir"),
])
def test_invalid_files_name_the_file_and_the_key(tmp_path: Path, text: str,
                                                 message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        parse_catalog(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_unreadable_or_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the collections file"):
        parse_catalog(tmp_path / "missing.toml")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 1_000_001)
    with pytest.raises(CatalogError, match="over 1000000 bytes"):
        parse_catalog(big)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[collections.a]")
    with pytest.raises(CatalogError, match="not UTF-8"):
        parse_catalog(binary)


def test_names() -> None:
    assert is_collection_name("hr") and is_collection_name("a-b_c9")
    assert is_collection_name("x" * 64) and not is_collection_name("x" * 65)
    for bad in ("", "HR", "a b", "a/b", "_a", "..", "é", "a.b"):
        assert not is_collection_name(bad), bad


def test_the_service_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '[collections.a]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\n')
    with pytest.raises(StartupError, match="collections.a.access: missing"):
        create_app(Settings(collections_file=path))


def test_the_service_names_the_collection_without_an_index(tmp_path: Path) -> None:
    path = _write(tmp_path, '[collections.notes]\ntitle="t"\ncorpus_dir="c"\nindex_dir="i"\n'
                            'access="public"\n')
    (path.parent / "c").mkdir()
    (path.parent / "c" / "a.txt").write_text("Some text.", "utf-8")
    with pytest.raises(StartupError) as caught:
        create_app(Settings(collections_file=path))
    assert str(caught.value) == (
        f"collection 'notes': no index in {path.parent.resolve() / 'i'}/: run "
        "`python scripts/build_index.py --collection notes` (or `make serve`)")
