"""The UI in a real Chromium: pick a user, chat, see cards, like one, and see the next answer change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.servers import REPO, running_server

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000
PAGE_ERRORS: list[str] = []  # uncaught JavaScript errors seen by the page


def _chromium() -> str:
    path = os.environ.get("RECASSIST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Chromium not found: `apt-get install -y chromium` (or set RECASSIST_CHROMIUM to its path)")
    return path


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("browser")) as url:
        yield url


@pytest.fixture(scope="module")
def page(base_url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: PAGE_ERRORS.append(str(exc)))
        page.goto(base_url + "/", wait_until="domcontentloaded")
        page.wait_for_selector("#user-picker")
        yield page
        browser.close()


def card_titles(page) -> list[str]:
    return page.locator("#cards .rc-title").all_inner_texts()


def send(page, text: str, turn: int) -> None:
    page.locator("#msg textarea").fill(text)
    page.locator("#send").click()
    page.wait_for_selector(f"#turn-status [data-turn='{turn}'][data-state='done']")


def test_chat_like_and_the_answer_changes(page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_selector("#status-line:has-text('catalog')")
    page.locator("#user-picker label", has_text="Ana").click()
    page.wait_for_selector("#current-user:has-text('ana')")
    page.wait_for_selector("#profile-view .rc-chip")  # her interests, derived from her history

    send(page, "a witty romance", turn=1)
    first = card_titles(page)
    assert first, "cards are shown"
    assert first[0] in page.locator("#chat").inner_text()
    page.locator("#card-0-body details summary").click()
    assert page.locator("#card-0-body details").get_attribute("open") is not None

    page.locator("#card-0-like").click()
    page.wait_for_selector("#card-0-body [data-feedback='like']")

    send(page, "a witty romance", turn=2)
    second = card_titles(page)
    page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)
    assert second and second != first, "the like changed the next answer"
    assert first[0] not in second
    assert not PAGE_ERRORS, PAGE_ERRORS


def test_prompt_lab_runs_edited_and_saved_templates(page):
    page.get_by_role("tab", name="Prompt lab").click()
    page.wait_for_selector("#lab-yaml")
    page.locator("#lab-run").click()
    page.wait_for_selector("#lab-edited-cards .rc-card")
    page.wait_for_selector("#lab-saved-cards .rc-card")
    page.screenshot(path=str(ARTIFACTS / "browser-lab.png"), full_page=True)
    assert not PAGE_ERRORS, PAGE_ERRORS
