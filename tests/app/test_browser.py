"""The app in a real browser: Debian chromium driven by Python playwright.

The app runs in-process on a free port with a small random SAM, so tests can check the
server-side document as well as the page. Screenshots go to test-artifacts/. Without
chromium these tests are skipped, unless ANNOTATOR_REQUIRE_BROWSER=1 (CI), where that fails.
"""

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGES

from annotator.testing import CHROMIUM, CHROMIUM_ARGS, free_port

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = list(CHROMIUM_ARGS)
TIMEOUT_MS = 60_000

# The canvas draws in the browser (annotator/app/ui/canvas): the page position of an image
# pixel comes from its own view transform; a pixel as seen is read from the drawn canvas.
TO_PAGE = """([x, y]) => { const root = document.querySelector('#canvas .acv');
  const r = root.querySelector('canvas').getBoundingClientRect(); const [sx, sy] = root._acv.toScreen(x + 0.5, y + 0.5);
  return [r.left + sx, r.top + sy]; }"""
SEEN = """([x, y]) => { const root = document.querySelector('#canvas .acv'); const c = root.querySelector('canvas');
  const [sx, sy] = root._acv.toScreen(x + 0.5, y + 0.5); const d = window.devicePixelRatio || 1;
  return Array.from(c.getContext('2d').getImageData(Math.floor(sx * d), Math.floor(sy * d), 1, 1).data.slice(0, 3)); }"""
# the number of the last frame the canvas applied ('' before the first)
FRAME = "() => { const r = document.querySelector('#canvas .acv'); return r ? r.dataset.frame || '' : ''; }"
# the canvas shows an image (of size [w, h] when given)
SHOWN = """size => { const r = document.querySelector('#canvas .acv'); const img = r && r._acv.state.img;
  return !!img && (!size || (img.W === size[0] && img.H === size[1])); }"""


def wait_shown(page, size=None) -> None:
    """Wait until the canvas shows an image (of ``size`` (w, h) when given)."""
    page.wait_for_function(SHOWN, arg=size)


def wait_tool(page, tool: str) -> None:
    """Wait until the canvas's tool (a prompt mode, select, brush or eraser) is ``tool``."""
    page.wait_for_function("t => document.querySelector('#canvas .acv').dataset.tool === t", arg=tool)


def _chromium_or_skip():
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    reason = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("ANNOTATOR_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; ANNOTATOR_REQUIRE_BROWSER=1 requires the browser tests to run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def app(tiny_checkpoint, tmp_path_factory):
    from annotator.app.ui import build_app, launch_kwargs
    from annotator.models.loading import load_segmenter

    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    demo = build_app(segmenter, info, projects_dir=tmp_path_factory.mktemp("projects"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    path = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app, request):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 960}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app[1])
    page.wait_for_selector("#canvas")
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"))
    context.close()


class Canvas:
    """Clicks on image pixels of the canvas, waiting for the server's next frame each time."""

    def __init__(self, page):
        self.page = page

    def src(self) -> str:
        """What the canvas shows now (the number of its last frame)."""
        return self.page.evaluate(FRAME)

    def wait_changed(self, old: str) -> None:
        self.page.wait_for_function(f"() => ({FRAME})() !== {old!r}")

    def at(self, x: float, y: float) -> list[float]:
        """Page coordinates of an image pixel, once the layout has settled (the side panel
        may change width as its table fills, and the canvas then fits the image again)."""
        where = self.page.evaluate(TO_PAGE, [x, y])
        for _ in range(50):
            self.page.wait_for_timeout(40)
            again = self.page.evaluate(TO_PAGE, [x, y])
            if again == where:
                return where
            where = again
        return where

    def click(self, x: float, y: float, wait: bool = True, **kwargs) -> None:
        wait_shown(self.page)
        old = self.src()
        self.page.mouse.click(*self.at(x, y), **kwargs)
        if wait:
            self.wait_changed(old)

    def drag(self, x0: float, y0: float, x1: float, y1: float) -> None:
        old = self.src()
        self.page.mouse.move(*self.at(x0, y0))
        self.page.mouse.down()
        self.page.mouse.move(*self.at(x1, y1), steps=3)
        self.page.mouse.up()
        self.wait_changed(old)

    def pixel(self, x: int, y: int) -> list[int]:
        """The RGB the page shows at image pixel (x, y)."""
        return self.page.evaluate(SEEN, [x, y])


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def message(page) -> str:
    return page.locator("#message textarea").input_value()


ID_CELLS = "#masks-table [role=gridcell][data-col='1']"  # the table's id column (rows are virtualised)


def table_ids(page) -> list[int]:
    cells = page.locator(ID_CELLS).all_inner_texts()
    return [int(c) for c in (c.strip() for c in cells) if c.isdigit()]


def wait_rows(page, n: int) -> None:
    page.wait_for_function(
        """([sel, n]) => Array.from(document.querySelectorAll(sel))
                 .filter(td => /^\\d+$/.test(td.innerText.trim())).length === n""",
        arg=[ID_CELLS, n],
    )


def wait_ids(page, ids: list[int]) -> None:
    """Wait until the table lists exactly ``ids`` (in order)."""
    page.wait_for_function(
        """([sel, ids]) => JSON.stringify(Array.from(document.querySelectorAll(sel))
                 .map(td => td.innerText.trim()).filter(t => t !== '')) === JSON.stringify(ids)""",
        arg=[ID_CELLS, [str(i) for i in ids]],
    )


def open_project(page, name: str) -> None:
    """Open (or create) the project ``name`` from the Project tab, as a person does."""
    page.get_by_role("tab", name="Project").click()
    box = page.locator("#project-name input")
    box.fill(name)
    box.press("Enter")
    page.locator("#open-project").click()


def wait_status(page, text: str) -> None:
    page.wait_for_function("t => document.querySelector('#status textarea').value.includes(t)", arg=text)


def wait_message(page, text: str) -> None:
    page.wait_for_function("t => document.querySelector('#message textarea').value.includes(t)", arg=text)


def session_showing(demo, name: str):
    """The server-side session that most recently opened ``name`` (sessions are keyed by
    the page's hash, which the page does not expose)."""
    wb = demo.workbench
    keys = [k for k in wb.sessions.keys() if getattr(wb.sessions.peek(k), "name", None) == name]
    assert keys, f"no session shows {name}"
    return wb.session(keys[-1])


# The canvas as drawn now, kept to compare a pixel with after a change (BEFORE reads it).
SNAPSHOT = """() => { const c = document.querySelector('#canvas canvas');
  window.__before = c.getContext('2d').getImageData(0, 0, c.width, c.height); }"""
BEFORE = """([x, y]) => { const root = document.querySelector('#canvas .acv'); const p = window.__before;
  const [sx, sy] = root._acv.toScreen(x + 0.5, y + 0.5); const d = window.devicePixelRatio || 1;
  const i = (Math.floor(sy * d) * p.width + Math.floor(sx * d)) * 4; return Array.from(p.data.slice(i, i + 3)); }"""


# Records, from now on, the texts the progress box shows and how often the canvas changes.
RECORD_UPDATES = """() => {
  window.__seen = {progress: [], canvas: 0};
  const box = document.querySelector('#amg-progress');
  new MutationObserver(() => { const t = box.innerText; const p = window.__seen.progress;
    if (p[p.length - 1] !== t) { p.push(t); } })
    .observe(box, {subtree: true, childList: true, characterData: true});
  const canvas = document.querySelector('#canvas .acv');
  new MutationObserver(() => { window.__seen.canvas += 1; })
    .observe(canvas, {attributes: true, attributeFilter: ['data-frame']});
}"""


def _topmost_depth(doc):
    import cv2

    from annotator.annotations.render import label_map_from_rles

    anns = doc.annotations
    labels = label_map_from_rles([a.rle for a in anns], doc.size)
    for k, a in enumerate(anns, start=1):
        region = (labels == k).astype(np.uint8)
        dist = cv2.distanceTransform(np.pad(region, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        yield a.id, float(dist[y, x]), (int(x), int(y))


def pickable(doc) -> list[int]:
    """Ids of masks a click can pick (topmost somewhere, 3+ px from that region's edge),
    deepest first."""
    found = sorted(((d, i) for i, d, _ in _topmost_depth(doc) if d >= 3), reverse=True)
    assert len(found) >= 2, f"fewer than two pickable masks: {found}"
    return [i for _, i in found]


def interior_pixel(doc, ann_id) -> tuple[int, int]:
    """A pixel where ``ann_id`` is the topmost mask, as deep inside that region as possible
    (so a click a pixel off still lands on it)."""
    ((depth, xy),) = [(d, xy) for i, d, xy in _topmost_depth(doc) if i == ann_id]
    assert depth >= 3, f"mask {ann_id} has no pixel 3 px from its edge"
    return xy


def test_newcomer_path(app, page, tmp_path):
    demo, _ = app
    canvas = Canvas(page)
    shot(page, "01-empty")

    # upload a real photo
    page.locator("#upload input[type=file]").set_input_files(str(IMAGES / "truck.jpg"))
    wait_status(page, "embedding cached")
    wait_shown(page, [1800, 1200])
    sess = session_showing(demo, "truck.jpg")
    shot(page, "02-uploaded")

    # a positive point: a mask appears on the image, with SAM's 3 candidates
    plain = canvas.pixel(*(900, 700))
    page.evaluate(SNAPSHOT)  # the whole canvas as drawn before the click
    requests = []
    listener = lambda r: requests.append(r.url)  # noqa: E731 (playwright tags the handler)
    page.on("request", listener)
    canvas.click(900, 700)
    wait_message(page, "positive point added")
    page.remove_listener("request", listener)
    # the click went straight to the server (a component server call, outside Gradio's
    # queue); the message and the candidates caught up through the page's event after it
    calls = [u.split("/gradio_api/")[1] for u in requests if "/gradio_api/" in u]
    assert calls and calls[0].startswith("component_server"), calls
    assert page.locator("#candidates input[type=radio]").count() == 3
    # the click arrives in image pixels (within a screen pixel: the page shows it at ~40%)
    assert np.allclose(sess.prompt.points[0], (900, 700), atol=3)
    mask = sess.prompt.mask
    ys, xs = np.nonzero(mask)
    k = len(xs) // 2
    inside = (int(xs[k]), int(ys[k]))
    assert canvas.pixel(*inside) != page.evaluate(BEFORE, list(inside))  # tinted by the candidate mask
    shot(page, "03-point")
    # the pixel read works: before the click it read the photo itself (JPEG-close)
    assert np.abs(np.subtract(plain, sess.image[700, 900], dtype=int)).max() <= 24, (plain, sess.image[700, 900])
    page.keyboard.press("Enter")  # accept (shortcut)
    wait_rows(page, 1)
    # nothing of the image or masks is kept in the browser's storage (Gradio's run history
    # would store every frame, and rewrite it all at each update)
    stored = page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('gradio:run-history'))")
    assert stored == [], stored

    # a box from two clicks, switched to with the B key
    page.keyboard.press("b")
    wait_tool(page, "box")
    canvas.click(200, 250)
    wait_message(page, "first corner")
    canvas.click(700, 800)
    wait_message(page, "box set")
    assert np.allclose(sess.prompt.box, (200, 250, 700, 800), atol=3)
    assert page.locator("#candidates input[type=radio]").count() == 1
    shot(page, "04-box")
    page.locator("#label input, #label textarea").first.fill("truck")
    page.locator("#accept").click()
    wait_rows(page, 2)
    assert sess.doc.annotations[-1].label == "truck"
    shot(page, "05-accepted")

    # segment everything on a small grid: progress shows, masks appear batch by batch
    page.get_by_role("tab", name="Segment everything").click()
    for elem, value in (
        ("points-per-side", 4),
        ("points-per-batch", 4),
        ("pred-iou-thresh", 0),
        ("stability-score-thresh", 0),
    ):
        box = page.locator(f"#{elem} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.wait_for_function("() => document.querySelector('#points-per-side input[type=number]').value == 4")
    page.evaluate(RECORD_UPDATES)
    page.locator("#run-amg").click()
    wait_message(page, "Segment everything found")
    seen = page.evaluate("() => window.__seen")
    assert any("Segment everything" in text and "%" in text for text in seen["progress"]), seen["progress"]
    assert seen["canvas"] >= 3, seen  # the canvas changed while batches were still coming
    auto = [a for a in sess.doc.annotations if a.source == "auto"]
    assert auto and all(a.review == "pending" for a in auto)
    wait_ids(page, [a.id for a in sess.doc.annotations])
    shot(page, "06-segment-everything")
    # review with the keyboard: J goes to the first mask in the table, Y accepts it
    page.keyboard.press("j")
    wait_message(page, "Reviewing mask")
    reviewed = sess.cursor
    page.keyboard.press("y")
    wait_message(page, "accepted")
    assert sess.doc[reviewed].review == "accepted"

    # select mode: clicking a mask selects it; merge two, delete one, undo
    first, second = pickable(sess.doc)[:2]
    page.keyboard.press("s")
    wait_tool(page, "select")
    # (the message is the signal here: selecting the mask under review looks the same)
    canvas.click(*interior_pixel(sess.doc, second), wait=False)
    wait_message(page, f"Mask {second} selected")
    canvas.click(*interior_pixel(sess.doc, first), wait=False)
    wait_message(page, f"Mask {first} selected")
    assert sess.doc.selection == {first, second}
    shot(page, "07-two-selected")
    before = len(sess.doc)
    page.keyboard.press("m")
    wait_message(page, "Merged")
    (merged,) = sess.doc.selected()
    assert set(sess.doc[merged].parents) == {first, second} and len(sess.doc) == before - 1
    wait_ids(page, sorted(sess.doc.ids))
    shot(page, "08-merged")
    page.keyboard.press("Delete")
    wait_message(page, "Deleted")
    assert merged not in sess.doc
    wait_ids(page, sorted(sess.doc.ids))
    page.keyboard.press("Control+z")
    wait_message(page, "Undid")
    assert merged in sess.doc
    wait_ids(page, sorted(sess.doc.ids))
    shot(page, "09-undo")
    # a click on a table row toggles that mask's selection
    selected = set(sess.doc.selection)
    page.locator(ID_CELLS).filter(has_text=re.compile(rf"^\s*{merged}\s*$")).first.click()
    wait_message(page, f"Mask {merged} {'deselected' if merged in selected else 'selected'}")
    assert sess.doc.selection == selected ^ {merged}

    # export COCO and load the downloaded file with pycocotools
    page.get_by_role("tab", name="Export / import").click()
    page.locator("#export").click()
    page.wait_for_function("() => !document.querySelector('#download-coco').disabled")
    with page.expect_download() as download:
        page.locator("#download-coco").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "truck_coco.json"
    from pycocotools.coco import COCO

    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds())
    assert sorted(a["annotator_id"] for a in anns) == sorted(sess.doc.ids)
    (ann,) = [a for a in anns if a["annotator_id"] == merged]
    assert np.array_equal(coco.annToMask(ann).astype(bool), sess.doc[merged].mask())
    shot(page, "10-exported")


def test_an_example_image_opens_with_one_click(app, page):
    page.get_by_role("tab", name="Image").click()
    page.locator("#examples").get_by_text("tabletop", exact=True).click()
    wait_status(page, "tabletop.jpg 1200x800")
    wait_shown(page, [1200, 800])
    shot(page, "example-opened")


def test_closing_the_tab_frees_the_session(app, browser):
    demo, url = app
    wb = demo.workbench
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    before = set(wb.sessions.keys())
    page.goto(url)
    page.wait_for_selector("#canvas")
    wait_status(page, "no image")
    (key,) = [k for k in wb.sessions.keys() if k not in before]
    page.close()
    deadline = time.monotonic() + 10
    while key in wb.sessions and time.monotonic() < deadline:
        time.sleep(0.1)
    context.close()
    assert key not in wb.sessions


PROGRESS_CELLS = "#progress-table [role=gridcell]"


def progress_rows(page) -> list[list[str]]:
    """The project's image list as shown: rows of (marker, #, image, status, masks, accepted)."""
    cells = [c.strip() for c in page.locator(PROGRESS_CELLS).all_inner_texts()]
    return [cells[k : k + 6] for k in range(0, len(cells) - len(cells) % 6, 6)]


def wait_progress(page, expected: list[list[str]]) -> None:
    """Wait until the image list shows (image, status, masks) for each row, in order."""
    page.wait_for_function(
        """([sel, want]) => {
             const c = Array.from(document.querySelectorAll(sel)).map(td => td.innerText.trim());
             const got = [];
             for (let k = 0; k + 6 <= c.length; k += 6) { got.push([c[k + 2], c[k + 3], c[k + 4]]); }
             return JSON.stringify(got) === JSON.stringify(want); }""",
        arg=[PROGRESS_CELLS, expected],
    )


def test_a_reloaded_page_finds_its_project_image_and_masks(app, page):
    demo, _ = app
    canvas = Canvas(page)
    open_project(page, "browser-test")
    wait_message(page, "Project browser-test is empty")
    page.locator("#add-images input[type=file]").set_input_files([str(IMAGES / "dog.jpg"), str(IMAGES / "truck.jpg")])
    wait_status(page, "dog.jpg 800x534 · embedding cached")
    wait_progress(page, [["dog.jpg", "pending", "0"], ["truck.jpg", "pending", "0"]])
    wait_shown(page)
    shot(page, "project-01-added")

    canvas.click(300, 300)
    wait_message(page, "positive point added")
    page.keyboard.press("Enter")
    wait_progress(page, [["dog.jpg", "pending", "1"], ["truck.jpg", "pending", "0"]])
    # next image with the key; the image list marks it
    old = canvas.src()
    page.keyboard.press(".")
    wait_status(page, "truck.jpg 1800x1200 · embedding cached")
    canvas.wait_changed(old)
    wait_progress(page, [["dog.jpg", "pending", "1"], ["truck.jpg", "pending", "0"]])
    assert [r[0] for r in progress_rows(page)] == ["", "▶"]
    canvas.click(900, 600)
    wait_message(page, "positive point added")
    page.locator("#label input, #label textarea").first.fill("truck")
    page.keyboard.press("Enter")
    wait_progress(page, [["dog.jpg", "pending", "1"], ["truck.jpg", "pending", "1"]])
    page.locator("#image-done").click()
    wait_progress(page, [["dog.jpg", "pending", "1"], ["truck.jpg", "done", "1"]])
    sess = session_showing(demo, "truck.jpg")
    before = [a.to_record() for a in sess.doc.annotations]
    shot(page, "project-02-before-reload")

    page.reload()
    page.wait_for_selector("#canvas")
    # the new page (a new session) reopens the project at the same image, with its masks
    wait_status(page, "project browser-test: image 2/2 (done)")
    wait_status(page, "truck.jpg 1800x1200 · embedding cached")
    wait_shown(page)
    page.get_by_role("tab", name="Masks").click()
    wait_rows(page, 1)
    assert page.locator("#image-nav").is_visible()
    restored = session_showing(demo, "truck.jpg")
    assert restored is not sess and [a.to_record() for a in restored.doc.annotations] == before
    assert restored.doc.annotations[0].label == "truck"
    page.get_by_role("tab", name="Project").click()
    wait_progress(page, [["dog.jpg", "pending", "1"], ["truck.jpg", "done", "1"]])
    assert page.locator("#project-name input").input_value() == "browser-test"
    # the masks are drawn: a pixel inside the accepted mask differs from the photo
    ys, xs = np.nonzero(restored.doc.annotations[0].mask())
    k = len(xs) // 2
    drawn = canvas.pixel(int(xs[k]), int(ys[k]))
    assert drawn != restored.image[ys[k], xs[k]].tolist()
    # (drawn at about half size, a pixel is smoothed anyway: hiding the masks must change it)
    page.locator("#canvas .acv-hide").check()
    page.wait_for_timeout(100)
    assert canvas.pixel(int(xs[k]), int(ys[k])) != drawn
    page.locator("#canvas .acv-hide").uncheck()
    shot(page, "project-03-after-reload")
    # and the previous image is one key away, with its mask
    page.keyboard.press(",")
    wait_status(page, "dog.jpg 800x534")
    wait_progress(page, [["dog.jpg", "pending", "1"], ["truck.jpg", "done", "1"]])
    assert [r[0] for r in progress_rows(page)] == ["▶", ""]
