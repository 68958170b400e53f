"""Projects through the app's API (gradio_client): in-process, and as a real
``python -m annotator serve`` process that is SIGKILLed after several accepted edits and
restarted: every accepted mask is still there."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import IMAGES
from gradio_client import Client, handle_file
from pycocotools.coco import COCO

from annotator.projects.store import Project
from annotator.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
# outputs of every view endpoint, in order (project endpoints add more after these)
CANVAS, STATUS, MESSAGE, CANDIDATES, TABLE, PROGRESS = range(6)


def rows(table: dict) -> list[list]:
    return table["data"]


def accept_at(c: Client, x: float, y: float, label: str) -> tuple:
    out = c.predict(x, y, "positive", api_name="/click")
    assert out[CANDIDATES]["choices"], out[MESSAGE]
    return c.predict(label, api_name="/accept")


@pytest.fixture(scope="module")
def app(tiny_checkpoint, tmp_path_factory):
    from annotator.app.ui import build_app
    from annotator.models.loading import load_segmenter

    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    projects = tmp_path_factory.mktemp("projects")
    demo = build_app(segmenter, info, projects_dir=projects, allow_folders=[IMAGES])
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/", projects
    demo.close()


@pytest.mark.parametrize("when", ["while it computes", "once it is computed"])
def test_marking_an_image_done_while_its_embedding_computes_stays_done(app, monkeypatch, when):
    """Next image shows the image, then computes its embedding and shows that: D pressed in
    between must not be undone by the second answer (it repeated the first answer's list,
    and its status line was the one of before D when D came after the embedding's answer
    was made)."""
    import threading

    demo, url, _ = app
    wb = demo.workbench
    c = Client(url, verbose=False)
    c.predict(f"done-race-{len(when)}", api_name="/open_project")
    c.predict([handle_file(str(IMAGES / "dog.jpg")), handle_file(str(IMAGES / "truck.jpg"))], api_name="/add_images")
    started, release = threading.Event(), threading.Event()
    real = wb.encode

    def slow_encode(sid):
        if when == "once it is computed":
            view = real(sid)
        started.set()
        assert release.wait(60)
        return view if when == "once it is computed" else real(sid)

    monkeypatch.setattr(wb, "encode", slow_encode)
    job = c.submit(api_name="/next_image")
    assert started.wait(60)  # the truck is shown, its embedding is on its way
    out = c.predict(api_name="/toggle_done")
    assert rows(out[PROGRESS])[1][3] == "done" and "(done)" in out[STATUS]
    release.set()
    out = job.result(timeout=60)
    assert "truck.jpg" in out[STATUS] and "embedding cached" in out[STATUS]
    assert "image 2/2 (done)" in out[STATUS], out[STATUS]
    assert rows(out[PROGRESS])[1][3] == "done", rows(out[PROGRESS])


def test_a_project_through_the_api(app, tmp_path):
    demo, url, projects = app
    c = Client(url, verbose=False)
    out = c.predict("street", api_name="/open_project")
    assert "empty" in out[MESSAGE] and (projects / "street.annotator").is_file()
    out = c.predict(
        [handle_file(str(IMAGES / "dog.jpg")), handle_file(str(IMAGES / "truck.jpg"))], api_name="/add_images"
    )
    assert "Added 2 images" in out[MESSAGE] and "embedding cached" in out[STATUS]
    assert [r[2] for r in rows(out[PROGRESS])] == ["dog.jpg", "truck.jpg"]
    out = accept_at(c, 300, 300, "dog")
    assert rows(out[PROGRESS])[0][4:] == [1, 1]  # the progress list follows the edits
    out = c.predict(api_name="/next_image")
    assert "truck.jpg" in out[STATUS] and rows(out[TABLE]) == []
    accept_at(c, 900, 600, "truck")
    out = c.predict(api_name="/toggle_done")
    assert rows(out[PROGRESS])[1][3] == "done"
    out = c.predict(0, api_name="/go_to_image")
    assert "dog.jpg" in out[STATUS] and [r[2] for r in rows(out[TABLE])] == ["dog"]
    out = c.predict(api_name="/undo")
    assert "Undid" in out[MESSAGE]
    with Project(projects / "street.annotator") as p:  # saved by the time the call returned
        assert [i.n_annotations for i in p.images()] == [0, 1]
    out = c.predict(api_name="/redo")
    assert "Redid: add mask" in out[MESSAGE] and [r[2] for r in rows(out[TABLE])] == ["dog"]
    with Project(projects / "street.annotator") as p:
        assert [i.n_annotations for i in p.images()] == [1, 1]
    # a server folder the operator allowed
    out = c.predict(str(IMAGES), False, api_name="/add_folder")
    assert len(rows(c.predict(api_name="/progress"))) == len(list(IMAGES.glob("*.jpg")))
    # the whole project as one COCO file
    button = c.predict(api_name="/export_project")  # the download button, now holding the file
    assert Path(button["value"]).name == "street_coco.json"
    coco = COCO(button["value"])
    assert sorted(a["annotator_id"] for a in coco.dataset["annotations"]) == [1, 1]
    assert {c["name"] for c in coco.dataset["categories"]} >= {"dog", "truck"}
    # a second client resumes nothing by itself, and its own edits go to its own session
    c2 = Client(url, verbose=False)
    with pytest.raises(Exception, match="not a valid project name"):
        c2.predict("../street", api_name="/open_project")
    assert demo.workbench.project_of(c2.session_hash) is None
    c2.predict(handle_file(str(IMAGES / "truck.jpg")), api_name="/upload")
    accept_at(c2, 900, 600, "lorry")
    assert [r[2] for r in rows(c2.predict(api_name="/masks"))] == ["lorry"]
    with Project(projects / "street.annotator") as p:  # not added to the first client's project
        assert sum(i.n_annotations for i in p.images()) == 2 and "lorry" not in {k.name for k in p.categories()}
    assert [r[2] for r in rows(c.predict(api_name="/masks"))] == ["dog"]


def _serve(checkpoint: Path, projects: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "annotator",
            "serve",
            "--model",
            "tiny",
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
            "--port",
            str(port),
            "--projects-dir",
            str(projects),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_up(proc: subprocess.Popen, port: int) -> str:
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "config", timeout=2).read()
            return url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("app did not start:\n" + proc.stdout.read())
            time.sleep(0.3)


def test_killed_server_restarts_with_every_accepted_mask(tiny_checkpoint, tmp_path):
    projects = tmp_path / "projects"
    port = free_port()
    proc = _serve(tiny_checkpoint, projects, port)
    try:
        c = Client(_wait_up(proc, port), verbose=False)
        c.predict("kill-test", api_name="/open_project")
        c.predict(
            [handle_file(str(IMAGES / "dog.jpg")), handle_file(str(IMAGES / "truck.jpg"))], api_name="/add_images"
        )
        accept_at(c, 300, 300, "dog")
        accept_at(c, 650, 200, "bowl")
        c.predict(1, api_name="/select_mask")
        c.predict("good dog", api_name="/relabel")
        c.predict(api_name="/next_image")
        out = accept_at(c, 900, 600, "truck")
        accepted = {"dog.jpg": ["good dog", "bowl"], "truck.jpg": ["truck"]}
        assert [r[2] for r in rows(out[TABLE])] == ["truck"]
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown, no flush, no atexit
        proc.wait(timeout=20)
    assert proc.returncode == -signal.SIGKILL

    port = free_port()
    proc = _serve(tiny_checkpoint, projects, port)
    try:
        c = Client(_wait_up(proc, port), verbose=False)
        out = c.predict("kill-test", api_name="/open_project")
        # reopened at the image it was left at, with its masks
        assert "truck.jpg" in out[STATUS] and [r[2] for r in rows(out[TABLE])] == ["truck"]
        progress = rows(out[PROGRESS])
        assert [(r[2], r[4]) for r in progress] == [("dog.jpg", 2), ("truck.jpg", 1)]
        out = c.predict(0, api_name="/go_to_image")
        assert [r[2] for r in rows(out[TABLE])] == accepted["dog.jpg"]
        # undo reaches back past the restart
        out = c.predict(api_name="/undo")
        assert "Undid: label 'good dog'" in out[MESSAGE]
        assert [r[2] for r in rows(out[TABLE])] == ["dog", "bowl"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    with Project(projects / "kill-test.annotator") as p:
        assert p.integrity_check() == []
        labels = {i.name: [r["label"] for r in p.records(i.id)] for i in p.images()}
    assert labels == {"dog.jpg": ["dog", "bowl"], "truck.jpg": ["truck"]}
