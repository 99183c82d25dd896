"""HTTP routes for readers' votes on answers and for the admins' insights (JSON, CSV, page)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from service.http.admin import Admin, lockout
from service.http.api import RecorderDep, clean_text
from service.http.auth import Authenticator, BadProxyHeaders
from service.http.bearer import bearer_token
from service.http.identity import ANONYMOUS, Identity
from service.http.insights_page import render_login, render_page
from service.http.jwks import InvalidToken, KeysUnavailable
from service.http.library import Library
from service.http.limits import ErrorBody
from service.http.ratelimit import retry_after_header
from service.http.web import load_asset, serve
from service.qa.engine import Engine, NotReady
from service.usage import insights
from service.usage.recorder import Recorder
from service.usage.records import describe

log = logging.getLogger(__name__)

MAX_COMMENT_CHARS = 500
# An answer recorded by this or another worker may still be in a writer's queue when its vote
# arrives: look again for this long before calling the id unknown.
FIND_ANSWER_FOR = 1.0
SESSION_COOKIE = "qa_admin"
SESSION_SECONDS = 8 * 3600
# The insights page runs no script at all; its only form posts go back to this origin.
ADMIN_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
             "base-uri 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": ADMIN_CSP, "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


class FeedbackIn(BaseModel):
    answer_id: str = Field(min_length=32, max_length=32,
                           description="The `answer_id` of an /api/ask or /api/chat response.")
    helpful: bool = Field(strict=True)
    comment: str | None = Field(default=None, description="Optional, at most 500 characters.")

    @field_validator("answer_id")
    @classmethod
    def _hex(cls, value: str) -> str:
        if value.strip("0123456789abcdef"):
            raise ValueError("answer_id is 32 lower-case hexadecimal characters")
        return value

    @field_validator("comment")
    @classmethod
    def _comment(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return clean_text(value, MAX_COMMENT_CHARS, "comment")


router = APIRouter()


def _unavailable() -> HTTPException:
    # The reason is logged, not returned: a driver's message may name hosts and users.
    return HTTPException(503, "feedback cannot be stored right now; try again shortly",
                         headers={"Retry-After": "5"})


@router.post("/api/feedback", status_code=204, response_class=Response, tags=["feedback"],
             responses={404: {"model": ErrorBody, "description": "Unknown or expired answer."}})
async def give_feedback(body: FeedbackIn, recorder: RecorderDep) -> Response:
    """Mark an answer helpful or not, with an optional comment; a second vote replaces the
    first. 204 only once the vote is committed to the store."""
    if recorder is None:
        raise HTTPException(404, "this service does not record answers (QA_RECORDING=false)")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FIND_ANSWER_FOR
    # A worker that has just started may still be opening the store (another one may hold
    # the migration lock): wait for it as long as for an answer still in a queue.
    while recorder.store is None and recorder.error is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    store = recorder.store
    if store is None:
        raise _unavailable()
    while True:
        try:
            found = await run_in_threadpool(store.set_feedback, body.answer_id, body.helpful,
                                            body.comment, time.time(), recorder.cutoff())
        except SQLAlchemyError as exc:
            log.error("feedback not stored: %s", describe(exc))
            raise _unavailable() from exc
        if found:
            return Response(status_code=204)
        if loop.time() >= deadline:
            raise HTTPException(404, "no such answer: unknown, or older than the retention period")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- insights


def _corpus(engine: Engine) -> insights.Corpus:
    try:
        snapshot = engine.snapshot
    except NotReady:
        return insights.Corpus(None)
    return insights.Corpus(snapshot.version, snapshot.index.documents, snapshot.index.chunks)


Days = Annotated[int, Query(ge=1, le=366, description="How many days back, today included.")]
CollectionName = Annotated[str | None, Query(
    max_length=64, description="Default: `default`, or the first collection declared.")]
Table = Literal["days", "unanswered", "not_helpful", "documents"]


class Refused(Exception):
    """Who asked may not read the insights: the status, the reason, and headers to send."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


# Who reads the insights: None for the admin token (every collection), else a verified identity
# in one of QA_INSIGHTS_GROUPS (the collections it may read).
Reader = Identity | None


async def _group_identity(request: Request) -> tuple[Identity, bool]:
    """The request's verified identity when QA_INSIGHTS_GROUPS is set (the admin paths skip the
    identity middleware, so it is decided here), and whether the bearer token was its proof.
    A bearer token that is no valid JWT leaves the request anonymous: it may be the admin
    token, or a guess at it."""
    auth: Authenticator | None = request.app.state.authenticator
    if not request.app.state.settings.insights_groups or auth is None:
        return ANONYMOUS, False
    try:
        identity = await auth.identify(request.scope)
    except InvalidToken:
        return ANONYMOUS, False
    except KeysUnavailable as exc:
        raise Refused(503, str(exc), {"Retry-After": "30"}) from exc
    except BadProxyHeaders as exc:
        raise Refused(400, str(exc)) from exc
    by_proxy = auth.proxy is not None and auth.proxy.of(request.scope) is not None
    return identity, identity.verified and not by_proxy


async def _reader(request: Request, *, page: bool) -> Reader:
    """The admin token (a bearer header, or on the page its session cookie), or a verified
    identity in one of QA_INSIGHTS_GROUPS; `Refused` otherwise. Failed tries at the token
    count against QA_ADMIN_RATE_LIMIT as on every admin route; a member of no insights group
    who offers no token is told so (403) without counting."""
    admin: Admin | None = getattr(request.app.state, "admin", None)
    presented = bearer_token(request.headers.get("authorization"))
    client = request.app.state.client_identity.of(request.scope)

    def locked_out() -> None:
        assert admin is not None
        refused = lockout(admin, client)
        if refused is not None:
            raise Refused(429, *refused)

    # A member of an insights group first: another client's failed guesses from the same
    # address must not lock a member out.
    try:
        identity, by_bearer = await _group_identity(request)
        trouble = None
    except Refused as exc:
        identity, by_bearer, trouble = ANONYMOUS, False, exc
    groups = request.app.state.settings.insights_groups
    if identity.verified and not identity.groups.isdisjoint(groups):
        return identity
    if admin is not None and presented is not None:
        locked_out()  # before the comparison: a lockout must not tell a right token apart
        if admin.check_token(presented):
            return None
    if admin is not None and page and _session_valid(request, admin):
        return None
    if trouble is not None:
        raise trouble
    guessed = presented is not None and not by_bearer
    if admin is not None and (guessed or (not page and not identity.verified)):
        if presented is None:
            locked_out()  # as the other admin routes: no token at all counts too
        admin.failures.hit(client)
        log.warning("admin authentication failed from %s", client)
    if identity.verified:
        raise Refused(403, f"{identity.user} is in none of the groups that may read the "
                           "insights (QA_INSIGHTS_GROUPS)")
    raise Refused(401, "a valid admin bearer token is required"
                  if admin is not None else "sign in through the intranet's login first",
                  {"WWW-Authenticate": "Bearer"})


async def api_reader(request: Request) -> Reader:
    try:
        return await _reader(request, page=False)
    except Refused as exc:
        raise HTTPException(exc.status, exc.detail, headers=exc.headers) from None


ApiReader = Annotated[Reader, Depends(api_reader)]


def _collections(library: Library, reader: Reader) -> list[str]:
    """The collections whose insights this reader may see: every one for the admin token."""
    if reader is None:
        return library.names
    return [shelf.name for shelf in library.readable(reader)]


async def _report(request: Request, days: int, collection: str | None,
                  reader: Reader) -> insights.InsightsOut:
    recorder: Recorder | None = request.app.state.recorder
    if recorder is None:
        raise HTTPException(404, "this service does not record answers (QA_RECORDING=false)")
    library: Library = request.app.state.library
    allowed = _collections(library, reader)
    if collection is None:
        collection = library.primary.name if library.primary.name in allowed or not allowed \
            else allowed[0]
    shelf = library.shelf(collection)
    if shelf is None or collection not in allowed:
        # The same answer for a collection this reader may not read as for an unknown one.
        raise HTTPException(404, f"no collection {collection!r}")
    store = recorder.store
    if store is None:
        reason = recorder.error or "starting"
        raise HTTPException(503, f"the answer store is not available ({reason})",
                            headers={"Retry-After": "5"})
    try:
        return await run_in_threadpool(
            insights.compute, store, _corpus(shelf.engine), collection=collection, days=days,
            questions_stored=recorder.store_questions, cutoff=recorder.cutoff())
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"the answer store is not available ({describe(exc)})",
                            headers={"Retry-After": "5"}) from exc


def _csv(report: insights.InsightsOut, table: str) -> Response:
    return Response(insights.to_csv(report, table), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="insights-{table}-{report.until}.csv"',
                             "Cache-Control": "no-store"})


api = APIRouter(prefix="/api/admin", tags=["admin"],
                responses={401: {"description": "Missing or wrong bearer token."},
                           403: {"description": "An identity in no insights group."}})


@api.get("/insights", response_model=insights.InsightsOut)
async def insights_json(request: Request, reader: ApiReader, days: Days = 30,
                        collection: CollectionName = None) -> insights.InsightsOut:
    """What readers asked and missed, per day and in total, for the last `days` days."""
    return await _report(request, days, collection, reader)


@api.get("/insights.csv", response_class=Response,
         responses={200: {"content": {"text/csv": {}}}})
async def insights_csv(request: Request, reader: ApiReader, table: Table = "days",
                       days: Days = 30, collection: CollectionName = None) -> Response:
    """One table of the insights as CSV."""
    return _csv(await _report(request, days, collection, reader), table)


# ---------------------------------------------------------------- the page, for a browser


def _session_value(admin: Admin, expires: int) -> str:
    mac = hmac.new(admin.token, f"insights-session:{expires}".encode(), "sha256").hexdigest()
    return f"{expires}.{mac}"


def _session_valid(request: Request, admin: Admin) -> bool:
    """A session cookie from the sign-in form, not expired."""
    expires, _, _mac = request.cookies.get(SESSION_COOKIE, "").partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(request.cookies[SESSION_COOKIE], _session_value(admin,
                                                                                int(expires)))


def _refused_page(request: Request, refused: Refused) -> HTMLResponse:
    """The sign-in form when there is an admin token to sign in with, else the reason."""
    form = getattr(request.app.state, "admin", None) is not None
    message = None if refused.status == 401 and form else refused.detail
    headers = {**PAGE_HEADERS, **{k: v for k, v in (refused.headers or {}).items()
                                  if k == "Retry-After"}}
    return HTMLResponse(render_login(message, form=form), status_code=refused.status,
                        headers=headers)


def _login_page(message: str | None, status: int) -> HTMLResponse:
    return HTMLResponse(render_login(message), status_code=status, headers=PAGE_HEADERS)


pages = APIRouter(include_in_schema=False)


@pages.get("/admin/insights")
async def insights_page(request: Request, days: Days = 30,
                        collection: CollectionName = None) -> Response:
    try:
        reader = await _reader(request, page=True)
    except Refused as refused:
        return _refused_page(request, refused)
    report = await _report(request, days, collection, reader)
    library: Library = request.app.state.library
    return HTMLResponse(render_page(report, collections=_collections(library, reader),
                                    sign_out=reader is None), headers=PAGE_HEADERS)


@pages.get("/admin/insights.csv")
async def insights_page_csv(request: Request, table: Table = "days", days: Days = 30,
                            collection: CollectionName = None) -> Response:
    try:
        reader = await _reader(request, page=True)
    except Refused as refused:
        detail = "sign in at /admin/insights first" if refused.status == 401 else refused.detail
        raise HTTPException(refused.status, detail, headers=refused.headers) from None
    return _csv(await _report(request, days, collection, reader), table)


@pages.post("/admin/insights")
async def sign_in(request: Request) -> Response:
    """The sign-in form posts the token here (a body is never logged, a URL may be); the
    answer is a session cookie for /admin only, valid for 8 hours."""
    admin: Admin | None = getattr(request.app.state, "admin", None)
    if admin is None:
        raise HTTPException(404, "no admin token is set: sign in through the intranet's login")
    client = request.app.state.client_identity.of(request.scope)
    wait = admin.failures.retry_after(client)
    if wait > 0:
        return _login_page(f"Too many failed attempts; try again in "
                           f"{retry_after_header(wait)} s.", 429)
    form = await request.form(max_files=0, max_fields=4)
    token = form.get("token")
    if not isinstance(token, str) or not admin.check_token(token.strip()):
        admin.failures.hit(client)
        log.warning("admin sign-in failed from %s", client)
        return _login_page("That is not the admin token.", 401)
    expires = int(time.time()) + SESSION_SECONDS
    response = RedirectResponse("/admin/insights", status_code=303)
    response.set_cookie(SESSION_COOKIE, _session_value(admin, expires), max_age=SESSION_SECONDS,
                        path="/admin", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@pages.post("/admin/logout")
async def sign_out() -> Response:
    response = RedirectResponse("/admin/insights", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin", httponly=True, samesite="strict")
    return response


@pages.get("/admin/insights.css")
def insights_css(request: Request) -> Response:
    return serve(request, load_asset("insights.css", "text/css; charset=utf-8"),
                 {"Cache-Control": "public, max-age=300"})
