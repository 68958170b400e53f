"""Batch pre-labelling: resumable runs into a project, the distributed path's core, the CLI."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGES
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from annotator.amg import batch, distributed, params
from annotator.formats.images import ImageError
from annotator.projects.store import Project


class RectGenerator:
    """Stands in for SAM's generator where the model is not what is tested: two rectangles
    per image in SAM's ``coco_rle`` record format, counting calls; can be told to fail."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls = 0
        self.fail_on_call = fail_on_call

    def generate(self, image):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        h, w = image.shape[:2]
        out = []
        for k, (x0, y0, x1, y1) in enumerate([(0, 0, w // 2, h // 2), (w // 4, h // 4, w, h)]):
            m = np.zeros((h, w), np.uint8)
            m[y0:y1, x0:x1] = 1
            rle = mask_utils.encode(np.asfortranarray(m))
            out.append(
                {
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                    "area": int(m.sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": 0.9 - k * 0.1,
                    "point_coords": [[x0 + 1.5, y0 + 1.5]],
                    "stability_score": np.float32(0.97),
                    "crop_box": [0, 0, w, h],
                }
            )
        return out


def make_images(folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        p = folder / f"img{k}.png"
        Image.fromarray(rng.integers(0, 255, (24 + k, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_generator_flags_match_sams_names_and_defaults():
    from segment_anything import SamAutomaticMaskGenerator

    sam = inspect.signature(SamAutomaticMaskGenerator.__init__).parameters
    scalar = {n for n, p in sam.items() if isinstance(p.default, (int, float)) and n != "self"}
    assert set(params.GENERATOR_PARAMS) == scalar
    for name, (default, _) in params.GENERATOR_PARAMS.items():
        assert default == sam[name].default, name


def test_find_images_takes_files_and_folders_once_each(tmp_path):
    paths = make_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "sub").mkdir()
    deep = make_images(tmp_path / "imgs" / "sub", 1)
    assert batch.find_images([tmp_path / "imgs", paths[1]]) == paths
    assert batch.find_images([tmp_path / "imgs"], recursive=True) == paths + deep
    with pytest.raises(ImageError, match="no such file or folder"):
        batch.find_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        batch.find_images([tmp_path / "empty"])
    assert batch.sidecar_path("out/coco.json") == Path("out/coco.annotator")
    assert batch.sidecar_path("out/coco") == Path("out/coco.annotator")


def test_an_interrupted_run_resumes_without_redoing_or_doubling(tmp_path):
    paths = make_images(tmp_path / "imgs")
    settings = {"points_per_side": 4}
    with Project(tmp_path / "p.annotator") as project:
        ids = [i.id for i in project.add_images(paths)]
        project.set_status(ids[3], "done")  # a finished image is never pre-labelled
        first = RectGenerator(fail_on_call=3)
        with pytest.raises(KeyboardInterrupt):
            batch.prelabel(project, first, ids, settings, progress=False)
        assert [i.n_annotations for i in project.images()] == [2, 2, 0, 0]
        second = RectGenerator()
        result = batch.prelabel(project, second, ids, settings, progress=False)
        assert second.calls == 1 and result.processed == [ids[2]]
        assert result.skipped == [ids[0], ids[1], ids[3]] and result.n_masks == 2
        third = RectGenerator()
        batch.prelabel(project, third, ids, settings, progress=False)
        assert third.calls == 0
        infos = project.images()
        assert [i.n_annotations for i in infos] == [2, 2, 2, 0]
        assert all(i.prelabel["points_per_side"] == 4 for i in infos[:3]) and infos[3].prelabel is None
        recs = project.records(ids[0])
        assert [(r["source"], r["review"], r["predicted_iou"]) for r in recs] == [
            ("auto", "pending", 0.9),
            ("auto", "pending", 0.8),
        ]
        assert recs[0]["point_coords"] == [[1.5, 1.5]] and recs[0]["stability_score"] == pytest.approx(0.97)
        assert project.undo_state(ids[0]).undo_action == batch.ACTION


def test_an_unreadable_image_is_reported_and_the_run_goes_on(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    with Project(tmp_path / "p.annotator") as project:
        ids = [i.id for i in project.add_images(paths)]
        paths[0].unlink()
        gen = RectGenerator()
        result = batch.prelabel(project, gen, ids, {}, progress=False)
        assert result.processed == [ids[1]] and "no longer at" in result.failed[ids[0]]
        assert project.image(ids[0]).prelabel is None  # a later run tries it again


def test_the_distributed_actor_core_gives_what_a_local_run_gives(tmp_path):
    paths = make_images(tmp_path / "imgs", 3)
    with Project(tmp_path / "local.annotator") as local, Project(tmp_path / "dist.annotator") as dist:
        local_ids = [i.id for i in local.add_images(paths)]
        batch.prelabel(local, RectGenerator(), local_ids, {"k": 1}, progress=False)
        infos = dist.add_images(paths)
        rows_in = {
            "image_id": [i.id for i in infos],
            "path": [i.path for i in infos],
            "sha256": [i.sha256 for i in infos],
        }
        rows_in["sha256"][2] = "0" * 64  # the file a node sees is not the project's
        out = distributed.segment_batch(RectGenerator(), rows_in)
        assert list(out["error"][:2]) == ["", ""] and "differs" in out["error"][2]
        rows = [dict(zip(out, values)) for values in zip(*out.values())]
        json.dumps(rows[0]["records"])  # what travels between nodes is plain text
        result = distributed.merge_rows(dist, rows, {"k": 1}, progress=False)
        assert result.processed == [infos[0].id, infos[1].id] and infos[2].id in result.failed
        for a, b in zip(local_ids[:2], result.processed):
            assert local.records(a) == dist.records(b)
        assert dist.image(infos[2].id).prelabel is None


def test_distributed_run_without_ray_says_how_to_install_it(tmp_path):
    try:
        import ray  # noqa: F401

        pytest.skip("ray is installed here")
    except ImportError:
        pass
    with Project(tmp_path / "p.annotator") as project, pytest.raises(ImportError, match=r"annotator\[ray\]"):
        distributed.run(project, [], {}, concurrency=2)


def test_gpus_per_actor_follow_the_cluster_and_impossible_requests_name_the_flag():
    fit = distributed.gpus_per_actor
    assert fit({"CPU": 32, "GPU": 8}, 8, None) == 1.0  # one GPU each
    assert fit({"CPU": 32, "GPU": 2}, 4, None) == 0.5  # fewer GPUs than actors: shared
    assert fit({"CPU": 2}, 2, None) == 0.0  # no GPU: CPU actors (Ray would wait forever for one)
    assert fit({"CPU": 32, "GPU": 8}, 4, 0.5) == 0.5 and fit({"CPU": 2}, 2, 0) == 0.0
    with pytest.raises(ValueError, match=r"--gpus-per-actor 1 with --ray 2 needs 2 GPUs.*has 0.*--gpus-per-actor 0"):
        fit({"CPU": 2}, 2, 1.0)
    with pytest.raises(ValueError, match=r"--gpus-per-actor 1 with --ray 4 needs 4 GPUs.*has 2.*--gpus-per-actor 0.5"):
        fit({"CPU": 32, "GPU": 2}, 4, 1.0)
    with pytest.raises(ValueError, match=r"--ray 4 actors need 4 CPUs.*has 2.*--ray 2"):
        fit({"CPU": 2, "GPU": 4}, 4, None)
    with pytest.raises(ValueError, match="--ray 0"):
        fit({"CPU": 2}, 0, None)


def test_export_of_prelabelled_images_loads_in_pycocotools(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    with Project(tmp_path / "p.annotator") as project:
        ids = [i.id for i in project.add_images(paths)]
        batch.prelabel(project, RectGenerator(), ids, {}, progress=False)
        project.add_category("cat")
        records = project.records(ids[0])
        records[0]["label"] = "dog"
        records[1]["review"] = "rejected"
        project.save(ids[0], records, action="review")
        out = project.export_coco(tmp_path / "out.json")
    coco = COCO(str(out))
    assert sorted(coco.imgs) == ids
    names = {c["id"]: c["name"] for c in coco.cats.values()}
    assert {"cat", "dog"} <= set(names.values())
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[ids[0]]))
    assert [names[a["category_id"]] for a in anns] == ["dog"]  # the rejected one is left out
    assert len(coco.getAnnIds(imgIds=[ids[1]])) == 2
    m = coco.annToMask(anns[0])
    assert m.shape == (24, 32) and m[:12, :16].all() and m.sum() == 12 * 16


# -- with SAM: the command line and the Ray actor, on the real photos ------------------------
FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture
def counted_generate(monkeypatch):
    """Counts calls of the real generator's ``generate``."""
    from annotator.amg.generator import MaskGenerator

    calls = []
    real = MaskGenerator.generate

    def generate(self, image, *args, **kwargs):
        calls.append(image.shape)
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(MaskGenerator, "generate", generate)
    return calls


def test_auto_prelabels_the_photos_into_coco_and_resumes(tmp_path, tiny_checkpoint, counted_generate):
    from annotator.cli import main

    out = tmp_path / "prelabels.json"
    argv = [
        "auto",
        str(IMAGES),
        "-o",
        str(out),
        "--model",
        "tiny",
        "--checkpoint",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        *FAST,
    ]
    assert main(argv) == 0
    photos = sorted(IMAGES.glob("*.jpg"))
    assert len(counted_generate) == len(photos) == 4
    coco = COCO(str(out))
    assert sorted(img["file_name"] for img in coco.imgs.values()) == [p.name for p in photos]
    for img in coco.imgs.values():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert anns, img["file_name"]
        assert coco.annToMask(anns[0]).shape == (img["height"], img["width"])
        assert all(a["source"] == "auto" and "predicted_iou" in a for a in anns)
    first = json.loads(out.read_text())
    assert first["info"]["parameters"]["points_per_side"] == 2
    # again: nothing is segmented twice, the file holds the same masks
    assert main(argv) == 0
    assert len(counted_generate) == 4
    again = json.loads(out.read_text())
    assert [a["segmentation"] for a in again["annotations"]] == [a["segmentation"] for a in first["annotations"]]
    # a new photo in a second folder: only it is segmented, into the same project
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "copy.jpg").write_bytes(photos[0].read_bytes())  # same picture: already done
    make_images(extra, 1)
    assert main(argv[:2] + [str(extra)] + argv[2:]) == 0
    assert len(counted_generate) == 5
    assert len(COCO(str(out)).imgs) == 5


def test_auto_refuses_what_it_cannot_do(tmp_path, tiny_checkpoint, capsys):
    from annotator.cli import main

    assert main(["auto", str(IMAGES)]) == 2
    assert "-o OUT.json" in capsys.readouterr().err
    assert main(["auto", str(tmp_path / "missing"), "-o", str(tmp_path / "o.json")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    try:
        import ray  # noqa: F401
    except ImportError:
        assert main(["auto", str(IMAGES), "-o", str(tmp_path / "o.json"), "--ray", "2"]) == 2
        assert "annotator[ray]" in capsys.readouterr().err


def test_the_ray_actor_loads_sam_once_and_segments_batches(tiny_checkpoint, counted_generate):
    actor = distributed.SegmentEverything(
        "tiny",
        str(tiny_checkpoint),
        device="cpu",
        generator_params={"points_per_side": 2, "pred_iou_thresh": 0, "stability_score_thresh": 0},
    )
    dog = IMAGES / "dog.jpg"
    out = actor({"image_id": np.array([7, 8]), "path": np.array([str(dog), str(IMAGES / "nope.jpg")])})
    assert list(out["image_id"]) == [7, 8] and out["error"][0] == "" and "nope.jpg" in out["error"][1]
    records = json.loads(out["records"][0])
    assert records and records[0]["segmentation"]["size"] == [534, 800]
    assert len(counted_generate) == 1


class RectFinder:
    """Stands in for SAM 3's concept finder where the model is not what is tested: each text
    finds one rectangle per image (its place depends on the text), scored 0.9; counts calls."""

    def __init__(self):
        self.embedded = 0
        self.searches: list[str] = []

    def embed(self, image):
        self.embedded += 1
        return image

    def find_all(self, image, text, threshold=0.5):
        from annotator.models.protocol import Instance

        self.searches.append(text)
        h, w = image.shape[:2]
        m = np.zeros((h, w), bool)
        k = len(text) % 3
        m[k : k + h // 2, k : k + w // 2] = True
        return [Instance(m, 0.9, (k, k, k + w // 2, k + h // 2))]


def test_find_concepts_resumes_per_text_and_keeps_what_people_accepted(tmp_path):
    paths = make_images(tmp_path / "imgs", 4)
    with Project(tmp_path / "p.annotator") as project:
        ids = [i.id for i in project.add_images(paths)]
        # a mask a person accepted on the first image, and a finished fourth image
        doc = project.load_document(ids[0])
        (accepted,) = doc.add_many([np.ones((24, 32), bool)], source="prompt", label="road")
        doc.set_review([accepted], "accepted")
        project.save(ids[0], doc)
        before = project.records(ids[0])
        project.set_status(ids[3], "done")
        finder = RectFinder()
        needs = batch.needs_concepts(project, ["car"])
        # stopped after the first image (a Cancel between images): that image is saved
        steps = batch.find_concepts(project, finder, ids, ["car"], model="m", needs=needs, progress=False)
        assert next(steps) == (ids[0], 1)
        steps.close()
        assert batch.concepts_searched(project, ids[0]) == ["car"]
        assert [i.n_annotations for i in project.images()] == [2, 0, 0, 0]
        # run again: goes on with the images not yet searched for "car"; the done one is skipped
        result = batch.BatchResult()
        done = list(
            batch.find_concepts(project, finder, ids, ["car"], needs=needs, result=result, model="m", progress=False)
        )
        assert done == [(ids[1], 1), (ids[2], 1)] and result.skipped == [ids[0], ids[3]]
        assert finder.searches == ["car"] * 3
        records = project.records(ids[0])
        assert records[0] == before[0]  # the accepted mask, untouched
        found = records[1]
        assert (found["label"], found["review"], found["source"]) == ("car", "pending", "concept")
        assert found["meta"] == {"model": "m", "score": 0.9, "concept": "car"}
        # another text searches every image not done again, adding to what is there
        person = batch.needs_concepts(project, ["person"])
        assert len(list(batch.find_concepts(project, finder, ids, ["person"], needs=person, progress=False))) == 3
        assert [i.n_annotations for i in project.images()] == [3, 2, 2, 0]
        assert batch.concepts_searched(project, ids[1]) == ["car", "person"]
        assert project.records(ids[0])[0] == before[0]


def test_find_concepts_keeps_the_best_under_the_mask_cap(tmp_path):
    paths = make_images(tmp_path / "imgs", 1)
    with Project(tmp_path / "p.annotator") as project:
        (image_id,) = [i.id for i in project.add_images(paths)]
        records = {
            "car": [{"segmentation": np.eye(24, 32, k, dtype=bool), "meta": {"score": 0.9 - k / 10}} for k in range(4)]
        }
        assert batch.store_concepts(project, image_id, records, max_masks=3) == 3
        assert [r["meta"]["score"] for r in project.records(image_id)] == [0.9, 0.8, 0.7]
        assert batch.store_concepts(project, image_id, records, max_masks=3) == 0  # full: nothing dropped
        assert project.image(image_id).n_annotations == 3


def test_the_ray_text_actor_embeds_each_text_once_and_gives_what_a_local_run_gives(tmp_path, sam3_dir):
    import cv2

    from annotator.models import hf_testing
    from annotator.models.loading import load_concept_finder

    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for k in range(2):
        paths.append(folder / f"street{k}.png")
        cv2.imwrite(str(paths[-1]), hf_testing.shapes_image(seed=k)[..., ::-1])
    texts, settings = ["car", "person"], {"model": "m", "texts": ["car", "person"], "threshold": 0.0}
    actor = distributed.FindConcepts(texts, checkpoint=str(sam3_dir), device="cpu", threshold=0.0, model="m")
    assert actor.finder.text_encoder_calls == 2  # embedded when the actor starts
    with Project(tmp_path / "local.annotator") as local, Project(tmp_path / "dist.annotator") as dist:
        local_ids = [i.id for i in local.add_images(paths)]
        finder = load_concept_finder(sam3_dir, device="cpu")
        batch.find_all_into(local, finder, local_ids, texts, settings, threshold=0.0, progress=False)
        infos = dist.add_images(paths)
        rows = []
        for info in infos:  # one image per batch
            out = actor({"image_id": [info.id], "path": [info.path], "sha256": [info.sha256]})
            assert out["error"][0] == ""
            rows.append(dict(zip(out, [v[0] for v in out.values()])))
        assert actor.finder.text_encoder_calls == 2  # not again for each batch
        result = distributed.merge_rows(dist, rows, settings, progress=False)
        assert result.processed == [i.id for i in infos] and result.n_masks > 0
        for a, b in zip(local_ids, result.processed):
            assert local.records(a) == dist.records(b)
            assert dist.image(b).prelabel["texts"] == texts
            assert batch.concepts_searched(dist, b) == texts
        assert {r["label"] for r in dist.records(infos[0].id)} <= set(texts)
