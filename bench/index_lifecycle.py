"""Index lifecycle figures: full, unchanged and one-document rebuilds (default corpus, SciFact)."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.index.encoder import OnnxEncoder, describe_model, export_onnx  # noqa: E402
from service.index.indexing import BuildReport, build_index, encoder_folder  # noqa: E402
from service.qa.retrieval import load_index  # noqa: E402
from service.settings import Settings  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact" / "corpus.jsonl.gz"
# A record in the middle of the file, so the change is not at either edge of anything.
CHANGED_RECORD = 2591


def _timed_build(settings: Settings, *, force: bool = False) -> tuple[float, BuildReport]:
    started = time.perf_counter()
    report = build_index(settings, force=force, progress=lambda _: None)
    return time.perf_counter() - started, report


def _lifecycle(name: str, corpus_dir: Path, work: Path, encoders: Path,
               change: Any) -> dict[str, Any]:
    """Full build, no-op check, forced rebuild of the unchanged corpus, one changed document."""
    index_dir = work / f"{name}-index"
    # The exported encoder is shared, as in a real index folder after the first build: a full
    # build here measures reading, splitting and embedding, not the one-off ONNX export.
    shutil.copytree(encoders, index_dir / "encoders")
    settings = Settings(corpus_dir=corpus_dir, index_dir=index_dir)
    full_s, full = _timed_build(settings)
    noop_s, _ = _timed_build(settings)
    same_s, same = _timed_build(settings, force=True)
    doc_id = change(corpus_dir)
    one_s, one = _timed_build(settings)
    doc_chunks = sum(1 for c in load_index(index_dir).chunks if c.doc_id == doc_id)
    return {
        "documents": full.documents, "chunks": full.chunks,
        "full_build_s": round(full_s, 2), "full_embedded": full.embedded,
        "noop_check_s": round(noop_s, 3),
        "unchanged_rebuild_s": round(same_s, 2), "unchanged_embedded": same.embedded,
        "unchanged_reused": same.reused,
        "unchanged_pct_of_full": round(100 * same_s / full_s, 1),
        "one_doc_id": doc_id, "one_doc_changed": one.changed,
        "one_doc_rebuild_s": round(one_s, 2), "one_doc_embedded": one.embedded,
        "one_doc_chunks": doc_chunks, "one_doc_reused": one.reused,
    }


def _append_paragraph(corpus_dir: Path) -> str:
    path = corpus_dir / "head-of-product.txt"
    text = path.read_text("utf-8")
    path.write_text(text + "\nA closing note added for the benchmark.\n", "utf-8")
    return "head-of-product.txt"


def _rewrite_record(corpus_dir: Path) -> str:
    path = corpus_dir / "corpus.jsonl"
    lines = path.read_text("utf-8").splitlines()
    record = json.loads(lines[CHANGED_RECORD])
    record["text"] = "This abstract was revised for the benchmark. " + record["text"]
    lines[CHANGED_RECORD] = json.dumps(record, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return str(record["_id"])


def main() -> dict[str, Any]:
    """Run every measurement in temporary folders, print the figures and return them."""
    settings = Settings()
    model = describe_model(settings.model_dir)
    with tempfile.TemporaryDirectory(prefix="index-lifecycle-") as tmp:
        work = Path(tmp)
        encoders = work / "encoders"
        started = time.perf_counter()
        export_onnx(model, encoder_folder(work, OnnxEncoder.kind, model))
        export_s = time.perf_counter() - started

        default_corpus = work / "default-corpus"
        shutil.copytree(ROOT / "corpus", default_corpus)
        scifact_corpus = work / "scifact-corpus"
        scifact_corpus.mkdir()
        with gzip.open(SCIFACT, "rb") as src, (scifact_corpus / "corpus.jsonl").open("wb") as dst:
            shutil.copyfileobj(src, dst)

        figures: dict[str, Any] = {"encoder": settings.encoder,
                                   "build_threads": settings.build_threads,
                                   "onnx_export_s": round(export_s, 1)}
        figures["default"] = _lifecycle("default", default_corpus, work, encoders,
                                        _append_paragraph)
        figures["scifact"] = _lifecycle("scifact", scifact_corpus, work, encoders,
                                        _rewrite_record)
    _print(figures)
    return figures


def _print(figures: dict[str, Any]) -> None:
    print(f"index lifecycle ({figures['encoder']} encoder, {figures['build_threads']} threads; "
          f"one-off ONNX export {figures['onnx_export_s']} s)")
    for name in ("default", "scifact"):
        f = figures[name]
        print(f"  {name}: {f['documents']} documents, {f['chunks']} chunks")
        print(f"    full build              {f['full_build_s']:8.2f} s  "
              f"({f['full_embedded']} chunks embedded)")
        print(f"    unchanged, no-op check  {f['noop_check_s']:8.3f} s")
        print(f"    unchanged, --force      {f['unchanged_rebuild_s']:8.2f} s  "
              f"({f['unchanged_pct_of_full']}% of full; {f['unchanged_embedded']} embedded, "
              f"{f['unchanged_reused']} reused)")
        print(f"    one document changed    {f['one_doc_rebuild_s']:8.2f} s  "
              f"({f['one_doc_id']}: {f['one_doc_embedded']} chunks embedded of its "
              f"{f['one_doc_chunks']}; {f['one_doc_reused']} reused; "
              f"changed={f['one_doc_changed']})")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
