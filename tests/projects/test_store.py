"""The project store: images, annotations, undo across restarts, migrations, crashes, two writers."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from annotator.formats.images import ImageError, load_image
from annotator.projects.records import UndoState
from annotator.projects.schema import MIGRATIONS, SCHEMA_VERSION
from annotator.projects.store import ConflictError, Project, ProjectError

ROOT = Path(__file__).resolve().parents[2]
H, W = 48, 64


def rect_record(ann_id: int, box, size=(H, W), z: int | None = None, **fields) -> dict:
    """A record shaped like ``AnnotationDocument.records()`` for a filled rectangle."""
    x0, y0, x1, y1 = box
    m = np.zeros(size, np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rec = {
        "id": ann_id,
        "size": list(size),
        "counts": rle["counts"].decode("ascii"),
        "area": int(m.sum()),
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "label": None,
        "source": "prompt",
        "prompts": {"points": [[x0, y0]], "labels": [1]},
        "predicted_iou": 0.9,
        "stability_score": 0.95,
        "point_coords": None,
        "crop_box": None,
        "visible": True,
        "review": "pending",
        "parents": [],
        "subtracted": [],
        "meta": None,
    }
    rec.update(fields)
    if z is not None:
        rec["z"] = z
    return rec


def with_z(records):
    return [{**r, "z": z} for z, r in enumerate(records)]


def write_png(path: Path, size=(H, W), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def project(tmp_path):
    with Project(tmp_path / "p.annotator") as p:
        yield p


@pytest.fixture
def image_id(project, tmp_path):
    return project.add_image(write_png(tmp_path / "a.png")).id


def test_new_file_is_a_wal_project_at_the_latest_schema(tmp_path):
    path = tmp_path / "new.annotator"
    with Project(path) as p:
        assert p.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        assert p.integrity_check() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with pytest.raises(ProjectError, match="no project file"):
        Project(tmp_path / "missing.annotator", create=False)


def test_images_are_added_in_order_once_per_content_with_oriented_size(project, tmp_path):
    a = project.add_image(write_png(tmp_path / "a.png", seed=1))
    b = project.add_image(write_png(tmp_path / "b.png", seed=2).read_bytes(), name="upload.png")
    again = project.add_image(write_png(tmp_path / "a-copy.png", seed=1))
    assert again.id == a.id and again.name == "a.png"
    # a JPEG whose EXIF says "rotate 90": the user sees it 48 wide and 64 high
    rotated = Image.fromarray(np.zeros((H, W, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rot.jpg", exif=exif)
    r = project.add_image(tmp_path / "rot.jpg")
    assert (r.height, r.width) == load_image(tmp_path / "rot.jpg").shape[:2] == (W, H)
    infos = project.images()
    assert [i.id for i in infos] == [a.id, b.id, r.id]
    assert [i.name for i in infos] == ["a.png", "upload.png", "rot.jpg"]
    assert infos[0].path == str((tmp_path / "a.png").resolve()) and infos[1].path is None
    assert all(i.status == "pending" and i.n_annotations == 0 for i in infos)
    np.testing.assert_array_equal(project.load_pixels(b.id), load_image(tmp_path / "b.png"))
    with pytest.raises(ImageError, match="not an image"):
        project.add_image(b"not an image")
    with pytest.raises(ImageError, match="no such file"):
        project.add_image(tmp_path / "missing.png")
    assert len(project.images()) == 3


def test_a_server_file_that_changed_is_refused(project, tmp_path):
    path = write_png(tmp_path / "a.png", seed=1)
    info = project.add_image(path)
    write_png(path, seed=2)
    with pytest.raises(ImageError, match="changed since it was added"):
        project.load_pixels(info.id)
    path.unlink()
    with pytest.raises(ImageError, match="no longer at"):
        project.load_pixels(info.id)


def test_save_round_trips_records_and_reports_progress(project, image_id):
    recs = with_z(
        [
            rect_record(1, (0, 0, 10, 10), label="dog"),
            rect_record(2, (5, 5, 30, 20), review="accepted", meta={"coco": {"iscrowd": 0}}),
            rect_record(7, (40, 10, 60, 40), review="accepted", visible=False),
        ]
    )
    rev = project.save(image_id, recs, action="add 3 masks")
    assert rev == 1
    assert project.records(image_id) == recs
    info = project.image(image_id)
    assert (info.rev, info.n_annotations, info.n_accepted) == (1, 3, 2)
    assert [c.name for c in project.categories()] == ["dog"]
    # the same annotations again: nothing written, no undo step
    assert project.save(image_id, recs, action="noop") == 1
    assert [r.action for r in project.history(image_id)] == ["add 3 masks"]
    # z-order alone is a change
    reordered = with_z([recs[2], recs[0], recs[1]])
    assert project.save(image_id, reordered, action="bring to front") == 2
    assert [r["id"] for r in project.records(image_id)] == [7, 1, 2]
    project.set_status(image_id, "done")
    assert project.image(image_id).status == "done"
    with pytest.raises(ValueError):
        project.set_status(image_id, "finished")


def test_bad_records_are_refused_and_nothing_is_written(project, image_id):
    project.save(image_id, [rect_record(1, (0, 0, 5, 5))])
    with pytest.raises(ValueError, match="image is 48x64"):
        project.save(image_id, [rect_record(1, (0, 0, 5, 5), size=(10, 10))])
    with pytest.raises(ValueError, match="appears twice"):
        project.save(image_id, [rect_record(2, (0, 0, 5, 5)), rect_record(2, (1, 1, 5, 5))])
    with pytest.raises(ValueError, match="annotation 3: predicted_iou must be a finite number"):
        project.save(image_id, [rect_record(3, (0, 0, 5, 5), predicted_iou=float("nan"))])
    with pytest.raises(ValueError, match="annotation 4: .*unknown fields"):
        project.save(image_id, [rect_record(4, (0, 0, 5, 5), colour="red")])
    with pytest.raises(ValueError, match="annotation 5: .*sum to"):
        project.save(image_id, [rect_record(5, (0, 0, 5, 5)) | {"counts": "0"}])
    with pytest.raises(KeyError):
        project.save(999, [])
    assert [r["id"] for r in project.records(image_id)] == [1]
    assert project.image(image_id).rev == 1


def test_undo_and_redo_survive_a_restart(tmp_path):
    path = tmp_path / "p.annotator"
    a, b, c = (rect_record(1, (0, 0, 10, 10)), rect_record(2, (10, 10, 20, 20)), rect_record(3, (20, 20, 30, 30)))
    states = [
        [],
        with_z([a]),
        with_z([a, b]),
        with_z([a, {**b, "label": "cat"}]),
        with_z([{**b, "label": "cat"}, a]),
        with_z([a, c]),
    ]
    with Project(path) as p:
        img = p.add_image(write_png(tmp_path / "a.png")).id
        for k, s in enumerate(states[1:]):
            p.save(img, s, action=f"step {k + 1}")
    with Project(path) as p:  # a restarted server
        assert p.undo_state(img) == UndoState(5, "step 5", None)
        for k in range(len(states) - 1, 0, -1):
            assert p.records(img) == states[k]
            assert p.undo(img) == states[k - 1]
        assert p.undo(img) is None and p.undo_state(img) == UndoState(0, None, "step 1")
        assert p.redo(img) == states[1]
        assert p.redo(img) == states[2]
    with Project(path) as p:
        assert p.records(img) == states[2]
        # a new edit after undo drops the undone branch
        p.save(img, with_z([b]), action="other")
        assert p.redo(img) is None
        assert [r.action for r in p.history(img)] == ["step 1", "step 2", "other"]
        assert p.undo(img) == states[2]


def test_history_is_capped(tmp_path):
    with Project(tmp_path / "p.annotator", max_history=3) as p:
        img = p.add_image(write_png(tmp_path / "a.png")).id
        for k in range(6):
            p.save(img, [rect_record(1, (0, 0, k + 1, k + 1))], action=f"v{k}")
        assert [r.rev for r in p.history(img)] == [4, 5, 6]
        assert sum(p.undo(img) is not None for _ in range(10)) == 3
        assert p.records(img)[0]["area"] == 3 * 3
        assert p.redo(img)[0]["area"] == 4 * 4


def test_a_stale_base_revision_is_a_conflict(tmp_path):
    path = tmp_path / "p.annotator"
    with Project(path) as p1, Project(path) as p2:
        img = p1.add_image(write_png(tmp_path / "a.png")).id
        seen = p1.image(img).rev
        p2.save(img, [rect_record(1, (0, 0, 5, 5))])
        with pytest.raises(ConflictError, match="another session"):
            p1.save(img, [rect_record(9, (0, 0, 9, 9))], base_rev=seen)
        assert [r["id"] for r in p1.records(img)] == [1]
        assert p1.save(img, [rect_record(9, (0, 0, 9, 9))], base_rev=p1.image(img).rev) == 2


def test_undo_and_redo_from_a_stale_revision_are_conflicts(tmp_path):
    path = tmp_path / "p.annotator"
    with Project(path) as p1, Project(path) as p2:
        img = p1.add_image(write_png(tmp_path / "a.png")).id
        seen = p1.image(img).rev
        p2.save(img, [rect_record(1, (0, 0, 5, 5))])
        with pytest.raises(ConflictError, match="another session"):
            p1.undo(img, base_rev=seen)  # would take back p2's mask, which p1 never saw
        assert [r["id"] for r in p1.records(img)] == [1] and p1.image(img).rev == 1
        assert p1.undo(img, base_rev=1) == [] and p1.image(img).rev == 0
        with pytest.raises(ConflictError, match="another session"):
            p2.redo(img, base_rev=1)
        assert p2.records(img) == [] and p2.redo(img, base_rev=0)[0]["id"] == 1


def test_state_and_categories(project):
    assert project.get_state("current_image", 0) == 0
    project.set_state("current_image", 3)
    project.set_state("ui", {"opacity": 0.5, "labels": ["a", "b"]})
    assert project.get_state("current_image") == 3
    assert project.get_state("ui") == {"opacity": 0.5, "labels": ["a", "b"]}
    project.set_state("current_image", None)
    assert project.get_state("current_image") is None
    dog = project.add_category("dog", supercategory="animal")
    assert project.add_category("dog", color="#ff0000") == dog.__class__(dog.id, "dog", "animal", "#ff0000")
    with pytest.raises(ValueError):
        project.add_category("  ")


def test_removing_an_image_removes_its_annotations_and_history(project, image_id, tmp_path):
    other = project.add_image(write_png(tmp_path / "b.png", seed=5)).id
    project.save(image_id, [rect_record(1, (0, 0, 5, 5))])
    project.save(other, [rect_record(1, (0, 0, 5, 5))])
    project.remove_image(image_id)
    assert [i.id for i in project.images()] == [other]
    with pytest.raises(KeyError):
        project.records(image_id)
    assert project.integrity_check() == []
    assert len(project.records(other)) == 1


# -- schema migrations ---------------------------------------------------------------------
def test_an_older_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "v1.annotator"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA application_id = 1095650895")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO images (name, path, sha256, width, height, position, added_at) "
        "VALUES ('a.png', NULL, 'abc', 64, 48, 0, 0)"
    )
    rec = rect_record(1, (0, 0, 10, 10), label="dog")
    import json

    conn.execute(
        "INSERT INTO annotations (image_id, ann_id, z, counts, record) VALUES (1, 1, 0, ?, ?)",
        (rec["counts"], json.dumps({k: v for k, v in rec.items() if k != "counts"})),
    )
    conn.close()
    with Project(path) as p:
        assert p.schema_version == SCHEMA_VERSION > 1
        assert p.records(1) == with_z([rec])
        info = p.image(1)
        assert (info.rev, info.n_annotations) == (0, 1)
        p.save(1, with_z([rec, rect_record(2, (5, 5, 9, 9))]), action="add")
        assert p.undo(1) == with_z([rec])
        assert p.integrity_check() == []


def test_files_that_are_not_this_project_are_refused(tmp_path):
    newer = tmp_path / "newer.annotator"
    Project(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ProjectError, match="newer annotator"):
        Project(newer)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(ProjectError, match="not an annotator project"):
        Project(other)
    garbage = tmp_path / "garbage.annotator"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ProjectError, match="not an annotator project"):
        Project(garbage)


# -- crashes and concurrent writers --------------------------------------------------------
CHILD_PRELUDE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pycocotools import mask as mask_utils
    from annotator.projects.store import Project

    def rect(ann_id, x0, y0, x1, y1, h=48, w=64):
        m = np.zeros((h, w), np.uint8)
        m[y0:y1, x0:x1] = 1
        counts = mask_utils.encode(np.asfortranarray(m))["counts"].decode("ascii")
        return {"id": ann_id, "size": [h, w], "counts": counts, "area": int(m.sum()),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "label": None, "review": "accepted"}
""")


def run_child(code: str, *args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def mask_of(rec) -> np.ndarray:
    return mask_utils.decode({"size": rec["size"], "counts": rec["counts"].encode()})


def test_a_killed_process_loses_no_committed_edit(tmp_path):
    path = tmp_path / "crash.annotator"
    with Project(path) as p:
        img = p.add_image(write_png(tmp_path / "a.png")).id
    # the child saves one more accepted mask per edit, as fast as it can, reporting each
    # commit; it is killed while it goes on writing
    child = run_child(
        """
        p = Project(sys.argv[1])
        img = int(sys.argv[2])
        records = []
        for k in range(1, 10**6):
            records.append(rect(k, k % 60, k % 40, k % 60 + 4, k % 40 + 8))
            rev = p.save(img, records, action=f"add mask {k}")
            print(k, rev, flush=True)
    """,
        path,
        img,
    )
    reported = 0
    while reported < 25:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        reported = int(line.split()[0])
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    with Project(path) as p:
        assert p.integrity_check() == []
        records = p.records(img)
        assert len(records) >= reported and p.image(img).rev == len(records)
        for k, rec in enumerate(records[:reported], start=1):
            assert rec["id"] == k and rec["review"] == "accepted"
            expected = np.zeros((H, W), np.uint8)
            expected[k % 40 : k % 40 + 8, k % 60 : k % 60 + 4] = 1
            np.testing.assert_array_equal(mask_of(rec), expected)
        # and the undo log is intact too: one step back removes the last mask
        assert [r["id"] for r in p.undo(img)] == list(range(1, len(records)))


def test_two_processes_writing_at_once_do_not_corrupt_the_file(tmp_path):
    path = tmp_path / "shared.annotator"
    fresh = tmp_path / "fresh.annotator"  # both children create this one at the same moment
    go = tmp_path / "go"
    with Project(path) as p:
        own = [p.add_image(write_png(tmp_path / f"{n}.png", seed=k)).id for k, n in enumerate("ab")]
        shared = p.add_image(write_png(tmp_path / "s.png", seed=9)).id
    n_saves = 40
    code = """
        import os
        path, fresh, go, who, own, shared, n = sys.argv[1:]
        who, own, shared, n = int(who), int(own), int(shared), int(n)
        while not os.path.exists(go):
            time.sleep(0.001)
        Project(fresh).close()
        p = Project(path)
        open(f"{go}.{who}", "w").close()  # both are open: start writing together
        deadline = time.monotonic() + 60
        while not all(os.path.exists(f"{go}.{w}") for w in (0, 1)):
            if time.monotonic() > deadline:
                sys.exit("the other writer never opened the project")
            time.sleep(0.001)
        mine, deadline = [], time.monotonic() + 120
        for k in range(n):
            # lockstep: save k waits until the other writer finished its save k - 1, so both
            # writers run side by side however the OS schedules them, and they take turns
            while p.get_state(f"writer{1 - who}", -1) < k - 1:
                if time.monotonic() > deadline:
                    sys.exit("the other writer stopped")
                time.sleep(0.001)
            mine.append(rect(100 * who + k, k, who * 20, k + 3, who * 20 + 5))
            p.save(own, mine, action=f"w{who} {k}")
            p.save(shared, mine, action=f"w{who} {k}")
            p.set_state(f"writer{who}", k)
        print("ok")
    """
    children = [run_child(code, path, fresh, go, who, own[who], shared, n_saves) for who in (0, 1)]
    time.sleep(0.5)  # let both start up and wait on the signal
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "ok", err
    with Project(path) as p, Project(fresh) as f:
        assert p.integrity_check() == [] and f.integrity_check() == []
        assert f.schema_version == SCHEMA_VERSION
        for who in (0, 1):
            recs = p.records(own[who])
            assert [r["id"] for r in recs] == [100 * who + k for k in range(n_saves)]
            assert p.image(own[who]).rev == n_saves
            assert p.get_state(f"writer{who}") == n_saves - 1
        # every save of the shared image is one whole revision: its final state is one
        # writer's last save, never a mix, and the log holds all 80 steps
        final = [r["id"] for r in p.records(shared)]
        assert final in ([k for k in range(n_saves)], [100 + k for k in range(n_saves)])
        assert p.image(shared).rev == 2 * n_saves
        writers = [r.action.split()[0] for r in p.history(shared)]
        assert len(writers) == 2 * n_saves
        # in lockstep every pair of saves k comes before either writer's save k + 1
        assert all(sorted(writers[2 * k : 2 * k + 2]) == ["w0", "w1"] for k in range(n_saves))


# -- with the annotation document ----------------------------------------------------------
def test_a_document_round_trips_and_saves_only_what_changed(project, image_id):
    from annotator.annotations.document import AnnotationDocument

    doc = AnnotationDocument(H, W)
    a = doc.add(np.pad(np.ones((10, 10), bool), ((0, H - 10), (0, W - 10))), label="dog")
    doc.add_many([{"segmentation": np.pad(np.ones((5, 5), bool), ((30, H - 35), (30, W - 35))), "predicted_iou": 0.5}])
    assert project.save(image_id, doc) == 1
    assert project.history(image_id)[0].action == "add 1 mask"
    loaded = project.load_document(image_id)
    assert loaded.records() == doc.records() and loaded.image_id == image_id
    doc.relabel([a], "cat")
    doc.bring_to_front([a])
    project.save(image_id, doc, action="relabel and raise")
    assert project.records(image_id) == doc.records()
    # the undo step holds only the mask that changed
    conn = sqlite3.connect(project.path)
    changed = conn.execute("SELECT ann_id FROM revision_changes WHERE image_id = ? AND rev = 2", (image_id,)).fetchall()
    conn.close()
    assert changed == [(a,)]
    assert {c.name for c in project.categories()} == {"dog", "cat"}


def test_another_connections_writes_are_never_overwritten_from_memory(tmp_path):
    from annotator.annotations.document import AnnotationDocument

    path = tmp_path / "p.annotator"
    with Project(path) as p1, Project(path) as p2:
        img = p1.add_image(write_png(tmp_path / "a.png")).id
        doc = AnnotationDocument(H, W)
        doc.add(np.pad(np.ones((10, 10), bool), ((0, H - 10), (0, W - 10))))
        assert p1.save(img, doc) == 1
        # meanwhile another session undoes that and saves something else as revision 1
        assert p2.undo(img) == []
        theirs = [rect_record(5, (30, 30, 50, 40))]
        assert p2.save(img, theirs, action="theirs") == 1
        doc.add(np.pad(np.ones((4, 4), bool), ((40, H - 44), (40, W - 44))))
        assert p1.save(img, doc, action="mine") == 2
        assert p1.records(img) == doc.records()
        assert p1.undo(img) == with_z(theirs)


def test_processes_creating_one_project_at_once_all_open_it(tmp_path):
    n_files, go = 20, tmp_path / "go"
    children = [
        run_child(
            """
        import os
        folder, go, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
        while not os.path.exists(go):
            time.sleep(0.0005)
        for k in range(n):  # all race to create each file: the first creates, the others wait
            with Project(f"{folder}/new{k}.annotator") as p:
                p.set_state(f"opened by {os.getpid()}", True)
        print("ok")
    """,
            tmp_path,
            go,
            n_files,
        )
        for _ in range(5)
    ]
    time.sleep(1.0)  # all started and waiting
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "ok", err
    for k in range(n_files):
        with Project(tmp_path / f"new{k}.annotator") as p:
            assert p.schema_version == SCHEMA_VERSION and p.integrity_check() == []
