"""The app's layout around the browser canvas at laptop and desktop sizes, and its key list.

Screenshots go to test-artifacts/ (app-1366x768.png, app-1920x1080.png, app-help.png).
"""

import os
from pathlib import Path

import pytest
from conftest import IMAGES

from annotator.testing import free_port

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("ANNOTATOR_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PRIMARY = ["#canvas .acv-toolbar [data-tool=prompt]", "#canvas .acv-toolbar [data-tool=brush]",
           "#canvas [data-act=undo]", "#canvas [data-act=redo]", "#canvas [data-act=accept]",
           "#canvas [data-act=clear_prompt]", "#canvas .acv-opacity", "#canvas .acv-help-btn",
           "#candidates", "#label", "#accept", "#clear"]
TO_PAGE = """([x, y]) => { const root = document.querySelector('#canvas .acv');
  const r = root.querySelector('canvas').getBoundingClientRect(); const [sx, sy] = root._acv.toScreen(x, y);
  return [r.left + sx, r.top + sy]; }"""


@pytest.fixture(scope="module")
def app_url(tiny_checkpoint, tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium not found at {CHROMIUM}")
    from annotator.app.ui import build_app
    from annotator.models.loading import load_segmenter

    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    demo = build_app(segmenter, info, projects_dir=tmp_path_factory.mktemp("projects"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("width, height, min_share", [(1366, 768, 0.60), (1920, 1080, 0.60)])
def test_canvas_takes_most_of_the_screen_and_primary_controls_need_no_scrolling(
        browser, app_url, width, height, min_share):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    page.goto(app_url, wait_until="load")
    page.wait_for_selector("#canvas .acv")
    page.set_input_files("#upload input[type=file]", str(IMAGES / "truck.jpg"))
    page.wait_for_function("() => document.querySelector('#status textarea').value.includes('embedding cached')")
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.img !== null")
    page.mouse.click(*page.evaluate(TO_PAGE, [900, 700]))
    page.wait_for_function("() => Number(document.querySelector('#canvas .acv').dataset.ack) >= 1")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"app-{width}x{height}.png"))
    canvas = page.locator("#canvas canvas").bounding_box()
    assert canvas["width"] >= min_share * width, canvas
    assert canvas["y"] + canvas["height"] <= height
    for sel in PRIMARY:
        box = page.locator(sel).first.bounding_box()
        assert box is not None, sel
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, f"{sel} is below the fold: {box}"
        assert box["x"] + box["width"] <= width, f"{sel} is off to the right: {box}"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width  # no sideways scrolling
    page.close()


def test_question_mark_lists_the_keys(browser, app_url):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(app_url, wait_until="load")
    page.wait_for_selector("#canvas .acv")
    help_box = page.locator("#canvas .acv-help")
    assert not help_box.is_visible()
    page.locator("#canvas canvas").hover()
    page.keyboard.press("?")
    assert help_box.is_visible()
    text = help_box.inner_text()
    for key in ("Right click", "Space+drag", "[ ]", "1-9", "Ctrl+Z", "Enter", "Esc", "Delete"):
        assert key in text, key
    page.screenshot(path=str(ARTIFACTS / "app-help.png"))
    page.keyboard.press("Escape")
    assert not help_box.is_visible()
    page.close()
