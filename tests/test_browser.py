"""How `make test` finds or fetches the browser its widget tests drive (no network needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scripts.browser import NoBrowser, bundled_chromium, ensure_browser, playwright_install


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def never(cache: Path) -> str:
    raise AssertionError("nothing may be fetched when a browser is at hand")


def test_the_system_chromium_comes_first(tmp_path: Path) -> None:
    system = executable(tmp_path / "usr" / "bin" / "chromium")
    executable(tmp_path / "cache" / "chromium-1200" / "chrome-linux" / "chrome")
    said: list[str] = []
    assert ensure_browser(system, tmp_path / "cache", install=never, say=said.append) == system
    assert said == []


def test_a_fetched_chromium_is_reused_without_fetching_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    chrome = executable(cache / "chromium-1200" / "chrome-linux64" / "chrome")
    said: list[str] = []
    assert ensure_browser(tmp_path / "none", cache, install=never, say=said.append) == chrome
    assert said == []


def test_without_a_system_chromium_it_fetches_once_and_says_so(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetched: list[Path] = []

    def install(into: Path) -> str:
        fetched.append(into)
        executable(into / "chromium-1200" / "chrome-linux" / "chrome")
        return ""

    said: list[str] = []
    found = ensure_browser(tmp_path / "none", cache, install=install, say=said.append)
    assert found == cache / "chromium-1200" / "chrome-linux" / "chrome"
    assert fetched == [cache]
    assert said == [f"no {tmp_path / 'none'}: fetching Playwright's Chromium into {cache} "
                    "(once; later runs reuse it)"]
    assert ensure_browser(tmp_path / "none", cache, install=never, say=said.append) == found
    assert len(said) == 1


def test_the_newest_fetched_revision_is_used(tmp_path: Path) -> None:
    executable(tmp_path / "chromium-999" / "chrome-linux" / "chrome")
    newest = executable(tmp_path / "chromium-1200" / "chrome-linux64" / "chrome")
    (tmp_path / "chromium-1300").mkdir()  # an interrupted download: no executable
    assert bundled_chromium(tmp_path) == newest
    assert bundled_chromium(tmp_path / "absent") is None


def test_when_neither_way_works_one_message_names_both(tmp_path: Path) -> None:
    with pytest.raises(NoBrowser) as info:
        ensure_browser(tmp_path / "none", tmp_path / "cache",
                       install=lambda cache: "getaddrinfo ENOTFOUND", say=lambda line: None)
    message = str(info.value)
    assert "apt-get install -y --no-install-recommends chromium" in message
    assert "-m playwright install chromium" in message
    assert f"PLAYWRIGHT_BROWSERS_PATH={tmp_path / 'cache'}" in message
    assert message.endswith("(getaddrinfo ENOTFOUND)")


def test_the_real_installer_reports_an_unreachable_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A loopback port nothing listens on stands in for a machine without the internet.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PLAYWRIGHT_DOWNLOAD_HOST", f"http://127.0.0.1:{port}")
    problem = playwright_install(tmp_path / "cache")
    assert problem.startswith("Error") and "ECONNREFUSED" in problem
    assert bundled_chromium(tmp_path / "cache") is None
