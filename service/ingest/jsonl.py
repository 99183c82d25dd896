"""JSON Lines (.jsonl): one document per record, `id` or `_id`, `text`, optional `title`."""

from __future__ import annotations

import json

from service.ingest.document import Document, Extraction, Problem
from service.ingest.plain import decode


def read(data: bytes, name: str) -> Extraction:
    text = decode(data)
    docs: list[Document] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(where, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(where, "a record must be a JSON object"))
            continue
        raw_id = record.get("_id", record.get("id"))
        body = record.get("text")
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or str(raw_id) == "":
            problems.append(Problem(where, 'record has no "_id" or "id"'))
            continue
        if not isinstance(body, str) or not body.strip():
            problems.append(Problem(where, 'record has no non-empty "text"'))
            continue
        title = record.get("title")
        docs.append(Document(str(raw_id), title.strip() if isinstance(title, str) else "", body))
    if not docs and not problems:
        problems.append(Problem(name, "no records"))
    return docs, problems
