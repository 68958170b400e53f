"""The app driven headlessly through its API with gradio_client: the same flow as a person,
two sessions at once, and neither sees the other's masks."""

import threading

import numpy as np
import pytest
from conftest import IMAGES
from gradio_client import Client, handle_file
from PIL import Image
from pycocotools.coco import COCO

from annotator.testing import free_port

# outputs of every view endpoint, in order
CANVAS, STATUS, MESSAGE, CANDIDATES, TABLE = range(5)


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    from annotator.app.ui import build_app
    from annotator.models.loading import load_segmenter

    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    demo = build_app(segmenter, info)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def client(url) -> Client:
    return Client(url, verbose=False)


def ids(table: dict) -> list[int]:
    return [int(row[1]) for row in table["data"]]


def annotate(c: Client, image: str, clicks: list[tuple[float, float, str]], label: str) -> tuple:
    """Upload, prompt with clicks, accept; returns the accept endpoint's outputs."""
    out = c.predict(handle_file(str(IMAGES / image)), api_name="/upload")
    assert "embedding cached" in out[STATUS]
    for x, y, mode in clicks:
        out = c.predict(x, y, mode, api_name="/click")
    assert out[CANDIDATES]["choices"], out[MESSAGE]
    return c.predict(label, api_name="/accept")


def test_headless_flow_prompt_select_edit_export(app, tmp_path):
    demo, url = app
    c = client(url)
    out = c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    assert "dog.jpg 800x534" in out[STATUS]
    out = c.predict(300, 300, "positive", api_name="/click")
    assert len(out[CANDIDATES]["choices"]) == 3
    frame = out[CANVAS]  # the browser canvas's frame: the prompt and its candidate mask
    assert frame["kind"] == "frame" and frame["prompt"]["points"] == [[300.0, 300.0, 1]]
    assert frame["prompt"]["mask"]["w"] > 0
    out = c.predict(2, api_name="/choose_candidate")
    assert out[CANDIDATES]["value"] == 2
    out = c.predict("dog", api_name="/accept")
    assert ids(out[TABLE]) == [1] and out[TABLE]["data"][0][2] == "dog"
    # a box (two clicks), accepted
    c.predict(480, 130, "box", api_name="/click")
    out = c.predict(670, 270, "box", api_name="/click")
    assert "box set" in out[MESSAGE]
    out = c.predict("bowl", api_name="/accept")
    assert ids(out[TABLE]) == [1, 2]
    # select both by id, merge, delete, undo
    c.predict(1, api_name="/select_mask")
    out = c.predict(2, api_name="/select_mask")
    assert [row[0] for row in out[TABLE]["data"]] == ["●", "●"]
    out = c.predict(api_name="/merge")
    assert ids(out[TABLE]) == [3] and "Merged" in out[MESSAGE]
    out = c.predict(api_name="/delete")
    assert ids(out[TABLE]) == []
    out = c.predict(api_name="/undo")
    assert ids(out[TABLE]) == [3]
    out = c.predict("rle", True, False, api_name="/export_coco")
    files = out[-2]
    coco_path = next(f for f in files if f.endswith("_coco.json"))
    coco = COCO(coco_path)
    (ann,) = coco.loadAnns(coco.getAnnIds())
    assert ann["annotator_id"] == 3 and coco.imgs[ann["image_id"]]["file_name"] == "dog.jpg"
    # and the exported file imports back (as new masks for review)
    out = c.predict(handle_file(coco_path), api_name="/import_annotations")
    assert ids(out[TABLE]) == [3, 4] and "Imported 1 mask " in out[MESSAGE]


def test_two_sessions_at_once_do_not_see_each_others_masks(app):
    demo, url = app
    one, two = client(url), client(url)
    results, errors = {}, []

    def run(name, c, image, clicks, label):
        try:
            results[name] = annotate(c, image, clicks, label)
        except Exception as e:  # surfaced below with the session that failed
            errors.append((name, e))

    threads = [
        threading.Thread(target=run, args=("one", one, "dog.jpg", [(300, 300, "positive")], "dog")),
        threading.Thread(
            target=run, args=("two", two, "groceries.jpg", [(100, 100, "box"), (400, 300, "box")], "shelf")
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    t1, t2 = one.predict(api_name="/masks"), two.predict(api_name="/masks")
    assert [r[2] for r in t1["data"]] == ["dog"] and [r[2] for r in t2["data"]] == ["shelf"]
    assert "dog.jpg" in results["one"][STATUS] and "groceries.jpg" in results["two"][STATUS]
    # an edit in one session leaves the other alone
    one.predict(1, api_name="/select_mask")
    one.predict(api_name="/delete")
    assert one.predict(api_name="/masks")["data"] == []
    assert [r[2] for r in two.predict(api_name="/masks")["data"]] == ["shelf"]
    # server side: each client's own session (by its session hash) holds its own document
    mine, theirs = (demo.workbench.sessions.peek(c.session_hash) for c in (one, two))
    assert mine is not None and theirs is not None and mine.doc is not theirs.doc
    assert len(mine.doc) == 0 and [a.label for a in theirs.doc.annotations] == ["shelf"]


def test_user_errors_come_back_as_messages(app):
    from gradio_client.exceptions import AppError

    c = client(app[1])
    with pytest.raises(AppError, match="Upload an image first"):
        c.predict(10, 10, "positive", api_name="/click")
    c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    with pytest.raises(AppError, match="at least two masks"):
        c.predict(api_name="/merge")
    with pytest.raises(AppError, match="Nothing to export"):
        c.predict("rle", True, False, api_name="/export_coco")


def test_segment_everything_streams_and_cancels(app):
    c = client(app[1])
    c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    grid = (4, 4, 0.0, 0.0, 0.7, 0, 0)  # points_per_side ... min_mask_region_area
    job = c.submit(*grid, api_name="/segment_everything")
    outputs = list(job)
    assert len(outputs) == 5  # one per point batch, then the result
    assert "batch 1 of 4" in outputs[0][MESSAGE] and "found" in outputs[-1][MESSAGE]
    auto = [r for r in c.predict(api_name="/masks")["data"] if r[3] == "auto"]
    assert auto and all(r[7] == "pending" for r in auto)
    # a bigger run, cancelled from another call while it streams
    job = c.submit(8, 4, 0.0, 0.0, 0.7, 0, 0, api_name="/segment_everything")
    for out in job:
        if "batch" in out[MESSAGE]:
            c.predict(api_name="/cancel")
            break
    final = job.result()
    assert "Cancelled after" in final[MESSAGE] and "of 16 batches" in final[MESSAGE]


def test_a_click_is_answered_while_another_session_segments_everything(app, monkeypatch):
    from annotator.app import everything

    one, two = client(app[1]), client(app[1])
    for c in (one, two):
        c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    # the run is held between its first and second batch until the click is answered, so
    # it cannot finish first however slow the machine: a click that waits for the run
    # shows as the hold running out
    generate, parked, answered, held_out = everything.generate, threading.Event(), threading.Event(), []

    def held(*args, **kwargs):
        run = generate(*args, **kwargs)
        yield next(run)
        parked.set()
        held_out.append(not answered.wait(30))
        yield from run

    monkeypatch.setattr(everything, "generate", held)
    job = one.submit(24, 4, 0.0, 0.0, 0.7, 0, 0, api_name="/segment_everything")  # 144 batches
    assert parked.wait(60), "segment everything did not start"
    out = two.predict(300, 300, "positive", api_name="/click")
    answered.set()
    one.predict(api_name="/cancel")
    final = job.result()
    assert len(out[CANDIDATES]["choices"]) == 3
    assert held_out == [False], "the click waited for the whole segment-everything run"
    assert "Cancelled after" in final[MESSAGE]


def test_one_sessions_slow_click_does_not_hold_up_another_sessions_click(app, monkeypatch):
    """Clicks of different sessions overlap (Limits.model_workers); only model calls take
    turns. With the old concurrency limit of 1, the second click waited for the first."""
    from annotator.app import prompting

    one, two = client(app[1]), client(app[1])
    for c in (one, two):
        c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    click, entered, answered, held_out = prompting.click, threading.Event(), threading.Event(), []

    def slow_first_click(ctx, s, *args, **kwargs):
        if not entered.is_set():
            entered.set()
            held_out.append(not answered.wait(30))
        return click(ctx, s, *args, **kwargs)

    monkeypatch.setattr(prompting, "click", slow_first_click)
    job = one.submit(300, 300, "positive", api_name="/click")
    assert entered.wait(60), "the first click did not start"
    out = two.predict(300, 300, "positive", api_name="/click")
    answered.set()
    assert len(job.result()[CANDIDATES]["choices"]) == 3
    assert len(out[CANDIDATES]["choices"]) == 3
    assert held_out == [False], "the second session's click waited for the first session's"


def test_duplicate_inspector(app):
    c = client(app[1])
    c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    for _ in range(2):  # the same prompt twice: two identical masks
        c.predict(300, 300, "positive", api_name="/click")
        c.predict("dog", api_name="/accept")
    out = c.predict(0.9, api_name="/find_duplicates")
    assert "1 group" in out[MESSAGE] and out[-1]["data"] == [[1, 1, "2", 2]]
    out = c.predict(api_name="/keep_best")
    # both masks were accepted (issue 12 item 3: a bulk action never deletes an accepted mask)
    assert "Accepted masks are never deleted: group 1: kept accepted masks 1, 2" in out[MESSAGE]
    assert out[-1]["data"] == []


def test_bad_uploads_and_imports_are_messages_and_the_masks_stay(app, tmp_path):
    """Files Gradio itself cannot open reach the app's reader (annotator.formats.images), so each
    gets the app's message; the session keeps its image and masks and goes on working."""
    from gradio_client.exceptions import AppError

    c = client(app[1])
    table = annotate(c, "dog.jpg", [(300, 300, "positive")], "dog")[TABLE]
    empty, notes, cut = tmp_path / "empty.jpg", tmp_path / "notes.png", tmp_path / "cut.jpg"
    empty.write_bytes(b"")
    notes.write_text("not a picture")
    data = (IMAGES / "dog.jpg").read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    for path, message in ((empty, r"empty \(0 bytes\)"), (notes, "not an image"), (cut, "damaged or truncated")):
        with pytest.raises(AppError, match=message + r".*Nothing was changed"):
            c.predict(handle_file(str(path)), api_name="/upload")
        assert c.predict(api_name="/masks") == table
    bad = tmp_path / "dog.json"
    bad.write_text('{"images": [{"id": 1,')
    with pytest.raises(AppError, match=r"Could not import dog.json: not valid JSON"):
        c.predict(handle_file(str(bad)), api_name="/import_annotations")
    out = c.predict(api_name="/masks")
    assert out == table
    # the session still works: another mask on the same image
    c.predict(480, 130, "positive", api_name="/click")
    assert ids(c.predict("bowl", api_name="/accept")[TABLE]) == ids(table) + [max(ids(table)) + 1]


def test_a_16_bit_upload_keeps_its_range(app, tmp_path):
    """Gradio's own preprocessing would clip a 16-bit PNG to white; the app scales it."""
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    out = client(app[1]).predict(handle_file(str(path)), api_name="/upload")
    assert "deep.png 64x64" in out[STATUS]
    wb = app[0].workbench
    (image,) = [s.image for s in map(wb.sessions.peek, wb.sessions.keys()) if s.name == "deep.png"]
    gray = image[..., 0].astype(int).ravel()
    # scaled, not clipped (clipping leaves 17 grey levels, the rest white)
    assert gray[0] == 0 and gray[-1] == 255 and (np.diff(gray) >= 0).all() and len(np.unique(gray)) > 200


def test_canvas_actions_have_api_twins(app):
    demo, url = app
    c = client(url)
    c.predict(handle_file(str(IMAGES / "dog.jpg")), api_name="/upload")
    out = c.predict(480, 130, 670, 270, api_name="/drag_box")
    assert "box set" in out[MESSAGE] and out[CANVAS]["prompt"]["box"] == [480.0, 130.0, 670.0, 270.0]
    c.predict(300, 300, "positive", api_name="/click")
    out = c.predict(0, api_name="/remove_point")
    assert out[CANVAS]["prompt"]["points"] == [] and "Removed point 1" in out[MESSAGE]
    out = c.predict("bowl", api_name="/accept")
    (ann_id,) = ids(out[TABLE])
    wb = demo.workbench
    (doc,) = [
        s.doc
        for s in (wb.sessions.peek(k) for k in wb.sessions.keys())
        if s is not None and s.doc is not None and ann_id in s.doc and s.doc[ann_id].label == "bowl"
    ]
    before = doc[ann_id].area
    strokes = [{"points": [[700, 200], [760, 200]], "radius": 6, "erase": False}]
    out = c.predict(ann_id, strokes, api_name="/paint")
    assert "Painted mask" in out[MESSAGE] and doc[ann_id].area > before + 300
    out = c.predict(api_name="/undo")
    assert doc[ann_id].area == before
    out = c.predict("negative", api_name="/set_mode")
    assert "should not reach" in out[MESSAGE]
    # the canvas's own message, as the page sends it
    msg = {
        "kind": "actions",
        "have": {"image": None, "frame": 0},
        "view": {"alpha": 0.3, "outlines": True, "only_selected": False, "coverage": False},
        "actions": [
            {"seq": 1, "type": "point", "x": 300, "y": 300, "mode": "positive"},
            {"seq": 2, "type": "accept", "class_id": None},
        ],
    }
    out = c.predict(msg, "dog", api_name="/canvas_actions")
    assert out[CANVAS]["ack"] == 2 and sorted(r["label"] for r in out[CANVAS]["table"]) == ["bowl", "dog"]
    assert {"bowl", "dog"} <= {k["name"] for k in out[CANVAS]["classes"]}  # typed labels add classes
    assert out[CANVAS]["layers"]["reset"]  # the message said it had no image: it gets everything
