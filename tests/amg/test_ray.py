"""The Ray path end to end: ``annotator auto --ray`` runs the real Ray Data pipeline on a
local Ray cluster (the ``ray`` extra, which the README's test command installs) over the
shared photos with a tiny random SAM, writes COCO and resumes."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import IMAGES
from pycocotools.coco import COCO

try:
    import ray
except ImportError as e:
    raise ImportError(f"{e}. The Ray tests need the ray extra: pip install -e '.[test,ray]'") from e

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs and no GPU, as on a CI machine."""
    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(3):
        try:
            ray.init(
                num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False
            )
            break
        except Exception:  # Ray gives a node 30 s to start, which a busy CI machine may miss
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray.cluster_resources()
    ray.shutdown()


def auto(tmp_path, checkpoint, *args) -> list[str]:
    return [
        "auto",
        *args,
        "-o",
        str(tmp_path / "prelabels.json"),
        "--model",
        "tiny",
        "--checkpoint",
        str(checkpoint),
        "--device",
        "cpu",
        *FAST,
        "--ray",
        "2",
        "--batch-size",
        "2",
    ]


@pytest.mark.slow
def test_auto_on_ray_writes_coco_and_resumes(cluster, tmp_path, tiny_checkpoint, capsys):
    from annotator.cli import main

    assert cluster.get("GPU", 0) == 0
    photos = sorted(IMAGES.glob("*.jpg"))
    assert len(photos) == 4
    # three photos, on the cluster's defaults: no GPU there, so none asked for
    assert main(auto(tmp_path, tiny_checkpoint, *map(str, photos[:3]))) == 0
    err = capsys.readouterr().err
    assert "2 actors with 0 GPUs each" in err and "3 to segment" in err
    out = tmp_path / "prelabels.json"
    first = COCO(str(out))
    assert sorted(i["file_name"] for i in first.imgs.values()) == [p.name for p in photos[:3]]
    for img in first.imgs.values():
        anns = first.loadAnns(first.getAnnIds(imgIds=[img["id"]]))
        assert anns, img["file_name"]
        assert all(a["source"] == "auto" and "predicted_iou" in a for a in anns)
        assert first.annToMask(anns[0]).shape == (img["height"], img["width"])
    assert json.loads(out.read_text())["info"]["parameters"]["points_per_side"] == 2
    # the whole folder: the three done photos are kept as they are, only the fourth is segmented
    done = {a["id"]: a["segmentation"] for a in json.loads(out.read_text())["annotations"]}
    assert main(auto(tmp_path, tiny_checkpoint, str(IMAGES))) == 0
    assert "4 images, 3 already done, 1 to segment" in capsys.readouterr().err
    again = json.loads(out.read_text())
    assert {a["id"]: a["segmentation"] for a in again["annotations"] if a["id"] in done} == done
    assert len(again["images"]) == 4 and len(again["annotations"]) > len(done)
    assert all(COCO(str(out)).getAnnIds(imgIds=[i["id"]]) for i in again["images"])
    # nothing left to do: Ray is not even asked
    assert main(auto(tmp_path, tiny_checkpoint, str(IMAGES))) == 0
    assert "4 already done, 0 to segment" in capsys.readouterr().err
    assert json.loads(out.read_text())["annotations"] == again["annotations"]


def test_a_gpu_request_the_cluster_cannot_hold_fails_at_once(cluster, tmp_path, tiny_checkpoint, capsys):
    """Ray would wait for the GPU forever; the command says which flag to change instead."""
    from annotator.cli import main

    returned = []
    argv = auto(tmp_path, tiny_checkpoint, str(IMAGES / "dog.jpg")) + ["--gpus-per-actor", "1"]
    worker = threading.Thread(target=lambda: returned.append(main(argv)), daemon=True)
    worker.start()
    worker.join(timeout=120)  # a bound for a hang, not a speed goal: it returns in well under a second
    assert not worker.is_alive(), "annotator auto --ray waits for GPUs the cluster does not have"
    assert returned == [2]
    err = capsys.readouterr().err
    assert "--gpus-per-actor 1 with --ray 2 needs 2 GPUs and the Ray cluster has 0" in err
    assert "--gpus-per-actor 0" in err
    assert not (tmp_path / "prelabels.json").exists()


@pytest.mark.slow
def test_auto_text_on_ray_finds_each_text_and_resumes(cluster, tmp_path, sam3_dir, capsys):
    """``--text`` through the real Ray Data pipeline, on the same cluster: SAM 3 actors, the
    texts' COCO categories, masks on both images, and a second run with nothing to do."""
    import cv2

    from annotator.cli import main
    from annotator.models import hf_testing

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"street{k}.png"), hf_testing.shapes_image(seed=k)[..., ::-1])
    out = tmp_path / "found.json"
    argv = [
        "auto",
        str(folder),
        "--text",
        "car",
        "--text",
        "person",
        "--model",
        "sam3",
        "--checkpoint",
        str(sam3_dir),
        "--threshold",
        "0",
        "-o",
        str(out),
        "--device",
        "cpu",
        "--ray",
        "2",
        "--batch-size",
        "1",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "2 actors with 0 GPUs each" in err and "2 to segment" in err
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["categories"]][:2] == ["car", "person"]
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert {names[a["category_id"]] for a in data["annotations"]} == {"car", "person"}
    assert len({a["image_id"] for a in data["annotations"]}) == 2
    assert all(a["model"].startswith("sam3 (facebook/sam3@local folder)") for a in data["annotations"])
    assert main(argv) == 0
    assert "2 already done, 0 to segment" in capsys.readouterr().err
    assert json.loads(out.read_text())["annotations"] == data["annotations"]
