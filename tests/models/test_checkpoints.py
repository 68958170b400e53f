import os
import pickle

import pytest
import torch

from annotator.models.checkpoints import (
    CheckpointError,
    ChecksumError,
    guess_variant,
    load_sam,
    read_state_dict,
    resolve_checkpoint,
    sha256_of,
)
from annotator.models.registry import VARIANTS, SamVariant, get_variant
from annotator.testing import TINY, random_sam


def tiny_with_url(url, sha256=None, size=None):
    return SamVariant("tiny", 64, 2, 2, (1,), url=url, sha256=sha256, size_bytes=size)


def test_registry_has_official_checkpoints():
    for name in ("vit_h", "vit_l", "vit_b"):
        v = get_variant(name)
        assert v.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/sam_" + name)
        assert len(v.sha256) == 64 and v.size_bytes > 300_000_000
    with pytest.raises(ValueError, match="unknown model"):
        get_variant("vit_x")


def test_explicit_path_wins_and_loads(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOTATOR_CACHE", str(tmp_path / "cache"))
    assert resolve_checkpoint(TINY, tiny_checkpoint) == tiny_checkpoint
    model = load_sam(TINY, tiny_checkpoint)
    expected = random_sam("tiny", seed=0).state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_env_checkpoint(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("ANNOTATOR_CHECKPOINT", str(tiny_checkpoint))
    assert resolve_checkpoint(VARIANTS["vit_b"]) == tiny_checkpoint


def test_missing_explicit_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(TINY, tmp_path / "nope.pth")


def test_cache_hit_does_not_download(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    variant = tiny_with_url("http://127.0.0.1:9/sam_tiny.pth")  # would fail if fetched
    cached = tmp_path / "sam_tiny.pth"
    cached.write_bytes(tiny_checkpoint.read_bytes())
    assert resolve_checkpoint(variant, cache=tmp_path) == cached


def test_download_checks_sha256_and_renames_atomically(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    good = tiny_with_url(tiny_checkpoint.as_uri(), sha256=sha256_of(tiny_checkpoint))
    path = resolve_checkpoint(good, cache=tmp_path / "c", progress=False)
    assert path == tmp_path / "c" / "sam_tiny.pth"
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["sam_tiny.pth"]  # no .part left over
    load_sam(TINY, path)


def test_sha256_mismatch_is_rejected_and_nothing_cached(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    bad = tiny_with_url(tiny_checkpoint.as_uri(), sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256"):
        resolve_checkpoint(bad, cache=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.delenv("ANNOTATOR_CHECKPOINT", raising=False)
    monkeypatch.setenv("ANNOTATOR_CACHE", str(tmp_path))
    offline = tiny_with_url("http://127.0.0.1:9/sam_tiny.pth", size=40_000_000)
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint(offline, progress=False)
    msg = str(e.value)
    assert "http://127.0.0.1:9/sam_tiny.pth" in msg
    assert str(tmp_path / "sam_tiny.pth") in msg
    assert "--checkpoint" in msg and "ANNOTATOR_CHECKPOINT" in msg
    with pytest.raises(CheckpointError, match="no checkpoint for tiny"):
        resolve_checkpoint(offline, download=False)


def test_not_a_checkpoint_gets_a_clear_error(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_sam(TINY, text)

    marker = tmp_path / "pwned"

    class Evil:  # unpickling it would run a shell command that creates ``marker``
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        torch.save({"x": Evil()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"other than tensors \((posix|os)\.system\).*could run arbitrary"):
        read_state_dict(evil)
    with pytest.raises(CheckpointError, match="other than tensors"):
        load_sam(TINY, evil)
    assert not marker.exists()  # weights_only=True: the pickled command never ran...
    torch.load(evil, weights_only=False)
    assert marker.exists()  # ...which plain unpickling runs: the payload is real

    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="not a SAM tiny checkpoint"):
        load_sam(TINY, other)


def test_wrong_architecture_names_the_right_one(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="not a SAM vit_b checkpoint.*shape mismatch"):
        load_sam(VARIANTS["vit_b"], tiny_checkpoint)
    # a checkpoint whose encoder is 1024 wide and 24 deep is recognised as vit_l
    fake = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024)}
    fake |= {f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(24)}
    assert guess_variant(fake, VARIANTS.values()) == "vit_l"


def test_fine_tuning_wrappers_load(tiny_checkpoint, tmp_path):
    state = torch.load(tiny_checkpoint, weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 3}, wrapped)
    model = load_sam(TINY, wrapped)
    assert torch.equal(model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])
