"""Projects in the app, without a browser: the Workbench's project actions, the projects
folder and server-folder rules, and the background prefetch."""

import json
import threading
import time
import uuid

import pytest
from conftest import IMAGES
from pycocotools.coco import COCO

from annotator.app.workbench import Workbench, WorkbenchError
from annotator.models.loading import load_segmenter
from annotator.models.lock import ModelLock
from annotator.projects.folders import FolderPolicy
from annotator.projects.library import ProjectLibrary, ProjectNameError
from annotator.projects.prefetch import Prefetcher
from annotator.projects.store import Project

DOG, TRUCK, DOGS = IMAGES / "dog.jpg", IMAGES / "truck.jpg", IMAGES / "dogs.jpg"


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    return load_segmenter("tiny", str(tiny_checkpoint), device="cpu")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "projects"


@pytest.fixture
def wb(segmenter, root):
    seg, info = segmenter
    return Workbench(seg, info, projects=ProjectLibrary(root))


@pytest.fixture
def sid():
    return uuid.uuid4().hex


def saved(root, name="p", image=None) -> list[dict]:
    """The records the project file holds for an image (first image by default), read
    through a second connection, as another process would."""
    with Project(root / f"{name}.annotator", create=False) as p:
        infos = p.images()
        info = infos[0] if image is None else next(i for i in infos if i.name == image)
        return p.records(info.id)


def accept_click(wb, sid, x, y, label="thing"):
    wb.click(sid, x, y, "positive")
    return wb.accept(sid, label)


def new_project(wb, sid, *paths, name="p"):
    wb.open_project(sid, name)
    return wb.add_uploads(sid, list(paths))


# -- names and folders ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["street", "Street 2024", "a.b-c_d", "x" * 64, "p.annotator"])
def test_valid_project_names_map_to_one_file_in_the_folder(tmp_path, name):
    lib = ProjectLibrary(tmp_path)
    path = lib.path(name)
    assert path.parent == tmp_path.resolve() and path.name.endswith(".annotator")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "  ",
        "../x",
        "..",
        "a/b",
        "a\\b",
        "/etc/passwd",
        ".hidden",
        "x" * 65,
        "nul\0byte",
        "héllo",
        "a..b",
        "dot.",
        "~root",
        "C:evil",
    ],
)
def test_names_that_could_escape_or_confuse_are_refused(tmp_path, name):
    with pytest.raises(ProjectNameError, match="project name"):
        ProjectLibrary(tmp_path).path(name)
    assert not list(tmp_path.iterdir())


def test_a_bad_name_is_a_workbench_error_and_creates_nothing(wb, sid, root):
    with pytest.raises(WorkbenchError, match="not a valid project name"):
        wb.open_project(sid, "../../etc/x")
    assert not root.exists()


def test_library_lists_projects_and_shares_one_open_store(tmp_path):
    lib = ProjectLibrary(tmp_path / "new")
    assert lib.names() == []
    a = lib.open("b-project")
    assert lib.open("b-project") is a
    lib.open("a")
    (tmp_path / "new" / "notes.txt").write_text("x")
    assert lib.names() == ["a", "b-project"]
    with pytest.raises(Exception, match="no project called"):
        lib.open("missing", create=False)
    lib.close()


def test_server_folders_are_off_by_default():
    with pytest.raises(PermissionError, match="--allow-folder"):
        FolderPolicy().check(IMAGES)


def test_only_folders_below_an_allowed_one_are_readable(tmp_path):
    allowed = tmp_path / "data"
    (allowed / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (allowed / "link").symlink_to(tmp_path / "secret")
    policy = FolderPolicy([allowed])
    assert policy.check(allowed) == allowed.resolve()
    assert policy.check(allowed / "sub") == (allowed / "sub").resolve()
    assert policy.check("sub") == (allowed / "sub").resolve()  # relative to the first allowed folder
    for escape in (
        tmp_path / "secret",
        allowed / ".." / "secret",
        allowed / "link",
        "../secret",
        "/etc",
        "sub/../../secret",
    ):
        with pytest.raises(PermissionError, match="not inside a folder the operator allowed"):
            policy.check(escape)
    with pytest.raises(PermissionError, match="not a folder"):
        policy.check(allowed / "missing")


def test_allowed_folders_come_from_flags_and_the_environment(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.setenv("ANNOTATOR_ALLOW_FOLDERS", str(a))
    assert FolderPolicy.from_env([b]).allowed == (a.resolve(), b.resolve())


# -- the workbench in a project -------------------------------------------------------------
def test_open_creates_an_empty_project_and_uploads_add_several_images(wb, sid, root):
    v = wb.open_project(sid, "p")
    assert "empty" in v.message and v.progress == [] and (root / "p.annotator").is_file()
    v = wb.add_uploads(sid, [DOG, TRUCK])
    assert "Added 2 images" in v.message and "dog.jpg" in v.status
    assert [r[2:] for r in v.progress] == [["dog.jpg", "pending", 0, 0], ["truck.jpg", "pending", 0, 0]]
    assert v.progress[0][0] == "▶"
    assert v.canvas is not None and v.canvas.shape == (534, 800, 3)
    # the same picture again is not a second image; an unreadable file is named, not fatal
    bad = root / "notes.png"
    bad.write_text("not an image")
    v = wb.add_uploads(sid, [DOG, bad, DOGS])
    assert "notes.png" in v.message and len(wb.progress_rows(sid)) == 3


def test_every_edit_is_in_the_file_when_the_view_returns(wb, sid, root, tmp_path):
    new_project(wb, sid, DOG)
    accept_click(wb, sid, 300, 300, "dog")
    assert [r["label"] for r in saved(root)] == ["dog"]
    accept_click(wb, sid, 600, 150, "bowl")
    assert len(saved(root)) == 2
    with pytest.raises(WorkbenchError):  # nothing selected: refused, nothing saved
        wb.relabel(sid, "animal")
    assert {r["label"] for r in saved(root)} == {"dog", "bowl"}
    wb.select_mask(sid, 1)
    wb.relabel(sid, "animal")
    assert {r["label"] for r in saved(root)} == {"animal", "bowl"}
    wb.select_mask(sid, 2)
    wb.merge(sid)
    assert [r["id"] for r in saved(root)] == [3]
    wb.step(sid, 1)
    wb.review(sid, "rejected")
    assert saved(root)[0]["review"] == "rejected"
    wb.select_mask(sid, 3, "replace")
    wb.delete(sid)
    assert saved(root) == []
    v = wb.undo(sid)  # back to the rejected merged mask
    assert "Undid" in v.message and [r["id"] for r in saved(root)] == [3]


def test_segment_everything_and_import_are_saved(wb, sid, root, tmp_path):
    new_project(wb, sid, DOG)
    steps = list(
        wb.segment_everything(sid, points_per_side=4, points_per_batch=8, pred_iou_thresh=0, stability_score_thresh=0)
    )
    n = len(wb.session(sid).doc)
    assert steps[-1].final and n > 0
    assert len(saved(root)) == n and all(r["source"] == "auto" for r in saved(root))
    coco = {
        "images": [{"id": 7, "file_name": "dog.jpg", "height": 534, "width": 800}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 1,
                "bbox": [10, 10, 20, 20],
                "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]],
                "area": 400,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "box"}],
    }
    path = tmp_path / "in.json"
    path.write_text(json.dumps(coco))
    wb.import_annotations(sid, path)
    assert len(saved(root)) == n + 1 and saved(root)[-1]["source"] == "import"


def test_undo_redo_use_the_projects_history_across_a_restart(segmenter, root, sid):
    seg, info = segmenter
    wb = Workbench(seg, info, projects=ProjectLibrary(root), prefetch=False)
    new_project(wb, sid, DOG)
    accept_click(wb, sid, 300, 300, "dog")
    accept_click(wb, sid, 600, 150, "bowl")
    wb.projects.close()
    # a new server process: same folder, new workbench, new session
    wb2 = Workbench(seg, info, projects=ProjectLibrary(root), prefetch=False)
    other = uuid.uuid4().hex
    v = wb2.open_project(other, "p")
    assert [a.label for a in wb2.session(other).doc.annotations] == ["dog", "bowl"]
    assert [r[1] for r in v.table] == [1, 2]
    v = wb2.undo(other)
    assert "Undid: add mask" in v.message and [r[1] for r in v.table] == [1] and len(saved(root)) == 1
    wb2.undo(other)
    assert saved(root) == [] and "Nothing to undo" in wb2.undo(other).message
    v = wb2.redo(other)
    assert [r["label"] for r in saved(root)] == ["dog"] and [r[1] for r in v.table] == [1]
    # a new edit after an undo drops the redo branch, as in a document
    wb2.undo(other)
    wb2.click(other, 100, 100, "positive")
    wb2.accept(other, "new")
    assert "Nothing to redo" in wb2.redo(other).message
    assert [r["label"] for r in saved(root)] == ["new"]


def test_undo_while_prompting_still_removes_the_prompt_point(wb, sid, root):
    new_project(wb, sid, DOG)
    accept_click(wb, sid, 300, 300)
    wb.click(sid, 100, 100, "positive")
    assert "Removed the last prompt point" in wb.undo(sid).message
    assert len(saved(root)) == 1


def test_navigation_progress_and_done(wb, sid, root):
    new_project(wb, sid, DOG, TRUCK, DOGS)
    accept_click(wb, sid, 300, 300)
    v = wb.step_image(sid, 1)
    assert wb.session(sid).name == "truck.jpg" and len(wb.session(sid).doc) == 0
    assert [r[0] for r in v.progress] == ["", "▶", ""] and v.progress[0][4:] == [1, 1]
    assert "image 2/3" in v.status
    v = wb.set_done(sid)
    assert v.progress[1][3] == "done" and "1 done" in v.status
    assert wb.toggle_done(sid).progress[1][3] == "pending"
    wb.step_image(sid, -1)
    wb.step_image(sid, -1)  # wraps around to the last
    assert wb.session(sid).name == "dogs.jpg"
    v = wb.go_to_position(sid, 0)  # a click on the first row
    assert wb.session(sid).name == "dog.jpg" and len(wb.session(sid).doc) == 1
    with pytest.raises(WorkbenchError, match="no image 9"):
        wb.go_to_position(sid, 8)


def test_project_actions_need_a_project(wb, sid):
    for action in (
        lambda: wb.step_image(sid),
        lambda: wb.set_done(sid),
        lambda: wb.export_project(sid),
        lambda: wb.add_uploads(sid, [DOG]),
    ):
        with pytest.raises(WorkbenchError, match="Open or create a project"):
            action()


def test_server_folder_is_added_only_when_allowed(segmenter, root, sid, tmp_path):
    seg, info = segmenter
    wb = Workbench(seg, info, projects=ProjectLibrary(root), prefetch=False)
    wb.open_project(sid, "p")
    with pytest.raises(WorkbenchError, match="--allow-folder"):
        wb.add_folder(sid, str(IMAGES))
    wb = Workbench(seg, info, projects=ProjectLibrary(root), folders=FolderPolicy([IMAGES]), prefetch=False)
    wb.open_project(sid, "p")
    with pytest.raises(WorkbenchError, match="not inside"):
        wb.add_folder(sid, str(tmp_path))
    v = wb.add_folder(sid, str(IMAGES))
    names = sorted(p.name for p in IMAGES.iterdir() if p.suffix == ".jpg")
    assert sorted(r[2] for r in v.progress) == names
    with Project(root / "p.annotator") as p:
        assert all(i.path is not None for i in p.images())  # referenced in place, not copied


def test_resume_reopens_project_image_masks_and_view_options(wb, sid, root):
    new_project(wb, sid, DOG, TRUCK)
    wb.step_image(sid, 1)
    accept_click(wb, sid, 900, 600, "truck")
    wb.set_view(sid, alpha=0.25, outlines=False)
    state = wb.resume_state(sid)
    assert state == {"project": "p", "image": wb.project_of(sid).image_id}
    wb.free(sid)
    fresh = uuid.uuid4().hex  # a reloaded page has a new session hash
    v = wb.resume(fresh, json.loads(json.dumps(state)))
    s = wb.session(fresh)
    assert s.name == "truck.jpg" and [a.label for a in s.doc.annotations] == ["truck"]
    assert (s.view.alpha, s.view.outlines) == (0.25, False) and v.canvas is not None
    # no browser state (another browser): the image the project was left at
    other = uuid.uuid4().hex
    wb.open_project(other, "p")
    assert wb.session(other).name == "truck.jpg"
    # nothing to resume, or a project that is gone: the plain app, with a note
    assert wb.resume(uuid.uuid4().hex, None).message == ""
    v = wb.resume(uuid.uuid4().hex, {"project": "gone", "image": 1})
    assert "Could not reopen project 'gone'" in v.message and not (root / "gone.annotator").exists()


def test_export_project_is_one_coco_file(wb, sid, root):
    new_project(wb, sid, DOG, TRUCK)
    accept_click(wb, sid, 300, 300, "dog")
    wb.step_image(sid, 1)
    accept_click(wb, sid, 900, 600, "truck")
    path = wb.export_project(sid)
    coco = COCO(str(path))
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == ["dog.jpg", "truck.jpg"]
    assert sorted(c["name"] for c in coco.dataset["categories"]) == ["dog", "truck"]
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert coco.annToMask(ann).any()


def test_a_second_session_editing_the_same_image_gets_a_conflict_not_a_lost_mask(wb, sid, root):
    new_project(wb, sid, DOG)
    other = uuid.uuid4().hex
    wb.open_project(other, "p")
    accept_click(wb, sid, 300, 300, "first")
    wb.click(other, 600, 150, "positive")
    with pytest.raises(WorkbenchError, match="changed by another session"):
        wb.accept(other, "second")
    assert [r["label"] for r in saved(root)] == ["first"]
    assert [a.label for a in wb.session(other).doc.annotations] == ["first"]  # reloaded
    accept_click(wb, other, 600, 150, "second")
    assert [r["label"] for r in saved(root)] == ["first", "second"]


def test_undo_and_redo_never_step_over_another_sessions_edit(wb, sid, root):
    new_project(wb, sid, DOG)
    other = uuid.uuid4().hex
    wb.open_project(other, "p")  # shows the image before the edit below
    accept_click(wb, sid, 300, 300, "first")
    # undo in the session that never saw "first" would take it back: refused like a save
    with pytest.raises(WorkbenchError, match="changed by another session.*Showing the saved masks now"):
        wb.undo(other)
    assert [r["label"] for r in saved(root)] == ["first"]
    assert [a.label for a in wb.session(other).doc.annotations] == ["first"]  # reloaded
    # now that it shows "first", its undo is its own decision
    assert "Undid: add mask" in wb.undo(other).message and saved(root) == []
    # redo: the first session still shows "first" at the revision before that undo
    with pytest.raises(WorkbenchError, match="changed by another session.*Showing the saved masks now"):
        wb.redo(sid)
    assert saved(root) == [] and len(wb.session(sid).doc) == 0  # nothing redone, reloaded
    assert "Redid: add mask" in wb.redo(sid).message and [r["label"] for r in saved(root)] == ["first"]
    # the other session is stale again; its undo is refused and changes nothing
    with pytest.raises(WorkbenchError, match="changed by another session"):
        wb.undo(other)
    assert [r["label"] for r in saved(root)] == ["first"]


def test_closing_the_project_returns_to_single_images(wb, sid, root):
    new_project(wb, sid, DOG)
    assert wb.project_name(sid) == "p"
    v = wb.close_project(sid)
    assert "Closed project p" in v.message and wb.project_of(sid) is None and wb.session(sid).image is None
    assert wb.project_name(sid) is None
    wb.open_image(sid, TRUCK)
    accept_click(wb, sid, 900, 600)
    assert saved(root) == []  # a single image is not part of the project


# -- prefetch -------------------------------------------------------------------------------
def test_the_next_image_is_prefetched_and_not_encoded_again(segmenter, root, sid):
    seg, info = segmenter
    seg.cache.clear()
    wb = Workbench(seg, info, projects=ProjectLibrary(root))
    calls = []
    hook = seg.model.image_encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        new_project(wb, sid, DOG, TRUCK)
        assert wb.prefetcher.wait_idle(60)
        assert len(calls) == 2 and wb.prefetcher.done[-1][1] == wb.project_of(sid).image_id + 1
        v = wb.step_image(sid, 1)
        assert len(calls) == 2 and "Embedding from the cache" in v.message
        assert wb.prefetcher.wait_idle(60) and len(calls) == 2  # dog.jpg, next again, is still cached
    finally:
        hook.remove()


def test_each_session_keeps_its_own_prefetch_until_it_is_freed(wb, sid, root):
    gate = threading.Event()
    # the prefetch thread is kept busy (loading, outside the model lock) while two
    # sessions in two projects move to an image: each asks for its own next image
    wb.prefetcher.request("busy", lambda: gate.wait(30) and None)
    other = uuid.uuid4().hex
    new_project(wb, sid, DOG, TRUCK, name="p")
    new_project(wb, other, DOGS, DOG, name="q")
    mine, theirs = (str(root / "p.annotator"), 2), (str(root / "q.annotator"), 2)
    assert wb.prefetcher.pending() == [mine, theirs]  # one navigation did not replace the other's
    gate.set()
    assert wb.prefetcher.wait_idle(60)
    assert {mine, theirs} <= set(wb.prefetcher.done)
    # a freed session's pending prefetch goes with it; the other session's stays
    gate.clear()
    wb.prefetcher.request("busy", lambda: gate.wait(30) and None)
    wb.step_image(sid, 1)
    wb.step_image(other, 1)
    assert wb.prefetcher.pending() == [(mine[0], 1), (theirs[0], 1)]
    wb.free(sid)
    assert wb.prefetcher.pending() == [(theirs[0], 1)]
    gate.set()
    assert wb.prefetcher.wait_idle(60) and wb.prefetcher.done[-1] == (theirs[0], 1)


def test_prefetch_is_bounded_overall_and_per_session():
    lock = ModelLock()
    embedded = []
    pf = Prefetcher(embedded.append, lock, max_pending=2)
    with lock:  # a user call holds the model: the first job waits, the rest stay pending
        pf.request("a1", lambda: "a1", owner="a")
        while pf.pending():  # the worker took a1 and waits for the model
            time.sleep(0.001)
        pf.request("b1", lambda: "b1", owner="b")
        pf.request("c1", lambda: "c1", owner="c")
        pf.request("b2", lambda: "b2", owner="b")  # replaces b1 only
        assert pf.pending() == ["c1", "b2"]
        pf.request("d1", lambda: "d1", owner="d")  # over the bound: the oldest request goes
        assert pf.pending() == ["b2", "d1"]
        pf.cancel("d")
        assert pf.pending() == ["b2"]
    assert pf.wait_idle(10) and embedded == ["a1", "b2"]
    pf.close()


def test_prefetch_runs_the_newest_request_and_can_be_cancelled():
    lock = ModelLock()
    embedded, started = [], threading.Event()
    release = threading.Event()

    def embed(image):
        embedded.append(image)
        started.set()
        release.wait(10)

    pf = Prefetcher(embed, lock)
    with lock:  # a user call holds the model: nothing runs meanwhile
        pf.request("a", lambda: "A")
        pf.request("b", lambda: "B")  # replaces "a" unless "a" already waits for the model
        assert not started.wait(0.2)
    release.set()
    assert pf.wait_idle(10)
    assert embedded[-1] == "B" and len(embedded) <= 2
    embedded.clear()
    with lock:
        pf.request("c", lambda: "C")
        pf.cancel()
    assert pf.wait_idle(10) and embedded == []
    pf.close()


def test_a_user_call_waits_for_at_most_one_prefetch_encoder_call():
    lock = ModelLock()
    running, finish = threading.Event(), threading.Event()
    calls = []

    def embed(image):
        calls.append(image)
        running.set()
        finish.wait(10)

    pf = Prefetcher(embed, lock)
    pf.request("a", lambda: "A")
    assert running.wait(10)
    seen = []

    def user():
        with lock:
            seen.append(list(calls))  # what had run when the user got the model

    t = threading.Thread(target=user)
    t.start()
    while lock.users_waiting() == 0:
        time.sleep(0.001)
    pf.request("b", lambda: "B")
    finish.set()  # the running encoder call ends; the user goes next, before "b"
    t.join(10)
    assert seen == [["A"]] and pf.wait_idle(10) and calls == ["A", "B"]
    pf.close()


def test_a_failing_prefetch_is_recorded_not_raised():
    pf = Prefetcher(lambda image: None, ModelLock())
    pf.request("x", lambda: 1 / 0)
    assert pf.wait_idle(10) and "division" in pf.errors["x"]
    pf.close()


def test_a_server_file_that_moved_is_reported_and_the_project_stays_usable(segmenter, root, sid, tmp_path):
    seg, info = segmenter
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("dog.jpg", "truck.jpg"):
        (photos / name).write_bytes((IMAGES / name).read_bytes())
    wb = Workbench(seg, info, projects=ProjectLibrary(root), folders=FolderPolicy([photos]), prefetch=False)
    wb.open_project(sid, "p")
    wb.add_folder(sid, str(photos))
    (photos / "dog.jpg").unlink()
    other = uuid.uuid4().hex
    v = wb.open_project(other, "p")
    assert "dog.jpg is no longer at" in v.message and wb.session(other).image is None
    v = wb.step_image(other, 1)
    assert wb.session(other).name == "truck.jpg" and "image 2/2" in v.status


def test_an_upload_while_a_project_is_open_joins_it_and_is_shown(wb, sid, root):
    new_project(wb, sid, DOG)
    v = wb.add_uploads(sid, [TRUCK], show=True)  # what the Image tab's upload does in a project
    assert wb.session(sid).name == "truck.jpg" and [r[0] for r in v.progress] == ["", "▶"]


def test_an_image_over_the_servers_pixel_limit_is_refused_with_the_project_still_open(segmenter, root, sid):
    from annotator.limits import Limits

    seg, info = segmenter
    wb = Workbench(seg, info, projects=ProjectLibrary(root))
    new_project(wb, sid, DOG)  # 800x534, under the default limit
    small = Workbench(seg, info, projects=ProjectLibrary(root), limits=Limits(max_pixels=100_000))
    v = small.open_project(sid, "p")
    assert "Cannot open dog.jpg" in v.message and "megapixels" in v.message and "dog.jpg" not in v.status
    assert small.project_of(sid) is not None
