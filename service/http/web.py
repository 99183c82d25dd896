"""The browser side: the embeddable widget script and the demo page that uses it."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request, Response

from service.http.library import Library

STATIC = Path(__file__).resolve().parent / "static"

# The demo page runs under the policy we recommend to host pages: nothing inline, nothing
# evaluated, and only this origin for scripts, styles and API calls.
DEMO_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str


@cache
def load_asset(name: str, media_type: str) -> Asset:
    """A static file read once, with its gzip form: the widget is fetched by every host page."""
    body = (STATIC / name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return Asset(body, gzip.compress(body, 9, mtime=0), etag, media_type)


def serve(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    """The asset, gzipped when the client takes it, 304 when the client already has it."""
    # Both forms share one ETag: they differ only in transfer encoding (Vary says so).
    common = {"ETag": asset.etag, "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff",
              **headers}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=common)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(asset.gzipped, media_type=asset.media_type,
                        headers={**common, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=common)


router = APIRouter(include_in_schema=False)


@router.api_route("/widget.js", methods=["GET", "HEAD"])
def widget(request: Request) -> Response:
    """The widget; any page may load it, only QA_ALLOWED_ORIGINS may call the API with it."""
    return serve(request, load_asset("widget.js", "text/javascript; charset=utf-8"), {
        "Cache-Control": "public, max-age=300",
        # Lets host pages that require CORP (cross-origin isolation) still load the script.
        "Cross-Origin-Resource-Policy": "cross-origin",
    })


@router.api_route("/demo.css", methods=["GET", "HEAD"])
def demo_css(request: Request) -> Response:
    """The demo page's own look; the widget brings its styles inside its script."""
    return serve(request, load_asset("demo.css", "text/css; charset=utf-8"),
                 {"Cache-Control": "public, max-age=300"})


@cache
def demo_asset(title: str, questions: tuple[str, ...], collection: str | None = None) -> Asset:
    """The demo page for the served corpus: its title and example questions come from the
    settings (QA_DEMO_TITLE, QA_DEMO_QUESTIONS) or the collections file, escaped, never from a
    corpus file. With `collection` its widget asks that collection."""
    try_block = ""
    if questions:
        items = "".join(f"    <li>{escape(q)}</li>\n" for q in questions)
        try_block = f"  <h2>Try</h2>\n  <ul>\n{items}  </ul>\n"
    body = (STATIC / "index.html").read_text("utf-8")
    widget_attrs = f' data-collection="{escape(collection)}"' if collection else ""
    for key, value in (("{title}", escape(title)), ("{questions}", try_block),
                       ("{widget_title}", "Ask a question"), ("{widget_attrs}", widget_attrs)):
        body = body.replace(key, value)
    data = body.encode("utf-8")
    etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
    return Asset(data, gzip.compress(data, 9, mtime=0), etag, "text/html; charset=utf-8")


@router.api_route("/", methods=["GET", "HEAD"])
def demo_page(request: Request) -> Response:
    """A page that embeds the widget exactly as a customer page would."""
    settings = request.app.state.settings
    library: Library = request.app.state.library
    if settings.collections_file is None:
        asset = demo_asset(settings.demo_title, tuple(settings.demo_questions))
    else:
        # The page is public: it presents `default` (or the first collection) only when anyone
        # may read it, else the first public one, else none.
        shown = next((s for s in (library.primary, *library)
                      if s.collection.public), None)
        asset = (demo_asset(shown.collection.title, shown.collection.questions, shown.name)
                 if shown else demo_asset(settings.demo_title, ()))
    return serve(request, asset, {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": DEMO_CSP,
        "Referrer-Policy": "no-referrer",
    })
