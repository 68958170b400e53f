"""Limits: one place (annotator.limits) with defaults, flags and ANNOTATOR_* variables, and
each limit doing what it says in the Workbench: masks per image, memory per session,
sessions held, idle sessions freed without any request, queue size."""

import re
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGES
from pycocotools import mask as mask_utils

from annotator.amg.generator import Progress, Update
from annotator.app import everything as everything_module
from annotator.app.sessions import SessionStore
from annotator.app.workbench import Workbench, WorkbenchError
from annotator.cli import build_parser
from annotator.limits import MB, Limits, LimitsError, describe
from annotator.models.loading import load_segmenter

DOG = IMAGES / "dog.jpg"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_segmenter("tiny", str(tiny_checkpoint), device="cpu")


def workbench(model, **limits) -> Workbench:
    return Workbench(*model, limits=Limits(**limits))


def rects(size_hw, n, size=20):
    """``n`` distinct small square masks on an image of ``size_hw``."""
    h, w = size_hw
    per_row = w // size
    out = []
    for k in range(n):
        m = np.zeros((h, w), bool)
        y, x = divmod(k, per_row)
        m[y * size : (y + 1) * size, x * size : (x + 1) * size] = True
        out.append(m)
    return out


# -- where limits come from ---------------------------------------------------------------------
def test_defaults_then_environment_then_flags():
    assert Limits().max_pixels == 50_000_000 and Limits().idle_seconds == 3600
    env = {"ANNOTATOR_MAX_PIXELS": "1e6", "ANNOTATOR_MAX_SESSION_MB": "64", "ANNOTATOR_MAX_MASKS": " "}
    args = build_parser().parse_args(["serve", "--max-masks", "10", "--max-session-mb", "32"])
    limits = Limits.from_args(args, env)
    assert (limits.max_pixels, limits.max_masks, limits.max_session_mb) == (1_000_000, 10, 32.0)
    assert limits.session_bytes == 32 * MB and limits.max_sessions == Limits().max_sessions


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ANNOTATOR_MAX_MASKS": "2.5"}, "ANNOTATOR_MAX_MASKS must be a positive whole number; got '2.5'"),
        ({"ANNOTATOR_IDLE_MINUTES": "-1"}, "ANNOTATOR_IDLE_MINUTES must be a positive number; got '-1'"),
        ({"ANNOTATOR_MAX_UPLOAD_MB": "ten"}, "ANNOTATOR_MAX_UPLOAD_MB must be a positive number; got 'ten'"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(LimitsError, match=re.escape(message)):
        Limits.from_env(env)
    with pytest.raises(LimitsError, match="max_queue must be a positive number; got 0"):
        Limits(max_queue=0)


def test_readme_documents_every_limit_with_its_default_flag_and_variable():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    assert len(rows) == len(describe())
    for (flag, env, default, _), row in zip(describe(), rows):
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        assert cells[:3] == [flag, env, default], row


# -- masks per image ------------------------------------------------------------------------------
def test_accept_and_import_stop_at_the_mask_cap(model, tmp_path):
    wb, sid = workbench(model, max_masks=3), "s"
    wb.open_image(sid, DOG)
    doc = wb.session(sid).doc
    for m in rects(doc.size, 2):
        doc.add(m)
    wb.click(sid, 320, 300)
    wb.accept(sid, "third")
    before = doc.records()
    wb.click(sid, 320, 300)
    with pytest.raises(
        WorkbenchError,
        match=r"Cannot accept this mask: this image has 3 masks and the "
        r"limit is 3 per image \(--max-masks, ANNOTATOR_MAX_MASKS\)",
    ):
        wb.accept(sid, "fourth")
    assert doc.records() == before and wb.session(sid).prompt.mask is not None  # the prompt stays
    # delete one, and an import that fits goes in; one that does not is refused whole
    doc.delete([doc.ids[0]])
    out = wb.export(sid, "rle", figures=False, out_dir=tmp_path / "e")  # 2 masks
    with pytest.raises(WorkbenchError, match=r"Cannot import the 2 masks of dog_coco.json: this image has 2"):
        wb.import_annotations(sid, out.coco)
    doc.delete([doc.ids[0]])
    assert "Imported 2 masks" in wb.import_annotations(sid, out.coco).message and len(doc) == 3


def test_segment_everything_keeps_the_best_masks_up_to_the_cap(model, monkeypatch):
    h, w = 534, 800
    records = []
    for k, m in enumerate(rects((h, w), 6)):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        records.append(
            {"segmentation": rle, "predicted_iou": [0.5, 0.9, 0.6, 0.95, 0.7, 0.8][k], "stability_score": 0.9}
        )

    def fake_generate(segmenter, image, params, cancel, model_lock=None):
        yield Update(records, True, Progress(1, 1, 0.0, 0.0, 0, 1))

    monkeypatch.setattr(everything_module, "generate", fake_generate)
    wb, sid = workbench(model, max_masks=4), "s"
    wb.open_image(sid, DOG)
    wb.session(sid).doc.add(rects(wb.session(sid).doc.size, 1)[0])  # one mask already: room for 3
    *_, last = wb.segment_everything(sid, points_per_side=4)
    assert "found 3 masks" in last.view.message
    assert "Kept the 3 best of 6: the image may hold 4 masks (--max-masks" in last.view.message
    kept = [a.predicted_iou for a in wb.session(sid).doc.annotations[1:]]
    assert kept == [0.9, 0.95, 0.8]  # the three best, in the generator's order


# -- memory per session ---------------------------------------------------------------------------
def test_an_image_too_big_for_the_session_memory_is_refused(model):
    wb, sid = workbench(model, max_session_mb=12), "s"  # dog fits (~8 MB), truck (~24 MB) does not
    wb.open_image(sid, DOG)
    wb.session(sid).doc.add(rects(wb.session(sid).doc.size, 1)[0])
    before = wb.session(sid).doc.records()
    with pytest.raises(
        WorkbenchError,
        match=r"truck.jpg \(1800x1200\) needs about 2\d.\d MB of memory to "
        r"annotate; a session may use 12 MB \(--max-session-mb",
    ):
        wb.open_image(sid, IMAGES / "truck.jpg")
    s = wb.session(sid)
    assert s.name == "dog.jpg" and s.doc.records() == before and wb.session_bytes(sid) <= 12 * MB


def noise_masks(doc, n, seed=0):
    """Masks whose RLEs are large (random pixels): documents that weigh something."""
    rng = np.random.default_rng(seed)
    return [rng.random(doc.size) < 0.5 for _ in range(n)]


def test_older_images_masks_are_dropped_first_then_actions_are_refused(model):
    wb, sid = workbench(model), "s"
    wb.open_image(sid, DOG)
    dog_doc = wb.session(sid).doc
    for m in noise_masks(dog_doc, 3):
        dog_doc.add(m)
    small = np.asarray(wb.session(sid).image[:200, :300])
    wb.open_image(sid, small, "crop.png")
    s = wb.session(sid)
    assert dog_doc in s.documents.values()
    # a limit that the crop plus the dog's masks pass as soon as one more mask is added
    used = wb.session_bytes(sid)
    wb.limits = replace(wb.limits, max_session_mb=(used + 1000) / MB)
    wb.click(sid, 150, 100)
    v = wb.accept(sid, "crop")
    assert re.search(r"the masks kept for dog.jpg \(3 masks\) were dropped", v.message)
    assert dog_doc not in s.documents.values() and len(s.doc) == 1
    assert wb.session_bytes(sid) <= wb.limits.session_bytes
    # nothing left to drop: an action that would pass the limit is refused, the masks kept
    wb.limits = replace(wb.limits, max_session_mb=(wb.session_bytes(sid) + 10) / MB)
    before = s.doc.records()
    wb.click(sid, 150, 100)
    wb.session(sid).prompt.prediction.masks[:] = noise_masks(s.doc, 1, seed=1)[0]
    with pytest.raises(
        WorkbenchError,
        match=r"Cannot accept this mask: this session would hold .* over its "
        r"limit of .* \(--max-session-mb, ANNOTATOR_MAX_SESSION_MB\)",
    ):
        wb.accept(sid, "big")
    assert s.doc.records() == before


# -- sessions held and idle sessions --------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_sweep_frees_idle_sessions_and_reports_every_dropped_one():
    clock, dropped = Clock(), []
    store = SessionStore(
        dict, max_sessions=2, idle_seconds=10, clock=clock, on_evict=lambda key, value: dropped.append(key)
    )
    store.get("a")
    clock.now = 5
    store.get("b")
    clock.now = 12
    assert store.sweep() == ["a"] and dropped == ["a"] and store.keys() == ["b"]
    store.get("c")
    store.get("d")  # over max_sessions: the least recently used goes
    assert dropped == ["a", "b"] and store.keys() == ["c", "d"]
    clock.now = 100
    assert store.touch("d") and not store.touch("gone")  # a heartbeat keeps "d", creates nothing
    assert store.sweep() == ["c"] and store.keys() == ["d"]
    clock.now = 200
    assert store.sweep() == ["d"] and len(store) == 0


def test_idle_sessions_are_freed_without_any_request(model, tmp_path):
    wb = workbench(model, idle_minutes=0.5 / 60)  # half a second; swept every 0.125 s
    sid = "idle"
    wb.sessions.idle_seconds = 3600  # while setting up (a busy machine may take seconds)
    wb.open_image(sid, DOG)
    wb.session(sid).doc.add(rects(wb.session(sid).doc.size, 1)[0])
    folder = wb.export(sid, "rle", figures=False).coco.parent
    assert folder.is_dir()
    wb.session("open tab")
    wb.sessions.idle_seconds = 0.5
    deadline = time.monotonic() + 10
    while sid in wb.sessions and time.monotonic() < deadline:
        assert wb.keep_alive("open tab")  # the heartbeat of a tab still open
        time.sleep(0.05)
    assert sid not in wb.sessions
    while folder.exists() and time.monotonic() < deadline:  # the sweep removes it just after
        time.sleep(0.05)
    assert not folder.exists()  # its exports went with it
    assert "open tab" in wb.sessions
    # the tab comes back: it is told why its masks are gone, naming the flag, once
    msg = wb.resend(sid).message
    assert "idle longer than" in msg and "--idle-minutes" in msg
    assert "freed" not in wb.resend(sid).message


def test_a_tab_whose_session_was_freed_for_room_is_told_why(model):
    wb = workbench(model, max_sessions=1)
    wb.open_image("a", DOG)
    wb.open_image("b", DOG)  # holds the only place: "a" goes
    assert wb.sessions.keys() == ["b"]
    msg = wb.set_mode("a", "box").message
    assert "at most 1 sessions at once (--max-sessions, ANNOTATOR_MAX_SESSIONS)" in msg
    assert msg.endswith("Click two opposite corners of a box.")  # the action itself still answers
    assert "--max-sessions" not in wb.set_mode("a", "box").message  # said once


def test_sessions_over_the_cap_are_freed_with_their_exports(model):
    wb = workbench(model, max_sessions=2)
    folders = []
    for sid in ("a", "b"):
        wb.open_image(sid, DOG)
        wb.session(sid).doc.add(rects(wb.session(sid).doc.size, 1)[0])
        folders.append(wb.export(sid, "rle", figures=False).coco.parent)
    wb.session("c")
    assert wb.sessions.keys() == ["b", "c"]
    assert not folders[0].exists() and folders[1].exists()


def test_the_app_queue_and_upload_limits_are_wired(model):
    import gradio as gr

    from annotator.app.ui import build_app, launch_kwargs

    limits = Limits(max_queue=3, max_upload_mb=2)
    demo = build_app(*model, limits=limits)
    assert demo._queue.max_size == 3 and demo.workbench.limits is limits
    (timer,) = [b for b in demo.blocks.values() if isinstance(b, gr.Timer)]
    assert timer.value == 300  # open tabs send a heartbeat well within the idle time
    kw = launch_kwargs(limits, model[1])
    assert kw["max_file_size"] == 2 * MB
    assert str(Path(model[1].checkpoint).resolve()) in kw["blocked_paths"]
    # the upload boxes say the limit and its flag before Gradio refuses a larger file
    labels = {b.elem_id: getattr(b, "label", None) for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    for box in ("upload", "add-images"):
        assert "up to 2 MB a file (--max-upload-mb, ANNOTATOR_MAX_UPLOAD_MB)" in labels[box], labels[box]


class BlockingWorkbench(Workbench):
    """Computing an embedding waits until the test lets it go: the model stays busy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered, self.release = threading.Event(), threading.Event()

    def encode(self, sid):
        self.entered.set()
        assert self.release.wait(30)
        return super().encode(sid)


def test_a_full_queue_refuses_new_events_and_then_serves_again(model):
    from gradio_client import Client, handle_file

    from annotator.app.ui import build_app

    limits = Limits(max_queue=1, model_workers=1)  # one upload in work fills the workers
    wb = BlockingWorkbench(*model, limits=limits)
    demo = build_app(*model, workbench=wb)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        busy, waiting, refused = (Client(url, verbose=False) for _ in range(3))
        image = handle_file(str(DOG))
        first = busy.submit(image, api_name="/upload")  # holds the model
        assert wb.entered.wait(30)
        second = waiting.submit(image, api_name="/upload")  # the one place in the queue
        deadline = time.monotonic() + 10
        while second.status().code.name != "IN_QUEUE" and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(Exception, match="Queue is full"):
            refused.predict(image, api_name="/upload")
        wb.release.set()
        assert "dog.jpg 800x534" in first.result(timeout=60)[1]
        assert "dog.jpg 800x534" in second.result(timeout=60)[1]
        assert "dog.jpg 800x534" in refused.predict(image, api_name="/upload")[1]  # served again
    finally:
        wb.release.set()
        demo.close()
