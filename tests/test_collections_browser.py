"""Widgets for different collections on one host page, in a real browser against a real
service serving them from a collections file (real model, real FAISS)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from service.index.encoder import OnnxEncoder, describe_model
from service.index.indexing import build_index, encoder_folder
from service.settings import Settings
from tests import test_widget_browser as widget_tests
from tests.conftest import NOTES_CORPUS, ROOT, SEED_CORPUS, start_service, write_corpus
from tests.test_widget_browser import HostSite, Watch, host_sites, strict_csp

# The widget tests' fixtures: Chromium for this module, and pages that record CSP violations.
browser = widget_tests.browser
open_page = widget_tests.open_page

SHOTS = ROOT / "test-output" / "collections"
NO_ACCESS = "You don't have access to this collection (or it does not exist)."
# The host page's own sign-in helper: a fresh token for every request, through a promise and
# a method (so `this` must be the object it hangs on).
TOKEN_JS = b"""window.hostAuth = { n: 0, token() { this.n += 1;
  return Promise.resolve('page-token-' + this.n); } };"""
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Two collections</title>
<script src="/token.js"></script></head>
<body><h1>Intranet</h1>
<div id="a"></div><div id="b"></div><div id="c"></div>
<script src="{service}/widget.js" data-collection="article" data-mount="#a" async></script>
<script src="{service}/widget.js" data-collection="notes" data-mount="#b"
        data-token-from="hostAuth.token" async></script>
<script src="{service}/widget.js" data-collection="vault" data-mount="#c" async></script>
</body></html>"""


def _index(corpus: Path, index: Path, encoder_dir: Path) -> None:
    shutil.copytree(encoder_dir, encoder_folder(index, OnnxEncoder.kind, describe_model(None)))
    build_index(Settings(corpus_dir=corpus, index_dir=index))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory,
         real_encoder_dir: Path) -> Iterator[HostSite]:
    """A host page origin allowed by three collections: two public, one for group `hr`."""
    root = tmp_path_factory.mktemp("collections-browser")
    shutil.copytree(SEED_CORPUS, root / "article")
    write_corpus(root / "notes", NOTES_CORPUS)
    write_corpus(root / "vault", {"plans.txt": "The vault holds the plans for next year."})
    for name in ("article", "notes", "vault"):
        _index(root / name, root / "index" / name, real_encoder_dir)
    with host_sites(1) as (site,):
        (root / "collections.toml").write_text("".join(
            f'[collections.{name}]\ntitle = "{title}"\ncorpus_dir = "{name}"\n'
            f'index_dir = "index/{name}"\nallowed_origins = ["{site.origin}"]\n'
            f"access = {access}\n\n"
            for name, title, access in (("article", "The article", '"public"'),
                                        ("notes", "The notes", '"public"'),
                                        ("vault", "The vault", '["hr"]'))), "utf-8")
        env = {"QA_COLLECTIONS_FILE": str(root / "collections.toml"), "QA_RATE_LIMIT": "0",
               "QA_RELOAD_INTERVAL": "0", "QA_DATA_DIR": str(root / "data"),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc, service = start_service(env, root / "uvicorn.log")
        try:
            site.pages = {"/": (PAGE.format(service=service).encode(), "text/html"),
                          "/token.js": (TOKEN_JS, "text/javascript")}
            site.policy = strict_csp(service)
            yield site
        finally:
            proc.terminate()
            proc.wait(10)


def nth(page: Page, i: int, selector: str) -> Locator:
    return page.locator("cited-qa").nth(i).locator(selector)


def ask(page: Page, i: int, question: str, route: str) -> tuple[Locator, dict[str, Any],
                                                                dict[str, str]]:
    """Ask widget `i`; its new answer bubble, the API's reply and the request's headers."""
    done = nth(page, i, ".log > .m:not(.u):not([aria-busy])")
    before = done.count()
    box = nth(page, i, "textarea")
    box.fill(question)
    with page.expect_response(lambda r: r.url.endswith(route) and r.request.method == "POST"
                              ) as response:
        box.press("Enter")
    expect(done).to_have_count(before + 1)
    reply: dict[str, Any] = response.value.json()
    return done.nth(before), reply, response.value.request.all_headers()


def test_two_collections_on_one_page_and_one_without_access(
        host: HostSite, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{host.origin}/", height=1600)
    page = watch.page
    # Each panel takes its collection's title; the one the caller may not read says so.
    expect(nth(page, 0, "h2")).to_have_text("The article")
    expect(nth(page, 1, "h2")).to_have_text("The notes")
    expect(nth(page, 2, ".log .err")).to_have_text(NO_ACCESS)
    expect(nth(page, 2, "h2")).to_have_text("Ask a question")

    article, reply, headers = ask(page, 0, "Who is the head of product at Bloomberg?",
                                  "/api/collections/article/chat")
    assert reply["answered"] and {c["doc_id"] for c in reply["citations"]} == {
        "head-of-product.txt"}
    assert "authorization" not in headers  # this widget has no data-token-from
    expect(article).to_contain_text("Vlad Kliatchko")

    notes, reply, headers = ask(page, 1, "Who writes in the red ledger?",
                                "/api/collections/notes/chat")
    assert reply["answered"] and "keeper" in reply["answer"]
    assert {c["doc_id"] for c in reply["citations"]} <= set(NOTES_CORPUS)
    assert headers["authorization"].startswith("Bearer page-token-")
    # Its passages load from its own collection's routes, with a fresh token.
    notes.locator(".c").first.click()
    passage = notes.locator(".q")
    with page.expect_request(lambda r: "/api/collections/notes/documents/" in r.url) as fetched:
        passage.get_by_role("button", name="See in context").click()
    assert fetched.value.all_headers()["authorization"].startswith("Bearer page-token-")
    assert fetched.value.all_headers()["authorization"] != headers["authorization"]
    expect(passage.locator(".ok")).to_contain_text("matches the document")
    # With a token, the original is fetched with it and saved, never opened on this origin.
    with page.expect_download() as download, page.expect_request(
            lambda r: r.url.endswith("/source")) as original:
        passage.get_by_role("link", name="Open original").click()
    assert original.value.all_headers()["authorization"].startswith("Bearer page-token-")
    doc_id = reply["citations"][0]["doc_id"]
    assert download.value.suggested_filename == doc_id.rsplit("/", 1)[-1]
    assert Path(download.value.path()).read_text("utf-8") == NOTES_CORPUS[doc_id]
    # Nothing of one collection shows in the other's panel.
    expect(nth(page, 0, ".log")).not_to_contain_text("ledger")
    expect(nth(page, 1, ".log")).not_to_contain_text("Kliatchko")

    denied, _, _ = ask(page, 2, "What does the vault hold?", "/api/collections/vault/chat")
    expect(denied).to_contain_text(NO_ACCESS)
    expect(nth(page, 2, ".log")).not_to_contain_text("plans")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "two-collections.png", full_page=True)

    # Each conversation is kept under its own collection across a reload.
    page.reload()
    expect(nth(page, 0, ".log")).to_contain_text("Vlad Kliatchko")
    expect(nth(page, 1, ".log")).to_contain_text("keeper")
    expect(nth(page, 0, ".log")).not_to_contain_text("ledger")
    assert watch.violations() == []
    assert watch.dialogs == []
    # The only errors the console shows are the browser's notes on the 404s of the collection
    # this page may not read.
    assert all("404" in e for e in watch.errors), watch.errors
