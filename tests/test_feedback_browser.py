"""Feedback in the widget and the insights page, in a real browser against a real service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from service.settings import Settings
from tests import test_widget_browser as widget_tests
from tests.conftest import ROOT, start_service
from tests.test_widget_browser import FOCUSED, WATCH_CSP, Watch, ask, open_panel, widget

# The widget tests' fixtures: Chromium for this module, and pages that record CSP violations.
browser = widget_tests.browser
open_page = widget_tests.open_page

TOKEN = "browser-insights-token-" + "z" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHOTS = ROOT / "test-output" / "feedback"


@pytest.fixture(scope="module")
def service(real_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("feedback-browser")
    env = {"QA_CORPUS_DIR": str(real_settings.corpus_dir),
           "QA_INDEX_DIR": str(real_settings.index_dir), "QA_RATE_LIMIT": "0",
           "QA_RELOAD_INTERVAL": "0", "QA_DATA_DIR": str(folder / "data"),
           "QA_ADMIN_TOKEN": TOKEN, "QA_STORE_QUESTIONS": "true",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc, origin = start_service(env, folder / "uvicorn.log")
    try:
        yield origin
    finally:
        proc.terminate()
        proc.wait(10)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def votes(service: str) -> dict[str, Any]:
    report: dict[str, Any] = httpx.get(f"{service}/api/admin/insights", headers=AUTH).json()
    return report


def test_vote_change_the_vote_and_comment(service: str,
                                          open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{service}/")
    page = watch.page
    open_panel(page)
    bubble, reply = ask(page, "Who is the head of product at Bloomberg?")
    assert len(reply["answer_id"]) == 32
    yes, no = bubble.locator(".fb button").nth(0), bubble.locator(".fb button").nth(1)
    expect(yes).to_have_text("Helpful")
    expect(no).to_have_text("Not helpful")
    expect(bubble.locator(".fb")).to_have_attribute("aria-label", "Was this answer helpful?")
    with page.expect_response(lambda r: r.url.endswith("/api/feedback")) as response:
        yes.click()
    assert response.value.status == 204
    expect(yes).to_have_attribute("aria-pressed", "true")
    expect(no).to_have_attribute("aria-pressed", "false")
    expect(bubble.locator(".fb .th")).to_have_text("Thanks for your feedback.")
    expect(widget(page, "[role=status]")).to_have_text("Thanks for your feedback.")
    shot(page, "01-helpful")
    assert (votes(service)["helpful"], votes(service)["not_helpful"]) == (1, 0)

    no.click()  # the vote changes
    expect(no).to_have_attribute("aria-pressed", "true")
    expect(yes).to_have_attribute("aria-pressed", "false")
    comment = bubble.locator(".fb textarea")
    expect(comment).to_be_visible()
    expect(comment).to_be_focused()
    comment.fill("It names the wrong person.")
    shot(page, "02-not-helpful-comment")
    with page.expect_response(lambda r: r.url.endswith("/api/feedback")) as response:
        bubble.locator(".fb div button").click()
    assert response.value.status == 204
    expect(bubble.locator(".fb .th")).to_have_text("Thanks for the comment.")
    expect(comment).to_be_hidden()
    report = votes(service)
    assert (report["helpful"], report["not_helpful"]) == (0, 1)
    assert report["not_helpful_answers"][0]["comments"] == ["It names the wrong person."]
    shot(page, "03-thanks")

    page.reload()  # the vote is remembered with the conversation (the panel stays open)
    expect(widget(page, "[role=dialog]")).to_be_visible()
    again = widget(page, ".log > .m:not(.u)").last.locator(".fb button").nth(1)
    expect(again).to_have_attribute("aria-pressed", "true")
    assert watch.violations() == [] and watch.errors == []


def test_feedback_keyboard_only(service: str, open_page: Callable[..., Watch]) -> None:
    watch = open_page(f"{service}/")
    page = watch.page
    open_panel(page)
    bubble, reply = ask(page, "What kind of school is CareerFoundry?")
    expect(widget(page, "form textarea")).to_be_focused()
    for _ in range(10):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("() => document.activeElement.shadowRoot.activeElement"
                         ".textContent") == "Not helpful":
            break
    else:
        pytest.fail("Not helpful is not reachable with the keyboard")
    with page.expect_response(lambda r: r.url.endswith("/api/feedback")):
        page.keyboard.press("Enter")
    comment = bubble.locator(".fb textarea")
    expect(comment).to_be_focused()
    page.keyboard.type("Too short.")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) == "button."
    with page.expect_response(lambda r: r.url.endswith("/api/feedback")) as response:
        page.keyboard.press("Enter")
    assert response.value.status == 204
    expect(widget(page, "[role=status]")).to_have_text("Thanks for the comment.")
    page.keyboard.press("Shift+Tab")  # focus went back to "Not helpful"; the other is before
    page.keyboard.press("Enter")
    expect(bubble.locator(".fb button").first).to_have_attribute("aria-pressed", "true")
    shot(page, "04-keyboard")
    assert watch.violations() == [] and watch.errors == []


@pytest.mark.parametrize("width", [1280, 375])
def test_insights_page_renders_plots_under_a_strict_csp(service: str, browser: Browser,
                                                        width: int) -> None:
    for q in ("Who is the head of product at Bloomberg?", "What is a chief product officer?",
              "How do I bake banana bread?", "How to bake a banana bread",
              "What is the capital of Peru?"):
        answer_id = httpx.post(f"{service}/api/ask", json={"question": q}).json()["answer_id"]
        httpx.post(f"{service}/api/feedback", json={"answer_id": answer_id,
                                                     "helpful": "Peru" not in q})
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        response = page.goto(f"{service}/admin/insights")
        assert response is not None and response.status == 401
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "unsafe" not in policy
        page.fill("#token", TOKEN)
        page.click("button")
        expect(page.locator("h1")).to_have_text("Insights")
        assert "token" not in page.url and page.url.endswith("/admin/insights")
        plots = page.locator("figure svg")
        expect(plots).to_have_count(3)
        expect(plots.nth(0).locator("rect").first).to_be_visible()
        assert plots.nth(0).bounding_box()["width"] <= width  # type: ignore[index]
        expect(page.locator("text=wordings").first).to_be_visible()  # grouped by meaning
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        shot(page, f"05-insights-{width}")
        assert page.evaluate("() => window.__csp") == []
        assert errors == []
        page.select_option("select[name=days]", "7")
        page.click("form.period button")
        expect(page.locator("figure svg")).to_have_count(3)
        assert "days=7" in page.url
    finally:
        context.close()

