"""The annotation canvas in headless chromium, in a small demo app (tests/app/canvas_demo.py).

The demo segments without a model (a point makes a disc), so these tests measure what the
canvas does: where clicks land at any zoom, boxes, negative points, pan, brush and eraser
edits, view changes drawn without a request, class colours, full-resolution crops.
"""

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from canvas_demo import DISC, build_demo
from PIL import Image

from annotator.annotations.classes import ClassList
from annotator.testing import CHROMIUM, CHROMIUM_ARGS, free_port

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = list(CHROMIUM_ARGS)
TIMEOUT_MS = 30_000
MARK = (1203, 301)  # top-left of a 6x6 red square in the test image
CLASSES = ClassList().add("person", color="#ff0000").add("car", color="#00ff00")

# page coordinates of an image pixel, from the canvas's own view transform
TO_PAGE = """([x, y]) => { const root = document.querySelector('#canvas .acv');
  const r = root.querySelector('canvas').getBoundingClientRect(); const [sx, sy] = root._acv.toScreen(x, y);
  return [r.left + sx, r.top + sy]; }"""
# RGBA of the canvas at an image pixel (what the user sees there)
SEEN = """([x, y]) => { const root = document.querySelector('#canvas .acv'); const c = root.querySelector('canvas');
  const [sx, sy] = root._acv.toScreen(x + 0.5, y + 0.5); const d = window.devicePixelRatio || 1;
  return Array.from(c.getContext('2d').getImageData(Math.floor(sx * d), Math.floor(sy * d), 1, 1).data); }"""
STATE = "() => { const s = document.querySelector('#canvas .acv')._acv.state; return {k: s.k, ox: s.ox, oy: s.oy}; }"


def make_image(h=1000, w=1600):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([40 + xx * 60 // w, 60 + yy * 80 // h, 120 + (xx + yy) * 60 // (w + h)], -1).astype(np.uint8)
    img[MARK[1] : MARK[1] + 6, MARK[0] : MARK[0] + 6] = (255, 0, 0)
    return img


def big_image():
    img = np.full((4000, 6000, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:200, 0:200]
    img[2000:2200, 3000:3200] = (((xx + yy) % 2) * 255)[..., None].astype(np.uint8)  # 1-pixel checkerboard
    return img


def _chromium():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("ANNOTATOR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"chromium not found at {CHROMIUM}")
        pytest.skip(f"chromium not found at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        yield b
        b.close()


def _serve(image, classes=None):
    blocks, state = build_demo(image, classes)
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return blocks, state, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def demo():
    blocks, state, url = _serve(make_image(), CLASSES)
    yield state, url
    blocks.close()


def _open(browser, state, url, viewport=(1200, 820)):
    state.sessions.clear()
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#canvas .acv[data-frame]")
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.img !== null")
    return page


@pytest.fixture
def page(browser, demo):
    state, url = demo
    page = _open(browser, state, url)
    yield page
    page.close()


def session(state):
    (s,) = state.sessions.values()
    return s


def wait_ack(page, seq):
    page.wait_for_function(f"() => Number(document.querySelector('#canvas .acv').dataset.ack) >= {seq}")


def wait_all(page):
    """Until the server has acknowledged every action the canvas sent."""
    page.wait_for_function(
        "() => { const r = document.querySelector('#canvas .acv'); return Number(r.dataset.ack) >= r._acv.state.seq; }"
    )


def press(page, selector):
    """Click a page button that answers with a frame, and wait for it."""
    frame = page.eval_on_selector("#canvas .acv", "e => Number(e.dataset.frame || 0)")
    page.click(selector)
    page.wait_for_function(f"() => Number(document.querySelector('#canvas .acv').dataset.frame) > {frame}")


def kinds(state, *types):
    """The actions the demo applied, of these types."""
    return [a for a in session(state).log if a["type"] in types]


def at(page, x, y):
    return page.evaluate(TO_PAGE, [x, y])


def click_image(page, x, y, **kw):
    page.mouse.click(*at(page, x, y), **kw)


def drawn_pixels(page) -> np.ndarray:
    """The canvas's own pixels (RGB, CSS pixels at device pixel ratio 1), without what lies
    over it (the legend)."""
    url = page.eval_on_selector("#canvas canvas", "c => c.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_wheel_zoom_then_a_click_lands_on_the_image_pixel_under_it(page, demo):
    state, _ = demo
    k0 = page.evaluate(STATE)["k"]
    page.mouse.move(*at(page, MARK[0] + 3, MARK[1] + 3))
    for _ in range(4):
        page.mouse.wheel(0, -400)
    page.wait_for_function(f"() => Number(document.querySelector('#canvas .acv').dataset.zoom) > {k0 * 5}")
    page.wait_for_timeout(100)
    # find the red square on screen the way a person would: by looking at what is drawn
    pixels = drawn_pixels(page).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    ys, xs = np.nonzero(red)
    assert xs.size > 100, "the zoomed-in red square should cover many screen pixels"
    k = page.evaluate(STATE)["k"]
    assert 5 * k - 2 <= xs.max() - xs.min() + 1 <= 6 * k + 2  # the square is 6 image pixels wide (JPEG edges)
    box = page.locator("#canvas canvas").bounding_box()
    page.mouse.click(box["x"] + xs.mean(), box["y"] + ys.mean())
    wait_ack(page, 1)
    (point,) = kinds(state, "point")
    assert MARK[0] <= point["x"] < MARK[0] + 6 and MARK[1] <= point["y"] < MARK[1] + 6
    assert abs(point["x"] - (MARK[0] + 3)) < 1 and abs(point["y"] - (MARK[1] + 3)) < 1
    page.screenshot(path=str(ARTIFACTS / "canvas_zoomed_click.png"))


def test_drag_draws_a_box_and_its_mask_is_drawn(page, demo):
    state, _ = demo
    before, before_outside = page.evaluate(SEEN, [600, 500]), page.evaluate(SEEN, [1200, 900])
    page.mouse.move(*at(page, 300, 200))
    page.mouse.down()
    page.mouse.move(*at(page, 600, 500), steps=2)
    page.mouse.move(*at(page, 900, 800), steps=2)
    page.mouse.up()
    wait_ack(page, 1)
    k = page.evaluate(STATE)["k"]
    s = session(state)
    assert np.allclose(s.box, [300, 200, 900, 800], atol=1 / k + 0.01)
    assert [a["type"] for a in s.log] == ["box"]
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.promptMask !== null")
    page.wait_for_timeout(100)
    inside, outside = page.evaluate(SEEN, [600, 500]), page.evaluate(SEEN, [1200, 900])
    assert inside[2] > before[2] + 20 and inside[0] < before[0]  # tinted prompt blue
    assert outside == before_outside  # outside the box nothing changed


def test_the_candidate_comes_at_the_screens_scale_and_sharper_after_zooming_in(page, demo):
    state, _ = demo
    x, y = 800, 500
    click_image(page, x, y)
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.promptMask !== null")
    k = page.evaluate(STATE)["k"]
    m = page.evaluate("() => document.querySelector('#canvas .acv')._acv.state.prompt.mask")
    assert k < 0.9 and abs(m["fw"] - 1600 * k) <= 2  # what the screen shows, not the 1600 px image
    inside = page.evaluate(SEEN, [x + 0.6 * DISC, y])  # drawn where the disc is, at this scale too
    assert inside[2] > inside[0] + 40
    page.mouse.move(*at(page, x, y))
    for _ in range(3):
        page.mouse.wheel(0, -400)
    page.wait_for_function(
        "() => { const s = document.querySelector('#canvas .acv')._acv.state; "
        "return s.promptMask !== null && s.prompt.mask.fw === 1600; }"
    )
    assert kinds(state, "scale") and len(kinds(state, "point")) == 1  # asked again, no new prompt
    edge = page.evaluate(SEEN, [x + DISC - 1.5, y]), page.evaluate(SEEN, [x + DISC + 1.5, y])
    assert edge[0][2] > edge[1][2] + 40  # the disc's edge is where it is, to the image pixel
    page.screenshot(path=str(ARTIFACTS / "canvas_zoomed_candidate.png"))


def test_right_click_and_alt_click_are_negative_and_a_click_on_a_point_removes_it(page, demo):
    state, _ = demo
    click_image(page, 400, 400)
    click_image(page, 420, 400, button="right")
    page.keyboard.down("Alt")
    click_image(page, 440, 400)
    page.keyboard.up("Alt")
    wait_ack(page, 3)
    s = session(state)
    assert [(a["type"], a.get("mode")) for a in s.log] == [
        ("point", "positive"),
        ("point", "negative"),
        ("point", "negative"),
    ]
    assert s.labels == [1, 0, 0]
    click_image(page, 420, 400)  # on the negative point: removes it, adds nothing
    wait_ack(page, 4)
    assert s.log[-1] == {"seq": 4, "type": "remove_point", "index": 1}
    assert s.labels == [1, 0] and s.points[1] == pytest.approx((440, 400), abs=1)
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.prompt.points.length === 2")


def test_pan_with_space_or_middle_button_and_zoom_keys(page):
    v0 = page.evaluate(STATE)
    x, y = at(page, 800, 500)
    page.mouse.move(x, y)
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(x + 100, y + 50, steps=3)
    page.mouse.up()
    page.keyboard.up(" ")
    v1 = page.evaluate(STATE)
    assert (v1["ox"] - v0["ox"], v1["oy"] - v0["oy"]) == pytest.approx((100, 50), abs=0.5)
    page.mouse.move(x, y)
    page.mouse.down(button="middle")
    page.mouse.move(x - 40, y - 30, steps=3)
    page.mouse.up(button="middle")
    v2 = page.evaluate(STATE)
    assert (v2["ox"] - v1["ox"], v2["oy"] - v1["oy"]) == pytest.approx((-40, -30), abs=0.5)
    page.keyboard.press("+")
    assert page.evaluate(STATE)["k"] == pytest.approx(v0["k"] * 1.25)
    page.keyboard.press("-")
    page.keyboard.press("-")
    assert page.evaluate(STATE)["k"] == pytest.approx(v0["k"] / 1.25)
    page.keyboard.press("0")
    assert page.evaluate(STATE) == pytest.approx(v0)  # fit again, centred


def _accepted_disc(page, state, x=800, y=500):
    click_image(page, x, y)
    wait_all(page)
    press(page, "#accept")
    s = session(state)
    (ann,) = s.doc.annotations
    return s, ann


def test_with_no_mask_left_the_image_shows_bare_and_coverage_still_paints(page, demo):
    """With nothing to overlay the canvas skips its layers: once the only mask is undone its
    colour is gone; the coverage map (all of an image without masks) still paints."""
    state, _ = demo
    page.mouse.move(10, 10)
    bare = page.evaluate(SEEN, [800, 500])
    _accepted_disc(page, state)
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.layers.length > 0")
    page.wait_for_timeout(100)
    assert page.evaluate(SEEN, [800, 500]) != bare

    def painted_after(change):
        paints = int(page.eval_on_selector("#canvas .acv", "e => e.dataset.paints"))
        change()
        page.wait_for_function(f"() => Number(document.querySelector('#canvas .acv').dataset.paints) > {paints}")

    painted_after(lambda: press(page, "#undo"))
    page.wait_for_function("() => document.querySelector('#canvas .acv')._acv.state.layers.length === 0")
    page.wait_for_timeout(100)
    assert page.evaluate(SEEN, [800, 500]) == bare
    painted_after(lambda: page.click("#canvas .acv-coverage"))
    covered = page.evaluate(SEEN, [800, 500])
    assert covered != bare and covered[0] >= bare[0] and covered[2] >= bare[2]  # magenta laid over


def test_brush_and_eraser_change_the_area_by_the_stroke_and_undo_restores_it(page, demo):
    state, _ = demo
    s, ann = _accepted_disc(page, state)
    page.keyboard.press("s")
    click_image(page, 800, 500)
    wait_all(page)
    assert s.doc.selection == {ann.id}
    page.keyboard.press("r")  # the brush
    page.keyboard.press("]")  # brush radius 12 -> 15 screen pixels
    k = page.evaluate(STATE)["k"]
    page.mouse.move(*at(page, 800, 500))
    page.mouse.down()
    page.mouse.move(*at(page, 900, 500), steps=4)
    page.mouse.move(*at(page, 1000, 500), steps=4)
    page.mouse.up()
    wait_all(page)
    paint = s.log[-1]
    radius = paint["strokes"][0]["radius"]
    assert paint["type"] == "paint" and paint["id"] == ann.id and radius == pytest.approx(15 / k, rel=0.01)
    grown = s.doc[ann.id].area - ann.area
    outside = (1000 - (800 + DISC)) * 2 * radius + np.pi * radius**2 / 2  # the stroke beyond the disc
    assert abs(grown - outside) / outside < 0.15
    page.keyboard.press("e")
    page.mouse.move(*at(page, 800, 400))
    page.mouse.down()
    page.mouse.move(*at(page, 800, 600), steps=5)
    page.mouse.up()
    wait_all(page)
    assert s.log[-1]["strokes"][0]["erase"] is True
    cut = s.doc[ann.id].area - (ann.area + grown)
    assert cut < -0.8 * (2 * DISC * 2 * radius)  # a band across the disc is gone
    press(page, "#undo")
    press(page, "#undo")
    assert s.doc[ann.id].counts == ann.counts
    page.screenshot(path=str(ARTIFACTS / "canvas_brush.png"))


def test_opacity_hide_only_selected_outlines_and_hover_are_drawn_without_a_request(page, demo):
    state, _ = demo
    s, ann = _accepted_disc(page, state)
    click_image(page, 300, 300)
    wait_all(page)
    press(page, "#accept")  # a second mask, not selected
    page.keyboard.press("s")
    click_image(page, 800, 500)
    wait_all(page)
    page.mouse.move(10, 10)
    page.wait_for_timeout(200)
    requests = []
    page.on("request", lambda r: requests.append(r.url))

    def seen_after(change, x=800, y=500):
        paints = int(page.eval_on_selector("#canvas .acv", "e => e.dataset.paints"))
        change()
        page.wait_for_function(f"() => Number(document.querySelector('#canvas .acv').dataset.paints) > {paints}")
        return page.evaluate(SEEN, [x, y])

    base = page.evaluate(SEEN, [820, 520])
    faint = seen_after(
        lambda: page.eval_on_selector(
            "#canvas .acv-opacity", "e => { e.value = 10; e.dispatchEvent(new Event('input')); }"
        ),
        820,
        520,
    )
    assert faint != base
    strong = seen_after(
        lambda: page.eval_on_selector(
            "#canvas .acv-opacity", "e => { e.value = 90; e.dispatchEvent(new Event('input')); }"
        ),
        820,
        520,
    )
    assert sum(abs(a - b) for a, b in zip(strong, faint, strict=True)) > 60
    other = page.evaluate(SEEN, [300, 300])
    hidden_other = seen_after(lambda: page.click("#canvas .acv-only"), 300, 300)
    assert hidden_other != other  # the unselected mask vanished
    assert seen_after(lambda: page.click("#canvas .acv-only"), 300, 300) == other
    hidden = seen_after(lambda: page.click("#canvas .acv-hide"), 820, 520)
    assert hidden != strong
    seen_after(lambda: page.click("#canvas .acv-hide"), 820, 520)
    lit = seen_after(lambda: page.mouse.move(*at(page, 300, 300)), 300, 290)
    assert page.eval_on_selector("#canvas .acv", "e => e.dataset.hover") == str(s.doc.ids[1])
    assert lit != other
    page.mouse.move(10, 10)
    page.wait_for_timeout(300)  # a request made late would be counted too
    assert requests == [], f"view changes made requests: {requests}"
    # outlines are drawn in the browser too (and kept by the server, so that one does ask)
    edge_x = 300 + DISC  # the right edge of the unselected mask
    with_edge = page.evaluate(SEEN, [edge_x - 1, 300])
    assert seen_after(lambda: page.click("#canvas .acv-outlines"), edge_x - 1, 300) != with_edge
    wait_all(page)
    assert kinds(state, "view")[-1]["view"]["outlines"] is False


def test_class_keys_colour_masks_and_the_legend_counts_them(page, demo):
    state, _ = demo
    legend = page.locator("#canvas .acv-legend")
    assert "1 person" in legend.inner_text() and "2 car" in legend.inner_text()
    page.mouse.move(*at(page, 800, 500))
    page.keyboard.press("2")  # the class keys write the page's label
    assert page.locator("#label textarea, #label input").first.input_value() == "car"
    click_image(page, 800, 500)
    wait_all(page)
    press(page, "#accept")
    (ann,) = session(state).doc.annotations
    assert ann.label == "car"
    page.eval_on_selector("#canvas .acv-opacity", "e => { e.value = 100; e.dispatchEvent(new Event('input')); }")
    page.wait_for_timeout(150)
    r, g, b, _ = page.evaluate(SEEN, [800 + DISC // 2, 500])
    assert g > 200 and r < 60 and b < 60
    page.wait_for_function("() => document.querySelector('#canvas .acv-legend').innerText.includes('car\\n1')")
    rows = [t.split("\n") for t in legend.locator("button").all_inner_texts()]
    assert rows[:2] == [["1 person", "0"], ["2 car", "1"]]


def test_a_large_image_shows_full_resolution_pixels_at_100_percent(browser):
    blocks, state, url = _serve(big_image())
    try:
        page = _open(browser, state, url)
        fine = page.evaluate(SEEN, [3100, 2100])
        assert abs(fine[0] - 128) < 30  # the base image averages the checkerboard to grey
        page.mouse.move(*at(page, 3100, 2100))
        page.click("#canvas [data-view=actual]")
        page.wait_for_function("() => document.querySelector('#canvas .acv').dataset.crop")
        page.wait_for_timeout(200)
        values = [page.evaluate(SEEN, [3100 + dx, 2100])[0] for dx in range(6)]
        assert page.evaluate(STATE)["k"] == pytest.approx(1.0)
        assert max(values) > 200 and min(values) < 55, values  # single pixels, black and white
        page.screenshot(path=str(ARTIFACTS / "canvas_big_100.png"))
        page.close()
    finally:
        blocks.close()
