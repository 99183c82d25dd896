"""HTTP routes for asking, chatting, reading documents and checking health."""

from __future__ import annotations

import time
import unicodedata
from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, field_validator

from service.catalog import DEFAULT
from service.http.identity import Identity, IdentityDep
from service.http.library import Library, NoSuchCollection, Shelf
from service.http.limits import ErrorBody
from service.http.sharedlimits import mode_of
from service.ingest.registry import format_for
from service.qa.answer import Answer
from service.qa.conversation import standalone_query
from service.qa.engine import Engine, NotReady, Snapshot
from service.qa.sources import InvalidSource, SourceNotFound, SourceTooLarge, read_original
from service.usage.recorder import Recorder

MAX_QUESTION_CHARS = 1000
MAX_MESSAGE_CHARS = 4000


def clean_text(value: str, limit: int, what: str) -> str:
    """NFKC-normalized, trimmed text; refuses control characters and lone surrogates."""
    for ch in value:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            raise ValueError(f"{what} contains an invalid character (lone surrogate)")
        if cat == "Cc" and ch not in "\t\n":
            raise ValueError(f"{what} contains a control character (U+{ord(ch):04X})")
    text = unicodedata.normalize("NFKC", value).strip()
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text)} characters; the limit is {limit}")
    return text


TopK = Annotated[int, Field(ge=1, le=50, strict=True, description="How many passages to cite.")]


class AskRequest(BaseModel):
    question: str = Field(description="1–1000 characters after NFKC normalization and trimming.")
    top_k: TopK = 3

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        return clean_text(value, MAX_QUESTION_CHARS, "question")


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        return clean_text(value, MAX_MESSAGE_CHARS, "message content")


class ChatRequest(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=20)
    top_k: TopK = 3

    @field_validator("messages")
    @classmethod
    def _last_is_question(cls, value: list[Message]) -> list[Message]:
        if value[-1].role != "user":
            raise ValueError("the last message must be the user's question")
        if len(value[-1].content) > MAX_QUESTION_CHARS:
            raise ValueError(f"the question is over {MAX_QUESTION_CHARS} characters")
        return value


class Highlight(BaseModel):
    start: int
    end: int


class CitationOut(BaseModel):
    n: int
    doc_id: str
    title: str
    heading: str
    start: int
    end: int
    text: str
    score: float
    highlights: list[Highlight]
    page: int | None = Field(default=None, description=(
        "The 1-based page (or slide) of a PDF or PowerPoint original where the passage "
        "starts; absent for other formats."))


class AnswerPart(BaseModel):
    text: str
    citation: int | None = Field(description="The `n` of the citation this quote comes from.")


class AskResponse(BaseModel):
    question: str
    answer: str
    answer_parts: list[AnswerPart] = Field(description=(
        "The answer as quotes and the citation each comes from, in order, joined by spaces "
        "in `answer`. Place markers from these, not by searching `answer` for [n]: quoted "
        "text may contain brackets."))
    answered: bool
    confidence: float
    citations: list[CitationOut]
    index_version: str
    took_ms: float
    answer_id: str | None = Field(description="Names this answer in POST /api/feedback; null "
                                              "when the service records nothing.")


class ChatResponse(AskResponse):
    query: str = Field(description="The standalone question retrieval used.")


class DocumentOut(BaseModel):
    doc_id: str
    title: str
    text: str
    index_version: str


class StoreStatus(BaseModel):
    """The answer store as this process sees it; `error` is the kind of the last failure."""

    status: Literal["ok", "starting", "down", "failing"]
    backend: str
    queued: int
    written: int
    dropped: int
    error: str | None


class CollectionOut(BaseModel):
    """A collection the caller may read."""

    name: str
    title: str
    ready: bool
    index_version: str | None
    documents: int
    chunks: int
    questions: list[str] = Field(description="Example questions for a demo page.")


class Ready(BaseModel):
    status: Literal["ready"]
    index_version: str
    documents: int
    chunks: int
    model: str
    encoder: str
    built_at: str
    # "per-process", "shared" (through Redis), or "per-process (Redis unreachable)".
    rate_limits: str = "per-process"
    store: StoreStatus | None = Field(default=None, description="The answer store; null when "
                                                                "recording is off.")
    collections: list[CollectionOut] = Field(default=[], description=(
        "Each collection the caller may read; the figures above are `default`'s (or the "
        "first collection's)."))


def _served(request: Request, shelf: Shelf) -> Shelf:
    # Read by the metrics and the access log: only ever set once the caller may read it.
    request.state.collection = shelf.name
    return shelf


# Dependencies are coroutines: a plain `def` one would cost a worker-thread hop per request.
async def get_shelf(name: str, request: Request, identity: IdentityDep) -> Shelf:
    """The collection in the path, if this caller may read it; the same 404 otherwise."""
    library: Library = request.app.state.library
    try:
        return _served(request, library.get(name, identity))
    except NoSuchCollection as exc:
        raise HTTPException(404, str(exc)) from None


async def get_default_shelf(request: Request, identity: IdentityDep) -> Shelf:
    """The `default` collection, for the routes that predate collections."""
    return await get_shelf(DEFAULT, request, identity)


def _snapshot(shelf: Shelf) -> Snapshot:
    try:
        return shelf.engine.snapshot
    except NotReady as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "2"}) from exc


async def get_recorder(request: Request) -> Recorder | None:
    recorder: Recorder | None = request.app.state.recorder
    return recorder


ShelfDep = Annotated[Shelf, Depends(get_shelf)]
DefaultShelfDep = Annotated[Shelf, Depends(get_default_shelf)]
RecorderDep = Annotated[Recorder | None, Depends(get_recorder)]


def _response(question: str, answer: Answer, snapshot: Snapshot, started: float,
              recorder: Recorder | None, route: str, collection: str, identity: Identity,
              query: str | None = None) -> Response:
    """The AskResponse (ChatResponse with `query`) as compact JSON, written directly: the
    answer is valid by construction, so the response model's validation pass is skipped.
    The answer is queued for the store here (never waiting on it), under the id returned."""
    took_ms = round((time.perf_counter() - started) * 1000, 2)
    answer_id = None if recorder is None else recorder.record(
        route, snapshot.version, answer, question if query is None else query, took_ms,
        identity.user, collection)
    body: dict[str, object] = {
        "question": question, "answer": answer.text,
        "answer_parts": [{"text": t, "citation": n} for t, n in answer.parts],
        "answered": answer.answered,
        "confidence": answer.confidence,
        "citations": [{"n": c.n, "doc_id": c.doc_id, "title": c.title, "heading": c.heading,
                       "start": c.start, "end": c.end, "text": c.text, "score": c.score,
                       "highlights": [{"start": s, "end": e} for s, e in c.highlights],
                       **({"page": c.page} if c.page is not None else {})}
                      for c in answer.citations],
        "index_version": snapshot.version,
        "took_ms": took_ms,
        "answer_id": answer_id,
    }
    if query is not None:
        body["query"] = query
    return Response(orjson.dumps(body), media_type="application/json")


router = APIRouter()
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": (
    "No such collection, or one the caller may not read (the same answer for both).")}}


async def _answer(engine: Engine, snapshot: Snapshot, question: str, k: int) -> Answer:
    # A repeated question is answered from the cache right here on the event loop; computing
    # one goes to a worker thread, so the loop stays free and the answering limits count it.
    cached = engine.cached(snapshot, question, k)
    if cached is not None:
        return cached
    return await run_in_threadpool(engine.compute, snapshot, question, k)


async def _ask(body: AskRequest, shelf: Shelf, recorder: Recorder | None,
               identity: Identity) -> Response:
    started = time.perf_counter()
    snapshot = _snapshot(shelf)
    answer = await _answer(shelf.engine, snapshot, body.question, body.top_k)
    return _response(body.question, answer, snapshot, started, recorder, "ask", shelf.name,
                     identity)


async def _chat(body: ChatRequest, shelf: Shelf, recorder: Recorder | None,
                identity: Identity) -> Response:
    started = time.perf_counter()
    snapshot = _snapshot(shelf)
    turns = [m.content for m in body.messages if m.role == "user"]
    # One turn is its own query; reading earlier turns is linear but up to 80,000 characters,
    # so it runs in a worker thread, where the answer deadline still applies.
    query = (await run_in_threadpool(standalone_query, turns) if len(turns) > 1
             else turns[0].strip())
    answer = await _answer(shelf.engine, snapshot, query, body.top_k)
    return _response(body.messages[-1].content, answer, snapshot, started, recorder, "chat",
                     shelf.name, identity, query)


@router.post("/api/ask", response_model=AskResponse, tags=["questions"])
async def ask(body: AskRequest, shelf: DefaultShelfDep, recorder: RecorderDep,
              identity: IdentityDep) -> Response:
    """Answer one question with cited passages (from the `default` collection)."""
    return await _ask(body, shelf, recorder, identity)


@router.post("/api/chat", response_model=ChatResponse, tags=["questions"])
async def chat(body: ChatRequest, shelf: DefaultShelfDep, recorder: RecorderDep,
               identity: IdentityDep) -> Response:
    """Answer the last user message, reading earlier turns to resolve follow-ups (from the
    `default` collection)."""
    return await _chat(body, shelf, recorder, identity)


@router.post("/api/collections/{name}/ask", response_model=AskResponse, tags=["collections"],
             responses=NOT_FOUND)
async def ask_collection(body: AskRequest, shelf: ShelfDep, recorder: RecorderDep,
                         identity: IdentityDep) -> Response:
    """Answer one question with cited passages from this collection."""
    return await _ask(body, shelf, recorder, identity)


@router.post("/api/collections/{name}/chat", response_model=ChatResponse, tags=["collections"],
             responses=NOT_FOUND)
async def chat_collection(body: ChatRequest, shelf: ShelfDep, recorder: RecorderDep,
                          identity: IdentityDep) -> Response:
    """Answer the last user message from this collection, reading earlier turns."""
    return await _chat(body, shelf, recorder, identity)


# Originals never run script on this origin: everything but a PDF is sandboxed (scripts,
# forms, plugins and same-origin access off) and everything but text and PDF is a download.
# A PDF is shown inline without the sandbox, which would keep browsers' PDF viewers from
# rendering it; their viewers do not run a PDF's scripts with this origin's rights.
SOURCE_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
SOURCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}},
          "description": "The original file, as it is in the corpus."},
    404: {"model": ErrorBody, "description": "No such document or file."},
    413: {"model": ErrorBody, "description": "Over QA_MAX_FILE_BYTES."}}


def _source(doc_id: str, shelf: Shelf, max_bytes: int) -> Response:
    snapshot = _snapshot(shelf)
    doc = snapshot.index.documents.get(doc_id)
    if doc is None and f"{doc_id}/source" in snapshot.index.documents:
        # A document whose own id ends in "/source" keeps its plain document route.
        return Response(_document(f"{doc_id}/source", shelf).model_dump_json(),
                        media_type="application/json")
    if doc is None:
        raise HTTPException(404, f"no document {doc_id!r} in index {snapshot.version}")
    rel = doc.source or doc.id
    fmt = format_for(rel)
    try:
        data = read_original(shelf.collection.corpus_dir, rel, max_bytes)
    except SourceTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    except (SourceNotFound, InvalidSource) as exc:
        raise HTTPException(404, str(exc)) from exc
    name = rel.rsplit("/", 1)[-1]
    inline = fmt is not None and fmt.inline
    headers = {
        "Content-Disposition": f"{'inline' if inline else 'attachment'}; "
                               f"filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
    }
    if fmt is None or fmt.name != "pdf":
        headers["Content-Security-Policy"] = SOURCE_CSP
    media_type = fmt.media_type if fmt else "application/octet-stream"
    return Response(data, media_type=media_type, headers=headers)


def _document(doc_id: str, shelf: Shelf) -> DocumentOut:
    snapshot = _snapshot(shelf)
    doc = snapshot.index.documents.get(doc_id)
    if doc is None:
        raise HTTPException(404, f"no document {doc_id!r} in index {snapshot.version}")
    return DocumentOut(doc_id=doc.id, title=doc.title, text=doc.text,
                       index_version=snapshot.version)


@router.get("/api/documents/{doc_id:path}/source", tags=["documents"],
            response_class=Response, responses=SOURCE_RESPONSES)
def document_source(doc_id: str, shelf: DefaultShelfDep, request: Request) -> Response:
    """The original file a document was read from (a PDF opens at `#page=N`)."""
    return _source(doc_id, shelf, request.app.state.settings.max_file_bytes)


@router.get("/api/documents/{doc_id:path}", response_model=DocumentOut, tags=["documents"],
            responses={404: {"model": ErrorBody, "description": "No such document."}})
def document(doc_id: str, shelf: DefaultShelfDep) -> DocumentOut:
    """The full text a citation's offsets point into."""
    return _document(doc_id, shelf)


@router.get("/api/collections/{name}/documents/{doc_id:path}/source", tags=["collections"],
            response_class=Response, responses=SOURCE_RESPONSES)
def collection_document_source(doc_id: str, shelf: ShelfDep, request: Request) -> Response:
    """The original file a document of this collection was read from."""
    return _source(doc_id, shelf, request.app.state.settings.max_file_bytes)


@router.get("/api/collections/{name}/documents/{doc_id:path}", response_model=DocumentOut,
            tags=["collections"], responses=NOT_FOUND)
def collection_document(doc_id: str, shelf: ShelfDep) -> DocumentOut:
    """The full text of a document of this collection."""
    return _document(doc_id, shelf)


def _describe(shelf: Shelf) -> CollectionOut:
    try:
        snapshot: Snapshot | None = shelf.engine.snapshot
    except NotReady:
        snapshot = None
    return CollectionOut(
        name=shelf.name, title=shelf.collection.title, ready=snapshot is not None,
        index_version=snapshot.version if snapshot else None,
        documents=len(snapshot.index.documents) if snapshot else 0,
        chunks=len(snapshot.index.chunks) if snapshot else 0,
        questions=list(shelf.collection.questions))


@router.get("/api/collections", response_model=list[CollectionOut], tags=["collections"])
async def collections(request: Request, identity: IdentityDep) -> list[CollectionOut]:
    """The collections the caller may read."""
    library: Library = request.app.state.library
    return [_describe(shelf) for shelf in library.readable(identity)]


@router.get("/api/collections/{name}", response_model=CollectionOut, tags=["collections"],
            responses=NOT_FOUND)
async def collection(shelf: ShelfDep) -> CollectionOut:
    """One collection the caller may read (the widget reads its title here)."""
    return _describe(shelf)


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, tags=["health"],
            responses={503: {"model": ErrorBody, "description": "A collection is not loaded."}})
def readyz(request: Request, recorder: RecorderDep, identity: IdentityDep) -> Ready:
    """Readiness: every collection has an index version loaded. Rate limits falling back to
    per-process ones (Redis unreachable) and the answer store's state are reported, not
    reasons to stop answering: answers depend on neither."""
    library: Library = request.app.state.library
    waiting = sum(1 for shelf in library if not shelf.engine.ready)
    if waiting:
        # Counted, not named: a collection the caller may not read stays unnamed here too.
        raise HTTPException(503, f"{waiting} of {len(library)} collections not loaded yet",
                            headers={"Retry-After": "2"})
    readable = library.readable(identity)
    # The service-wide figures are those of `default` (or the first collection), unless the
    # caller may not read it: then of the first one it may read, or none.
    primary = library.primary
    shown = primary if primary in readable else next(iter(readable), None)
    snapshot = (shown or primary).engine.snapshot
    manifest = snapshot.index.manifest
    store = None if recorder is None else StoreStatus(
        status=recorder.status(), backend=recorder.backend, queued=recorder.queued,
        written=recorder.written, dropped=recorder.dropped_full + recorder.dropped_error,
        # The kind of failure only: the message may name hosts (the log has all of it).
        error=recorder.error and recorder.error.partition(":")[0])
    return Ready(status="ready", index_version=snapshot.version if shown else "",
                 documents=len(snapshot.index.documents) if shown else 0,
                 chunks=len(snapshot.index.chunks) if shown else 0,
                 model=manifest["model"]["name"], encoder=manifest["encoder"]["kind"],
                 built_at=manifest["built_at"] if shown else "",
                 rate_limits=mode_of(getattr(request.app.state, "limiters", [])), store=store,
                 collections=[_describe(shelf) for shelf in readable])
