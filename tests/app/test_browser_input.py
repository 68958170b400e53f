"""How images arrive, and the tables, in a real browser (chromium + playwright).

Every way an image arrives (upload, paste, example, project upload) goes through the app's
reader and, for a file that is not an image, shows the app's message; the server logs no
traceback. Uses the fixtures of ``test_browser``.
"""

import pytest
from test_browser import (  # noqa: F401
    IMAGES,
    app,
    browser,
    open_project,
    page,
    session_showing,
    shot,
    wait_message,
    wait_shown,
    wait_status,
)

from annotator.app.workbench import TABLE_HEADERS

pytestmark = pytest.mark.browser

APP_MESSAGE = "Open a PNG, JPEG, WebP, TIFF, BMP or GIF image instead"


@pytest.fixture
def not_an_image(tmp_path):
    path = tmp_path / "holiday.jpg"
    path.write_text("this is a text file with a .jpg name\n")
    return path


def wait_toast(page, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for(state="visible")


def no_traceback(capfd) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err.replace("WorkbenchError", ""), err[-3000:]


def open_example(page, name="tabletop"):
    page.get_by_role("tab", name="Image").click()
    page.locator("#examples").get_by_text(name, exact=True).click()
    wait_status(page, f"{name}.jpg")
    wait_status(page, "embedding cached")


def test_a_non_image_after_an_example_gets_the_apps_message(app, page, not_an_image, capfd):
    """Item 10: the upload after an Example click went through Gradio's PIL reader."""
    demo, _ = app
    open_example(page)
    sess = session_showing(demo, "tabletop.jpg")
    capfd.readouterr()
    page.get_by_role("tab", name="Image").click()
    page.locator("#upload input[type=file]").set_input_files(str(not_an_image))
    wait_toast(page, APP_MESSAGE)
    shot(page, "input-bad-after-example")
    assert (
        page.locator(".toast-body, [data-testid=toast-body]").filter(has_text="holiday.jpg").count()
        or page.get_by_text(APP_MESSAGE).count()
    )
    no_traceback(capfd)
    # nothing was changed: the example is still open
    assert sess.name == "tabletop.jpg"
    wait_status(page, "tabletop.jpg 1200x800")


def test_a_non_image_in_a_fresh_session_and_in_a_project(app, page, not_an_image, capfd):
    capfd.readouterr()
    page.get_by_role("tab", name="Image").click()
    page.locator("#upload input[type=file]").set_input_files(str(not_an_image))
    wait_toast(page, APP_MESSAGE)
    no_traceback(capfd)
    # project upload: the good image joins, the bad one is named in the message
    open_project(page, "input-test")
    wait_message(page, "Project input-test is empty")
    page.locator("#add-images input[type=file]").set_input_files([str(IMAGES / "dog.jpg"), str(not_an_image)])
    wait_status(page, "dog.jpg 800x534")
    wait_message(page, "holiday.jpg")
    shot(page, "input-bad-in-project")
    no_traceback(capfd)


PASTE = """async () => {
  const c = document.createElement('canvas'); c.width = 64; c.height = 48;
  const g = c.getContext('2d'); g.fillStyle = '#c03020'; g.fillRect(0, 0, 64, 48);
  g.fillStyle = '#20a040'; g.fillRect(16, 12, 32, 24);
  const blob = await new Promise(r => c.toBlob(r, 'image/png'));
  await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]);
}"""


def test_a_pasted_image_opens_through_the_apps_reader(app, browser):
    """README: "Open an image (upload, paste, or an example)"; the paste button reads the
    clipboard and the image opens like an upload."""
    demo, url = app
    context = browser.new_context(
        viewport={"width": 1440, "height": 960}, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(url)
        page.wait_for_selector("#canvas")
        wait_status(page, "no image")
        page.evaluate(PASTE)
        page.locator("#upload").get_by_role("button", name="Paste from clipboard").click()
        wait_status(page, "64x48")
        wait_status(page, "embedding cached")
        wait_shown(page)
        sess = session_showing(demo, "clipboard.png")
        assert sess.image.shape == (48, 64, 3)
        assert sess.image[24, 32].tolist() == [0x20, 0xA0, 0x40]  # PNG: exact colours
        shot(page, "input-pasted")
    finally:
        context.close()


def header_texts(page, table: str) -> list[str]:
    return [t.strip() for t in page.locator(f"#{table} [role=columnheader]").all_inner_texts()]


COLUMN_EDGES = """t => { const box = document.querySelector(`#${t}`).getBoundingClientRect();
  return [box.right, Array.from(document.querySelectorAll(`#${t} [role=columnheader]`))
    .map(e => [e.innerText.trim(), e.getBoundingClientRect().right])]; }"""


def test_tables_show_their_column_names_and_every_column(app, page):
    """Item 13: the empty mask table names its columns; the duplicates table, with a long
    list of duplicates in a group, still shows its last column (it wraps, not cuts)."""
    import numpy as np

    from annotator.annotations.rle import normalize

    demo, _ = app
    page.get_by_role("tab", name="Masks").click()
    assert header_texts(page, "masks-table") == TABLE_HEADERS
    open_example(page)
    sess = session_showing(demo, "tabletop.jpg")
    assert header_texts(page, "masks-table") == TABLE_HEADERS
    # 40 near-identical masks: one group whose "duplicates" cell lists 39 ids
    base = np.zeros((800, 1200), bool)
    base[100:300, 100:400] = True
    with sess.lock:
        for k in range(40):
            m = base.copy()
            m[100:300, 400 : 400 + k // 4] = True
            sess.doc.add(normalize(m, sess.doc.size), source="auto", review="pending", predicted_iou=0.9)
    page.get_by_role("tab", name="Segment everything").click()
    page.locator("#find-duplicates").click()
    wait_message(page, "1 group of near-duplicates")
    page.wait_for_function("() => document.querySelector('#duplicates-table').innerText.includes('2, 3, 4')")
    right, headers = page.evaluate(COLUMN_EDGES, "duplicates-table")
    assert [h for h, _ in headers] == ["group", "best", "duplicates", "masks"]
    page.locator("#duplicates-table").scroll_into_view_if_needed()
    shot(page, "input-duplicates-table")
    assert all(edge <= right + 1 for _, edge in headers), (right, headers)
