"""The chat widget in a real browser (Debian's Chromium via Playwright) against a real server."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Locator,
    Page,
    Route,
    expect,
    sync_playwright,
)

from scripts.browser import find_browser, missing
from service.index.encoder import OnnxEncoder, describe_model
from service.index.indexing import build_index, encoder_folder
from service.settings import Settings
from tests.conftest import ROOT, SEED_CORPUS

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STATIC = ROOT / "service" / "http" / "static"
HOST_PAGE = ROOT / "examples" / "host-page"
SHOTS = ROOT / "test-output" / "widget"
EXAMPLE_SERVICE = "http://127.0.0.1:8000"
BUDGET = 12 * 1024

# A corpus document whose title, text and file name carry markup: the widget must show it as
# text. The emoji sits before a highlight, so highlight offsets (code points) must be mapped to
# JavaScript's UTF-16 string indexes correctly.
XSS_DOC_ID = "notes/why? #1 <svg onload=alert(9)>.md"
XSS_DOC = """# Zephyr lighthouse <img src=x onerror="window.__xss=1"> <script>window.__xss=2\
</script>

The Zephyr lighthouse keeper \U0001f6a2 writes every passing ship into a red ledger. The red \
ledger is kept in the lamp room <img src=x onerror="window.__xss=3"> beside the brass telescope \
<a href="javascript:window.__xss=4">see</a>. Nobody but the keeper may write in the ledger \
<b onmouseover="window.__xss=5">ever</b>.
"""
XSS_QUESTION = ('<img src=x onerror="window.__xss=6"><script>alert(7)</script> '
                "Who writes in the red ledger?")

# Styles a careless or hostile intranet page might carry; none may reach into the widget.
HOSTILE_CSS = """
* { all: unset; }
html { font-size: 3px; }
body * { display: block; font: italic 40px/3 "Comic Sans MS", cursive !important;
         color: #f0f !important; transform: rotate(1deg) !important; }
div, p, span, button, textarea, form, header, ul, li, mark, blockquote { display: none !important; }
:root { --a: red; color-scheme: dark; }
"""

# Records CSP violations before any page script runs (init scripts are not subject to CSP).
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI), true);
"""

# Every element and attribute inside the widget's shadow root, for the XSS checks.
SHADOW_DOM = """() => {
  const host = document.querySelector('cited-qa');
  return [...host.shadowRoot.querySelectorAll('*')].map((el) => [el.localName,
    [...el.attributes].map((a) => [a.name, a.value])]);
}"""
FOCUSED = """() => {
  const el = document.activeElement;
  const inner = el && el.shadowRoot ? el.shadowRoot.activeElement : null;
  return inner ? inner.localName + '.' + inner.className : el ? el.localName : '';
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def strict_csp(service: str) -> str:
    return (f"default-src 'self'; script-src 'self' {service}; connect-src 'self' {service}; "
            "style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'")


def host_pages(service: str) -> dict[str, tuple[bytes, str]]:
    """The example host pages pointed at the test service, plus a page with hostile CSS."""
    html = "text/html; charset=utf-8"
    pages = {f"/{p.name}": (p.read_text("utf-8").replace(EXAMPLE_SERVICE, service).encode(),
                            html if p.suffix == ".html" else "text/css")
             for p in HOST_PAGE.iterdir() if p.suffix in (".html", ".css")}
    pages["/"] = pages["/index.html"]
    hostile = pages["/index.html"][0].replace(
        b'href="styles.css">', b'href="styles.css">\n<link rel="stylesheet" href="hostile.css">')
    pages["/hostile.html"] = (hostile, html)
    pages["/hostile.css"] = (HOSTILE_CSS.encode(), "text/css")
    return pages


class HostSite(http.server.ThreadingHTTPServer):
    """A second loopback origin serving the host pages with a strict CSP header.

    It starts before the service (whose allowed origins must name it), so the pages are
    filled in with the service's origin once that is known.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HostPageHandler)
        self.pages: dict[str, tuple[bytes, str]] = {}
        self.policy = ""
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def point_at(self, service: str) -> None:
        self.pages = host_pages(service)
        self.policy = strict_csp(service)


class HostPageHandler(http.server.BaseHTTPRequestHandler):
    server: HostSite

    def do_GET(self) -> None:
        found = self.server.pages.get(self.path.split("?")[0])
        body, media_type = found or (b"not found", "text/plain")
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", self.server.policy)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Origins:
    service: str
    allowed: str  # a host page origin listed in QA_ALLOWED_ORIGINS
    refused: str  # a host page origin that is not


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("widget") / "corpus"
    shutil.copytree(SEED_CORPUS, target)
    (target / XSS_DOC_ID).parent.mkdir()
    (target / XSS_DOC_ID).write_text(XSS_DOC, "utf-8")
    return target


@pytest.fixture(scope="module")
def index(corpus: Path, real_encoder_dir: Path) -> Path:
    """The corpus indexed with the real packaged model, as `make index` does."""
    target = corpus.parent / "index"
    # Reuse the session's ONNX export rather than exporting the model again.
    shutil.copytree(real_encoder_dir,
                    encoder_folder(target, OnnxEncoder.kind, describe_model(None)))
    build_index(Settings(corpus_dir=corpus, index_dir=target))
    return target


@contextmanager
def running_service(corpus: Path, index: Path, allowed: str, rate_limit: int) -> Iterator[str]:
    """`uvicorn --factory service.app:create_app` on a free loopback port; yields its origin."""
    port = free_port()
    env = {**os.environ, "QA_CORPUS_DIR": str(corpus), "QA_INDEX_DIR": str(index),
           "QA_ALLOWED_ORIGINS": allowed, "QA_RATE_LIMIT": str(rate_limit),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = corpus.parent / f"uvicorn-{port}.log"
    origin = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the service exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(f"{origin}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the service did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield origin
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def host_sites(count: int) -> Iterator[list[HostSite]]:
    sites = [HostSite() for _ in range(count)]
    try:
        yield sites
    finally:
        for site in sites:
            site.shutdown()
            site.server_close()


@pytest.fixture(scope="module")
def origins(corpus: Path, index: Path) -> Iterator[Origins]:
    """The real service (real model, shipped corpus + the XSS document) and two host origins."""
    with host_sites(2) as (allowed, refused), \
            running_service(corpus, index, allowed.origin, rate_limit=0) as service:
        allowed.point_at(service)
        refused.point_at(service)
        yield Origins(service, allowed.origin, refused.origin)


@pytest.fixture(scope="module")
def limited_host(corpus: Path, index: Path) -> Iterator[str]:
    """A host page origin allowed by a service that takes one request, then one per 60 s."""
    with host_sites(1) as (host,), \
            running_service(corpus, index, host.origin, rate_limit=1) as service:
        host.point_at(service)
        yield host.origin


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = find_browser()
    if executable is None:
        # Fail, never skip; one message without a traceback (`make test` tried to fetch one).
        pytest.fail(missing(), pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """What a page did that it must not: dialogs, console errors, CSP violations."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def saw_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def saw_console(self, message: ConsoleMessage) -> None:
        # Chromium asks every origin for /favicon.ico; neither test server has one, and the
        # 404 is the browser's doing, not the page's or the widget's.
        if message.type == "error" and not message.location.get("url", "").endswith(
                "/favicon.ico"):
            self.errors.append(f"{message.text} ({message.location.get('url')})")

    def saw_error(self, error: Error) -> None:
        self.errors.append(str(error))

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("() => window.__csp")
        return found


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Watch]]:
    contexts: list[BrowserContext] = []

    def opener(url: str, width: int = 1280, height: int = 800) -> Watch:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        context.add_init_script(WATCH_CSP)
        page = context.new_page()
        page.set_default_timeout(15_000)
        watch = Watch(page)
        page.on("dialog", watch.saw_dialog)
        page.on("console", watch.saw_console)
        page.on("pageerror", watch.saw_error)
        page.goto(url)
        expect(widget(page, ".l").or_(widget(page, ".p"))).not_to_have_count(0)
        return watch

    yield opener
    for context in contexts:
        context.close()


def widget(page: Page, selector: str) -> Locator:
    return page.locator("cited-qa").locator(selector)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png")


def ask(page: Page, question: str) -> tuple[Locator, dict[str, Any]]:
    """Type a question, press Enter; the new answer bubble and the API's reply."""
    done = widget(page, ".log > .m:not(.u):not([aria-busy])")
    before = done.count()
    box = widget(page, "textarea")
    box.fill(question)
    with page.expect_response(lambda r: r.url.endswith("/api/chat")) as response:
        box.press("Enter")
    expect(done).to_have_count(before + 1)
    reply: dict[str, Any] = response.value.json()
    return done.nth(before), reply


def open_panel(page: Page) -> None:
    widget(page, ".l").click()
    expect(widget(page, "[role=dialog]")).to_be_visible()


def shown(text: str) -> str:
    return " ".join(text.split())


def source_text(doc_id: str) -> str:
    folder = SEED_CORPUS if doc_id == "head-of-product.txt" else None
    return (folder / doc_id).read_text("utf-8") if folder else XSS_DOC


def test_bundle_is_within_budget(capsys: pytest.CaptureFixture[str]) -> None:
    # The widget carries its CSS inside widget.js (a constructable stylesheet): one file.
    assert not (STATIC / "widget.css").exists()
    size = len(gzip.compress((STATIC / "widget.js").read_bytes(), 9))
    with capsys.disabled():
        print(f"\nwidget.js: {size:,} bytes gzipped (budget {BUDGET:,})")  # noqa: T201
    assert size <= BUDGET


def test_widget_source_never_parses_markup() -> None:
    source = (STATIC / "widget.js").read_text("utf-8")
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "setAttribute('on", "srcdoc"):
        assert banned not in source, banned


def test_routes_serve_widget_and_demo_page(origins: Origins) -> None:
    js = httpx.get(f"{origins.service}/widget.js", headers={"Accept-Encoding": "gzip"})
    assert js.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert js.headers["content-encoding"] == "gzip"
    assert js.content == (STATIC / "widget.js").read_bytes()  # httpx decodes the gzip
    assert js.headers["cross-origin-resource-policy"] == "cross-origin"
    again = httpx.get(f"{origins.service}/widget.js",
                      headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    page = httpx.get(f"{origins.service}/")
    assert page.status_code == 200 and '<script src="/widget.js"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy


def test_ask_open_citation_and_see_it_in_context(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{origins.service}/")
    page = watch.page
    shot(page, "01-launcher")
    open_panel(page)
    shot(page, "02-open")
    bubble, reply = ask(page, "Who is the head of product at Bloomberg?")
    assert reply["answered"] and "Vlad Kliatchko" in reply["answer"]
    # The answer is shown as text, its [n] markers as chips, and its sources listed.
    chips = bubble.locator(".c")
    expect(chips).to_have_count(len(re.findall(r"\[\d+\]", reply["answer"])))
    expect(bubble).to_contain_text("Vlad Kliatchko")
    expect(bubble.locator(".s li")).to_have_count(len(reply["citations"]))
    expect(widget(page, "[role=status]")).to_contain_text("Vlad Kliatchko")
    shot(page, "03-answer")

    chips.first.click()
    first = reply["citations"][0]
    passage = bubble.locator(".q")
    expect(passage).to_be_focused()
    expect(passage.locator("b")).to_have_text(f"[1] {first['heading']}")
    expect(passage.locator("small")).to_have_text(first["title"])
    expect(passage.locator("blockquote")).to_have_text(first["text"])
    source = source_text(first["doc_id"])
    expect(passage.locator("mark")).to_have_text(
        [source[h["start"]:h["end"]] for h in first["highlights"]])
    assert first["highlights"], "the quoted sentence is highlighted"
    expect(chips.first).to_have_attribute("aria-expanded", "true")
    shot(page, "04-passage")

    passage.get_by_role("button", name="See in context").click()
    expect(passage.locator(".ok")).to_contain_text("matches the document")
    context_text = passage.locator("blockquote").inner_text()
    assert first["text"] in context_text and len(context_text) > len(first["text"])
    expect(passage.locator(".cx")).to_have_text(first["text"])
    shot(page, "05-context")
    assert watch.violations() == [] and watch.errors == [] and watch.dialogs == []


def test_unanswerable_question_is_declined_with_nearest_passages(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    page = open_page(f"{origins.service}/").page
    open_panel(page)
    bubble, reply = ask(page, "What is the recipe for banana bread?")
    assert reply["answered"] is False
    expect(bubble).to_have_class(re.compile(r"\bno\b"))
    expect(bubble.locator(".tag")).to_have_text("Not answered by the text")
    expect(bubble.locator(".s p")).to_have_text(
        "Nearest passages (they do not answer the question)")
    expect(bubble.locator(".s li")).to_have_count(len(reply["citations"]))
    shot(page, "06-declined")


def test_follow_up_uses_the_conversation_which_survives_navigation(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{origins.allowed}/index.html")
    page = watch.page
    open_panel(page)
    ask(page, "Tell me about Bloomberg's head of product.")
    with page.expect_request(lambda r: r.url.endswith("/api/chat")) as sent:
        bubble, reply = ask(page, "Who became chairman of its board?")
    messages = (sent.value.post_data_json or {})["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "Bloomberg" in reply["query"]
    assert any("Mark Carney" in c["text"] for c in reply["citations"])
    expect(bubble.locator(".c").first).to_be_visible()
    shot(page, "07-follow-up")

    # Another page of the same site (here the inline embed) carries the conversation on.
    page.goto(f"{origins.allowed}/inline.html")
    users = widget(page, ".log > .m.u")
    expect(users).to_have_text(["Tell me about Bloomberg's head of product.",
                                "Who became chairman of its board?"])
    expect(widget(page, ".l")).to_have_count(0)
    expect(widget(page, "[role=region] h2")).to_have_text("Ask the handbook")
    widget(page, ".log .c").first.click()
    expect(widget(page, ".q mark").first).to_be_visible()
    shot(page, "08-inline-restored")
    widget(page, "header").get_by_role("button", name="New chat").click()
    expect(users).to_have_count(0)
    page.reload()
    expect(widget(page, ".log > .m")).to_have_count(1)  # only the greeting
    assert watch.violations() == [] and watch.errors == []


def test_script_and_markup_payloads_never_execute(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{origins.service}/")
    page = watch.page
    open_panel(page)
    # A question full of markup may be answered or declined (its tags dilute it); either way
    # it shows as text. The plain one is answered with highlights inside the hostile document.
    bubble, reply = ask(page, XSS_QUESTION)
    expect(widget(page, ".log > .m.u").last).to_have_text(XSS_QUESTION)
    assert any(c["doc_id"] == XSS_DOC_ID for c in reply["citations"]), reply
    for question in ("Who writes in the red ledger?",
                     "Where is the red ledger of the Zephyr lighthouse kept?"):
        bubble, reply = ask(page, question)
        cited = next(c for c in reply["citations"] if c["doc_id"] == XSS_DOC_ID)
        assert reply["answered"] and cited["highlights"], reply
        expect(widget(page, ".log > .m.u").last).to_have_text(question)
        expect(bubble.locator(".c").first).to_be_visible()
        bubble.locator(".s button").nth(cited["n"] - 1).click()
        passage = bubble.locator(".q")
        expect(passage.locator("b")).to_have_text(f"[{cited['n']}] {cited['heading']}")
        expect(passage.locator("small")).to_have_text(cited["title"])
        expect(passage.locator("mark")).to_have_text(
            [XSS_DOC[h["start"]:h["end"]] for h in cited["highlights"]])
        passage.get_by_role("button", name="See in context").click()
        expect(passage.locator(".ok")).to_contain_text("matches the document")
        passage.locator("mark").first.hover()
    assert "<img src=x" in bubble.inner_text() or "<img src=x" in reply["answer"]
    shot(page, "09-xss-as-text")
    page.wait_for_timeout(300)  # give any injected handler (onerror, onload) time to fire
    assert page.evaluate("() => window.__xss") is None
    assert watch.dialogs == []
    for name, attributes in page.evaluate(SHADOW_DOM):
        assert name not in ("script", "img", "svg", "iframe", "object", "embed"), name
        if name == "a":
            # The one link the widget makes: the cited document's original, in a new tab.
            link = dict(attributes)
            assert set(link) == {"href", "target", "rel"}, link
            assert link["href"].startswith(f"{origins.service}/api/documents/"), link
            assert link["href"].split("#")[0].endswith("/source") and link["target"] == "_blank"
        for attr, value in attributes:
            assert not attr.startswith("on") and "javascript:" not in value.lower(), (name, attr)
    assert watch.violations() == [] and watch.errors == []


def test_strict_csp_host_page_on_an_allowed_origin(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{origins.allowed}/")
    page = watch.page
    open_panel(page)
    bubble, reply = ask(page, "Which former governor became Bloomberg's chairman?")
    assert reply["answered"] and "Mark Carney" in reply["answer"]
    bubble.locator(".c").first.click()
    bubble.get_by_role("button", name="See in context").click()
    expect(bubble.locator(".ok")).to_contain_text("matches the document")
    shot(page, "10-host-page-csp")
    assert watch.violations() == [] and watch.errors == [] and watch.dialogs == []
    # The watch sees violations: an inline script on this page is refused and reported.
    with pytest.raises(Exception, match="Content Security Policy"):
        page.add_script_tag(content="window.__inline = 1")
    assert page.evaluate("() => window.__inline") is None
    assert any("script-src" in v for v in watch.violations())


def test_origin_not_allowed_gets_no_cors_grant(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{origins.service}/api/chat", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})

    assert preflight(origins.allowed).headers["access-control-allow-origin"] == origins.allowed
    assert "access-control-allow-origin" not in preflight(origins.refused).headers
    assert "access-control-allow-credentials" not in preflight(origins.allowed).headers

    watch = open_page(f"{origins.refused}/")
    page = watch.page
    open_panel(page)
    widget(page, "textarea").fill("Who is the head of product at Bloomberg?")
    widget(page, "textarea").press("Enter")
    error = widget(page, ".m.err")
    expect(error).to_contain_text("Couldn't reach the service")
    expect(error.get_by_role("button", name="Retry")).to_be_enabled()
    assert any("CORS" in e for e in watch.errors), watch.errors  # the browser refused it
    shot(page, "11-origin-refused")


def test_hostile_host_css_does_not_reach_the_widget(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{origins.allowed}/hostile.html")
    page = watch.page
    launcher = widget(page, ".l")
    box = launcher.bounding_box()
    assert box is not None and 30 <= box["height"] <= 70, box
    assert box["x"] + box["width"] <= 1280 - 10 and box["y"] + box["height"] <= 800 - 10
    assert launcher.evaluate("(el) => getComputedStyle(el).fontSize") == "14px"
    open_panel(page)
    panel = widget(page, ".p").bounding_box()
    assert panel is not None and panel["width"] == 384 and panel["y"] >= 0
    bubble, reply = ask(page, "Who is the head of product at Bloomberg?")
    assert reply["answered"]
    expect(bubble).to_contain_text("Vlad Kliatchko")
    styles = bubble.evaluate(
        "(el) => [getComputedStyle(el).fontStyle, getComputedStyle(el).color]")
    assert styles == ["normal", "rgb(27, 31, 36)"]
    bubble.locator(".c").first.click()
    expect(bubble.locator("mark").first).to_be_visible()
    shot(page, "12-hostile-css")
    assert watch.violations() == [] and watch.errors == []


def test_keyboard_only(origins: Origins, open_page: Callable[..., Watch]) -> None:
    page = open_page(f"{origins.allowed}/").page
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate(FOCUSED) == "button.l":
            break
    assert page.evaluate(FOCUSED) == "button.l", "the launcher is reachable with Tab"
    outline = page.evaluate("() => getComputedStyle(document.activeElement.shadowRoot"
                            ".activeElement).outlineStyle")
    assert outline == "solid", "keyboard focus is visible"
    page.keyboard.press("Enter")
    dialog = widget(page, "[role=dialog]")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("aria-labelledby", "t")
    expect(widget(page, "textarea")).to_be_focused()
    page.keyboard.type("Who is the head of product")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("at Bloomberg?")
    expect(widget(page, "textarea")).to_have_value("Who is the head of product\nat Bloomberg?")
    with page.expect_response(lambda r: r.url.endswith("/api/chat")) as response:
        page.keyboard.press("Enter")
    assert response.value.json()["answered"]
    expect(widget(page, ".log .c").first).to_be_visible()
    expect(widget(page, "textarea")).to_have_value("")
    # Back through the controls to the answer's first chip, open it, and land in the passage.
    for _ in range(20):
        page.keyboard.press("Shift+Tab")
        if page.evaluate(FOCUSED) == "button.c":
            break
    assert page.evaluate(FOCUSED) == "button.c"
    page.keyboard.press("Enter")
    expect(widget(page, ".q")).to_be_focused()
    expect(widget(page, ".q mark").first).to_be_visible()
    shot(page, "13-keyboard")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert page.evaluate(FOCUSED) == "button.l", "focus returns to the launcher"
    expect(widget(page, ".l")).to_have_attribute("aria-expanded", "false")


def test_small_viewport_goes_full_screen(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    page = open_page(f"{origins.service}/", width=375, height=740).page
    shot(page, "14-mobile-launcher")
    open_panel(page)
    assert widget(page, ".p").bounding_box() == {"x": 0, "y": 0, "width": 375, "height": 740}
    expect(widget(page, ".l")).to_be_hidden()
    bubble, _ = ask(page, "Where is the red ledger of the Zephyr lighthouse kept?")
    bubble.locator(".c").first.click()
    expect(bubble.locator("mark").first).to_be_visible()
    overflow = widget(page, ".log").evaluate("(el) => el.scrollWidth - el.clientWidth")
    assert overflow == 0, "nothing scrolls sideways"
    shot(page, "15-mobile-passage")
    widget(page, "header").get_by_role("button", name="Close").click()
    expect(widget(page, ".l")).to_be_visible()


def test_loading_rate_limited_not_ready_and_offline_states(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    page = open_page(f"{origins.service}/").page
    outcomes = ["slow", "429", "503", "offline"]

    def answer(route: Route) -> None:
        outcome = outcomes.pop(0) if outcomes else "pass"
        if outcome == "slow":
            page.wait_for_timeout(800)  # long enough to see (and photograph) the loading state
            route.continue_()
        elif outcome == "429":
            route.fulfill(status=429, headers={"Retry-After": "2"},
                          json={"detail": "rate limit exceeded"})
        elif outcome == "503":
            route.fulfill(status=503, headers={"Retry-After": "1"},
                          json={"detail": "the index is not loaded yet"})
        elif outcome == "offline":
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/api/chat", answer)
    open_panel(page)
    box = widget(page, "textarea")
    box.fill("Who is the head of product at Bloomberg?")
    box.press("Enter")
    loading = widget(page, "[aria-busy=true]")
    expect(loading).to_contain_text("Searching the text")
    expect(widget(page, "form button")).to_be_disabled()
    shot(page, "16-loading")
    expect(loading).to_have_count(0)
    expect(widget(page, ".log .c").first).to_be_visible()

    box.fill("Where is the red ledger of the Zephyr lighthouse kept?")
    box.press("Enter")
    error = widget(page, ".m.err")
    expect(error).to_contain_text("ask again in 2 s")
    retry = error.get_by_role("button")
    expect(retry).to_be_disabled()
    expect(retry).to_have_text(re.compile(r"Retry in \d s"))
    expect(widget(page, "form button")).to_be_disabled()
    expect(widget(page, "[role=status]")).to_contain_text("Too many questions")
    shot(page, "17-rate-limited")
    expect(retry).to_be_enabled(timeout=4000)
    retry.click()
    expect(error).to_contain_text("starting up")
    shot(page, "18-not-ready")
    expect(error.get_by_role("button")).to_be_enabled(timeout=3000)
    error.get_by_role("button").click()
    expect(error).to_contain_text("Couldn't reach the service")
    shot(page, "19-offline")
    error.get_by_role("button", name="Retry").click()
    expect(error).to_have_count(0)
    expect(widget(page, ".log > .m.u")).to_have_count(2)  # retries do not repeat the question
    expect(widget(page, ".log > .m:not(.u)").last).to_contain_text("red ledger")


def test_real_rate_limit_across_origins_shows_the_servers_wait(
        limited_host: str, open_page: Callable[..., Watch]) -> None:
    # Loading widget.js costs no allowance; the first question takes the only token.
    page = open_page(f"{limited_host}/").page
    open_panel(page)
    ask(page, "Who is the head of product at Bloomberg?")
    box = widget(page, "textarea")
    box.fill("Which former governor became Bloomberg's chairman?")
    with page.expect_response(lambda r: r.url.endswith("/api/chat")) as response:
        box.press("Enter")
    assert response.value.status == 429
    wait = response.value.headers["retry-after"]
    assert int(wait) > 5, "a wait the widget could not have guessed"
    error = widget(page, ".m.err")
    # Readable only because the service exposes Retry-After to other origins.
    expect(error).to_contain_text(f"ask again in {wait} s")
    expect(error.get_by_role("button")).to_be_disabled()
    shot(page, "20-rate-limited-cross-origin")


def test_characters_the_api_refuses_are_dropped_before_sending(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    page = open_page(f"{origins.service}/").page
    open_panel(page)
    # A pasted bell character and a lone surrogate would make the API answer 422.
    widget(page, "textarea").evaluate(
        "(el) => { el.value = ' Who is the head\\u0007 of product at Bloomberg?\\ud800 '; }")
    with page.expect_request(lambda r: r.url.endswith("/api/chat")) as sent, \
            page.expect_response(lambda r: r.url.endswith("/api/chat")) as response:
        widget(page, "textarea").press("Enter")
    question = (sent.value.post_data_json or {})["messages"][-1]["content"]
    assert question == "Who is the head of product at Bloomberg?\ufffd"
    assert response.value.status == 200
    expect(widget(page, ".log .c").first).to_be_visible()


def test_markers_come_from_answer_parts_and_document_ids_are_encoded(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{origins.service}/")
    page = watch.page
    cite = {"title": "T", "heading": "", "start": 0, "end": 5, "text": "Heat.", "score": 1.0,
            "highlights": []}
    reply = {"question": "q", "answer": "Heat moves faster [2] in copper. [1]",
             "answer_parts": [{"text": "Heat moves faster [2] in copper.", "citation": 1}],
             "answered": True, "confidence": 0.9, "index_version": "v", "took_ms": 1.0,
             "query": "q", "citations": [{"n": 1, "doc_id": "x/../../metrics", **cite},
                                         {"n": 2, "doc_id": "other.txt", **cite}]}
    page.route("**/api/chat", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(reply)))
    open_panel(page)
    bubble, _ = ask(page, "How fast does heat move in copper?")
    # The "[2]" inside the quote is text; the one chip is the structural citation 1.
    chips = bubble.locator(".c")
    expect(chips).to_have_count(1)
    expect(chips).to_have_text("1")
    expect(bubble).to_contain_text("Heat moves faster [2] in copper.")
    chips.click()
    with page.expect_request(lambda r: "/api/documents/" in r.url or "/metrics" in r.url) as req:
        bubble.locator(".q").get_by_role("button", name="See in context").click()
    # One encoded segment, so the browser cannot resolve the id into a request for /metrics.
    assert req.value.url == f"{origins.service}/api/documents/x%2F..%2F..%2Fmetrics"
    expect(bubble.locator(".q .bad")).to_contain_text("HTTP 404")
    assert watch.violations() == [] and watch.dialogs == []


def test_passages_read_like_their_original_with_page_and_link(
        origins: Origins, open_page: Callable[..., Watch]) -> None:
    """A Markdown table, list and emphasis, and a Word table (tab-separated cells), shown as
    such, highlights on the same characters; a PDF passage with its page and original."""
    md = ("Leave **accrues** each pay period, see [the chart](https://example.org/c):\n"
          "| Years | Hours |\n|---|---|\n| 0-3 | 4 |\n| 15+ | 8 |\n"
          "- Annual *leave* first\n- Then sick_leave")
    word = "Day\tHours\nMonday\t10\nTuesday\t9"
    at = 1000
    eight, sick = md.index("8 |"), md.index("Then sick_leave")
    reply = {
        "question": "q", "answer": "Fifteen years earn 8 hours [1]. Monday is 10 hours [2].",
        "answer_parts": [{"text": "Fifteen years earn 8 hours.", "citation": 1},
                         {"text": "Monday is 10 hours.", "citation": 2}],
        "answered": True, "confidence": 0.9, "index_version": "v", "took_ms": 1.0,
        "query": "q",
        "citations": [
            {"n": 1, "doc_id": "hr/leave.md", "title": "Leave", "heading": "Annual leave",
             "start": at, "end": at + len(md), "text": md, "score": 0.9,
             "highlights": [{"start": at + eight, "end": at + eight + 1},
                            {"start": at + sick, "end": at + len(md)}]},
            {"n": 2, "doc_id": "hr/schedules.pdf", "title": "Schedules", "heading": "",
             "start": 5, "end": 5 + len(word), "text": word, "score": 0.8, "page": 3,
             "highlights": [{"start": 5 + word.index("10"), "end": 5 + word.index("10") + 2}]},
        ]}
    page = open_page(f"{origins.service}/").page
    page.route("**/api/chat", lambda route: route.fulfill(json=reply))
    open_panel(page)
    box = widget(page, "textarea")
    box.fill("How much leave?")
    box.press("Enter")
    bubble = widget(page, ".log > .m:not(.u)").last
    chips = bubble.locator(".c")
    expect(chips).to_have_text(["1", "2 · p. 3"])
    expect(bubble.locator(".s li").nth(1)).to_have_text("[2] Schedules, p. 3")

    chips.first.click()
    passage = bubble.locator(".q blockquote")
    expect(passage.locator("table tr")).to_have_count(3)
    expect(passage.locator("th")).to_have_text(["Years", "Hours"])
    expect(passage.locator("b")).to_have_text("accrues")
    expect(passage.locator("li")).to_have_text(["Annual leave first", "Then sick_leave"])
    expect(passage.locator("li i")).to_have_text("leave")
    expect(passage.locator("mark")).to_have_text(["8", "Then sick_leave"])
    shown_text = passage.inner_text()
    assert "|" not in shown_text and "*" not in shown_text and "https://" not in shown_text
    assert "the chart" in shown_text
    link = bubble.locator(".q a")
    expect(link).to_have_text("Open original")
    expect(link).to_have_attribute("href",
                                   f"{origins.service}/api/documents/hr%2Fleave.md/source")

    chips.nth(1).click()
    pdf = bubble.locator(".q")
    expect(pdf.locator("small")).to_have_text("p. 3")
    expect(pdf.locator("tr")).to_have_count(3)
    expect(pdf.locator("mark")).to_have_text(["10"])
    expect(pdf.locator("a")).to_have_attribute(
        "href", f"{origins.service}/api/documents/hr%2Fschedules.pdf/source#page=3")
    expect(pdf.locator("a")).to_have_attribute("target", "_blank")
    shot(page, "20-rich-passage")
