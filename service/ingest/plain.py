"""Plain text (.txt): the decoded file is the document."""

from __future__ import annotations

import io

from service.ingest.document import Document, Extraction, ReadError, first_line


def decode(data: bytes) -> str:
    """Decode file bytes the way `Path.read_text(encoding="utf-8")` does, or raise ReadError."""
    if b"\x00" in data[:8192]:
        raise ReadError("binary file (contains NUL bytes)")
    try:
        # Universal newlines, like read_text: a citation checked with read_text must match.
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=None).read()
    except UnicodeDecodeError as exc:
        raise ReadError(f"not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    if not text.strip():
        raise ReadError("empty file")
    return text


def read(data: bytes, name: str) -> Extraction:
    text = decode(data)
    return [Document(name, first_line(text) or name, text)], []
