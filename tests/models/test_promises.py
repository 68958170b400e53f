"""What the README promises, each checked once: the device order and ANNOTATOR_DEVICE, bf16
on CUDA by default (the choice, without a GPU), the 2048 px display, the default projects
folder, ``annotator auto --project FILE`` and the checkpoint download's progress bar."""

import uuid

import numpy as np
import pytest
import torch
from conftest import IMAGES

from annotator.models import device
from annotator.testing import TINY


# -- device and precision ----------------------------------------------------------------------
@pytest.fixture
def hardware(monkeypatch):
    """Pretend which accelerators exist: hardware(cuda=..., mps=..., bf16=...)."""
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)

    def set_(cuda=False, mps=False, bf16=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(device, "_mps_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    "cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"), (True, False, "cuda")]
)
def test_device_order_is_cuda_then_mps_then_cpu(hardware, cuda, mps, expected):
    hardware(cuda=cuda, mps=mps)
    assert device.pick_device().type == expected


def test_annotator_device_and_the_flag_choose(hardware, monkeypatch):
    hardware(cuda=True, mps=True)
    monkeypatch.setenv(device.DEVICE_ENV, "cpu")
    assert device.pick_device().type == "cpu"  # the variable beats the order
    assert device.pick_device("mps").type == "mps"  # the flag beats the variable
    hardware(cuda=False)
    monkeypatch.setenv(device.DEVICE_ENV, "cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        device.pick_device()


def test_the_encoder_runs_in_bf16_on_cuda_by_default(hardware, tiny_checkpoint, monkeypatch):
    hardware(cuda=True, bf16=True)
    assert device.default_precision(torch.device("cuda")) == "bf16"
    assert device.default_precision(torch.device("cpu")) == "fp32"
    hardware(cuda=True, bf16=False)  # an older GPU without bf16
    assert device.default_precision(torch.device("cuda")) == "fp32"
    # the loader takes that default when no --precision is given (on the CPU here: the
    # device is chosen first, the precision follows it)
    from annotator.models import loading as backends

    chosen = []
    monkeypatch.setattr(backends, "default_precision", lambda dev: chosen.append(dev.type) or "fp32")
    backends.load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    assert chosen == ["cpu"]
    chosen.clear()
    backends.load_segmenter("tiny", str(tiny_checkpoint), device="cpu", precision="fp32")
    assert chosen == []


# -- display ------------------------------------------------------------------------------------
def test_large_images_are_shown_at_2048_px_and_clicks_map_back(tiny_checkpoint):
    from annotator.app.workbench import Workbench
    from annotator.models.loading import load_segmenter

    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    wb = Workbench(segmenter, info, prefetch=False)
    sid = uuid.uuid4().hex
    big = np.zeros((1500, 4096, 3), np.uint8)
    v = wb.load(sid, big, "wide.png")
    assert v.canvas.shape == (750, 2048, 3) and "shown at 50%" in v.message
    small = np.zeros((1000, 2048, 3), np.uint8)
    assert wb.load(sid, small, "fits.png").canvas.shape == (1000, 2048, 3)  # not downscaled


# -- projects folder ----------------------------------------------------------------------------
def test_the_default_projects_folder(monkeypatch, tmp_path):
    from annotator.projects.library import PROJECTS_DIR_ENV, ProjectLibrary, default_projects_dir

    monkeypatch.delenv(PROJECTS_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_projects_dir() == tmp_path / "home" / ".local" / "share" / "annotator" / "projects"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_projects_dir() == tmp_path / "data" / "annotator" / "projects"
    monkeypatch.setenv(PROJECTS_DIR_ENV, str(tmp_path / "mine"))
    assert ProjectLibrary().root == tmp_path / "mine"


# -- annotator auto --project FILE -------------------------------------------------------------
def test_auto_into_a_project_file_resumes_and_opens_in_the_app(tmp_path, tiny_checkpoint):
    from annotator.cli import main
    from annotator.projects.store import Project

    project = tmp_path / "street.annotator"
    photos = sorted(IMAGES.glob("*.jpg"))[:2]
    argv = [
        "auto",
        *map(str, photos),
        "--project",
        str(project),
        "--model",
        "tiny",
        "--checkpoint",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--points-per-side",
        "2",
        "--pred-iou-thresh",
        "0",
        "--stability-score-thresh",
        "0",
    ]
    assert main(argv) == 0
    with Project(project) as p:
        infos = p.images()
        assert [i.name for i in infos] == [ph.name for ph in photos]
        assert all(i.prelabel is not None and i.n_annotations > 0 for i in infos)
        before = {i.id: p.records(i.id) for i in infos}
    assert main(argv) == 0  # again: everything is done already, nothing changes
    with Project(project) as p:
        assert {i.id: p.records(i.id) for i in p.images()} == before
        assert all(r["source"] == "auto" and r["review"] == "pending" for rs in before.values() for r in rs)


# -- download progress -------------------------------------------------------------------------
def test_a_download_shows_a_progress_bar(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import dataclasses

    from annotator.models.checkpoints import resolve_checkpoint, sha256_of

    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    variant = dataclasses.replace(TINY, url=tiny_checkpoint.as_uri(), sha256=sha256_of(tiny_checkpoint))
    path = resolve_checkpoint(variant, cache=tmp_path / "cache")
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    err = capsys.readouterr().err
    assert f"downloading {path.name}" in err and "100%" in err, err
