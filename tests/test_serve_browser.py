"""The app in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright) asks a question and sees
the answer, the reasoning and the confidence, with every request the page makes staying on this machine; then one
question of each kind (a number, one with options, a work-order line for a failure code), each recorded as asked.

Skipped where Chromium or Playwright is missing (a dev machine); CI installs both (.ci/run, the `test` extra).
Set EDGEDISTILL_SCREENSHOT_DIR to keep the screenshot. The test runs the untuned packaged SmolLM2 (CI has no trained
student), whose answers are often wrong; docs/serve-screenshot.png was taken with these same steps against the
quickstart's student-Q4_K_M.gguf.
"""
import json
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
def app_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("browser-app")


@pytest.fixture(scope="module")
def app_url(app_folder):
    with serving(SMALL_GGUF, "--config", short_replies(app_folder), "--samples", "2",
                 "--feedback", str(app_folder / "feedback.jsonl"), log_path=app_folder / "app.log") as url:
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


KINDS = [   # (mode as the page names it, question, options box, what the feedback row must record)
    ("Number (calculator)", QUESTION, "", {"answer_type": "number"}),
    ("Options", "Which sensor best shows a pump bearing wearing out?", "vibration\nvoltage\nlevel",
     {"answer_type": "choice", "options": ["A. vibration", "B. voltage", "C. level"]}),
    ("Failure code", "pump not turning", "", {"answer_type": "label"}),
]


@pytest.mark.parametrize("mode, question, options, recorded", KINDS, ids=[kind[0].split()[0] for kind in KINDS])
def test_each_kind_of_question_is_answered_and_recorded_as_asked(page, app_folder, mode, question, options,
                                                                   recorded):
    """Asked in its mode, a question gets an answer and a confidence; a thumbs-up then stores it as that kind (a
    choice with its lettered options, a work-order line with the failure-code set), so the flywheel can train on
    it. The untuned test model's answers are often wrong, so the answer itself is not judged."""
    expect = sync_api.expect
    page.locator("#mode").get_by_label(mode).check()
    if options:
        page.locator("#options").get_by_role("textbox").fill(options)
    ask(page, question)
    expect(page.locator("#answer")).to_have_text(HAS_TEXT, timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#confidence")).to_contain_text(re.compile(r"\d+\s?%"), timeout=ANSWER_TIMEOUT_MS)
    page.locator("#thumbs-up").click()
    expect(page.locator("#feedback-status")).to_contain_text("saved to", timeout=30_000)
    # with a reference answer to feedback.jsonl, without one (the answer line never finished) to the unanswered file
    rows = [json.loads(line) for path in sorted(app_folder.glob("feedback*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]
    row = next((r for r in rows if question in r["question"]), None)
    assert row, f"no feedback row for {question!r} in {rows}"
    assert {key: row.get(key) for key in recorded} == recorded
    if recorded["answer_type"] == "label":
        assert "Breakdown" in row["options"] and len(row["options"]) == 22, row["options"]


def save_screenshot(page, tmp_path: Path):
    page.screenshot(path=tmp_path / "serve-screenshot.png", full_page=True)
    if os.environ.get("EDGEDISTILL_SCREENSHOT_DIR"):
        folder = Path(os.environ["EDGEDISTILL_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "serve-screenshot.png", folder / "serve-screenshot.png")
