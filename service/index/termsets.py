"""Each passage's words and each sentence's lexical terms as id arrays, made once per build."""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from service.index import lexical, store
from service.ingest.chunking import Chunk
from service.ingest.corpus import Document

# The vocabulary, then the arrays as separate .npy files so that loading maps them instead of
# copying (versions before had one PACKED .npz).
FILES = ("term_sets.json", "term_words_ptr.npy", "term_words.npy", "term_terms_ptr.npy",
         "term_terms.npy")
ARRAYS, PACKED = FILES[1:], "term_sets.npz"
WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class TermSets:
    """Many small sets of strings stored as id arrays (CSR): a few bytes per member where
    Python sets of strings would cost kilobytes per passage on a large corpus."""

    ids: dict[str, int]
    ptr: np.ndarray  # int64, one more than the number of sets
    members: np.ndarray  # int32 ids

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def get(self, i: int) -> frozenset[int]:
        return frozenset(self.members[self.ptr[i] : self.ptr[i + 1]].tolist())

    def run(self, lo: int, hi: int) -> list[frozenset[int]]:
        """Sets lo to hi - 1, as `get` gives them, read with one slice of the members."""
        bounds = self.ptr[lo : hi + 1].tolist()
        start = bounds[0] if bounds else 0
        members = self.members[start : bounds[-1] if bounds else 0].tolist()
        return [frozenset(members[a - start : b - start]) for a, b in pairwise(bounds)]

    def id_of(self, term: str) -> int:
        """The id of `term`, or -1 (a member of no set)."""
        return self.ids.get(term, -1)


def term_sets(groups: Iterable[Iterable[str]]) -> TermSets:
    ids: dict[str, int] = {}
    # Flat C arrays, not lists: a million passages' members as Python ints take gigabytes.
    ptr, members = array("q", [0]), array("i")
    for group in groups:
        members.extend(sorted({ids.setdefault(t, len(ids)) for t in group}))
        ptr.append(len(members))
    return TermSets(ids, np.array(ptr, dtype=np.int64), np.array(members, dtype=np.int32))


def passage_words(documents: Mapping[str, Document], chunks: Sequence[Chunk]) -> TermSets:
    """Lower-cased words of each passage: what near-duplicate checks compare."""
    return term_sets(WORDS.findall(documents[c.doc_id].text[c.start : c.end].lower())
                     for c in chunks)


def sentence_terms(documents: Mapping[str, Document], chunks: Sequence[Chunk]) -> TermSets:
    """`lexical.terms` of every sentence, in chunk then sentence order."""
    return term_sets(lexical.terms(documents[c.doc_id].text[s:e])
                     for c in chunks for s, e in c.sentences)


def save(folder: Path, words: TermSets, terms: TermSets) -> None:
    vocab = {"words": list(words.ids), "terms": list(terms.ids)}  # dicts keep id order
    (folder / FILES[0]).write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    for name, values in zip(ARRAYS, (words.ptr, words.members, terms.ptr, terms.members),
                            strict=True):
        np.save(folder / name, values, allow_pickle=False)


def stored(folder: Path) -> bool:
    """Whether the version holds its term sets (versions from before them do not)."""
    return (folder / FILES[0]).is_file()


def load(folder: Path, documents: Mapping[str, Document],
         chunks: Sequence[Chunk]) -> tuple[TermSets, TermSets]:
    """The stored sets (memory-mapped); computed here for versions built before they were
    stored, from `documents` (only needed then)."""
    if not stored(folder):
        return passage_words(documents, chunks), sentence_terms(documents, chunks)
    vocab = json.loads((folder / FILES[0]).read_text("utf-8"))
    if (folder / ARRAYS[0]).is_file():
        # Mapped read-only, as plain ndarray views (np.memmap's indexing is slow Python).
        arrays = [np.load(folder / name, allow_pickle=False, mmap_mode="r").view(np.ndarray)
                  for name in ARRAYS]
    else:
        with np.load(folder / PACKED, allow_pickle=False) as packed:
            arrays = [packed[k] for k in ("words_ptr", "words", "terms_ptr", "terms")]
    words = TermSets({w: i for i, w in enumerate(vocab["words"])}, arrays[0], arrays[1])
    terms = TermSets({t: i for i, t in enumerate(vocab["terms"])}, arrays[2], arrays[3])
    for sets in (words, terms):
        # Members are checked against the vocabulary where that is cheap. A big array is left
        # to its checksum (sampled now, in full once served): scanning it would make hundreds
        # of megabytes resident in every process at start (a million passages: 400 MB), and a
        # member outside the vocabulary only never matches a question's term.
        if sets.ptr[-1] != len(sets.members) or (
                0 < sets.members.nbytes <= store.FULL_CHECK_BYTES
                and int(sets.members.max()) >= len(sets.ids)):
            raise ValueError("term sets do not match their vocabulary")
    return words, terms
