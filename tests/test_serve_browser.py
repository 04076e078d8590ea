"""The app in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright) asks a question and sees
the answer, the reasoning and the confidence, with every request the page makes staying on this machine.

Skipped where Chromium or Playwright is missing (a dev machine); CI installs both (.ci/run, the `test` extra).
Set EDGEDISTILL_SCREENSHOT_DIR to keep the screenshot. The test runs the untuned packaged SmolLM2 (CI has no trained
student), whose answers are often wrong; docs/serve-screenshot.png was taken with these same steps against the
quickstart's student-Q4_K_M.gguf.
"""
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from edgedistill.serve.process import serving
from tests.test_serve_offline import QUESTION, SMALL_GGUF, short_replies

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[test]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium: apt-get install chromium chromium-driver "
                                                          "(.ci/run does; Playwright's own browser download is not used)")

ANSWER_TIMEOUT_MS = 300_000      # the whole reply: about 15 s on an idle 2-core machine, minutes on a shared busy one
HAS_TEXT = re.compile(r"\S")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-app")
    with serving(SMALL_GGUF, "--config", short_replies(folder), "--samples", "2",
                 "--feedback", str(folder / "feedback.jsonl"), log_path=folder / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh tab on the app; `page.requests` lists every URL it asked for."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(app_url)
    # not wait_until="networkidle": Chromium leaves some preloaded modules looking in flight, so it never comes
    sync_api.expect(page.locator("#ask")).to_be_enabled(timeout=30_000)
    yield page
    page.close()


def ask(page, question: str):
    page.locator("#question").get_by_role("textbox").fill(question)
    page.locator("#ask").click()


def test_question_shows_answer_reasoning_and_confidence(page, app_url, tmp_path):
    expect = sync_api.expect
    ask(page, QUESTION)
    expect(page.locator("#answer")).to_have_text(HAS_TEXT, timeout=ANSWER_TIMEOUT_MS)
    # the reasoning sits in a collapsed accordion, opened by its header (the one button inside it)
    expect(page.locator("#rationale")).to_be_hidden()
    page.locator("#reasoning").get_by_role("button").first.click()
    expect(page.locator("#rationale")).to_have_text(HAS_TEXT, timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#confidence")).to_contain_text(re.compile(r"\d+\s?%"), timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#status")).not_to_contain_text(HAS_TEXT)
    save_screenshot(page, tmp_path)

    app = urlsplit(app_url).netloc
    elsewhere = [url for url in page.requests if urlsplit(url).scheme not in ("data", "blob")
                 and urlsplit(url).netloc != app]
    assert page.requests and elsewhere == [], f"the page fetched from other hosts (CDN, web fonts?): {elsewhere}"


def test_too_long_question_is_refused_with_a_message(page):
    ask(page, "How many housings? " * 106)      # 2013 characters once stripped: over the app's default cap of 2000
    sync_api.expect(page.locator("#status")).to_contain_text(re.compile(r"long|2[,.]?000|characters", re.I),
                                                             timeout=30_000)
    assert not HAS_TEXT.search(page.locator("#answer").inner_text()), "a refused question still got an answer"


def save_screenshot(page, tmp_path: Path):
    page.screenshot(path=tmp_path / "serve-screenshot.png", full_page=True)
    if os.environ.get("EDGEDISTILL_SCREENSHOT_DIR"):
        folder = Path(os.environ["EDGEDISTILL_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "serve-screenshot.png", folder / "serve-screenshot.png")
