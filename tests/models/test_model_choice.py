"""Which model the app runs, and the status line that says which and why."""

import dataclasses

import pytest
import torch

from annotator.models.checkpoints import sha256_of
from annotator.models.loading import choose_model, default_model, load_segmenter
from annotator.models.registry import VARIANTS
from annotator.testing import write_random_checkpoint

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty checkpoint cache and no model or checkpoint set in the environment."""
    for name in ("ANNOTATOR_MODEL", "ANNOTATOR_CHECKPOINT", "ANNOTATOR_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ANNOTATOR_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def vit_t_checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("vit_t") / "mobile_sam.pt", "vit_t", seed=1)


def offline(monkeypatch, name):
    """Make ``name``'s official URL unreachable (nothing here may touch the network)."""
    variant = dataclasses.replace(VARIANTS[name], url=f"http://127.0.0.1:9/{VARIANTS[name].filename}")
    monkeypatch.setitem(VARIANTS, name, variant)


def test_default_model_by_device(monkeypatch):
    from annotator.models import loading

    assert default_model(CPU) == "vit_t"
    assert default_model("cuda:1") == "sam2.1-large"
    assert default_model("mps") == "vit_b"
    monkeypatch.setattr(loading, "transformers_available", lambda: False)
    assert default_model("cuda") == "vit_h"  # SAM 2.1 needs transformers


def on_fake_cuda(monkeypatch):
    """CUDA looks available (this machine has none); nothing may touch a GPU then."""
    from annotator.models import loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loading, "default_precision", lambda device: "bf16")
    monkeypatch.setattr(loading, "load_sam", lambda variant, path, state=None: variant.name)
    monkeypatch.setattr(loading, "SamSegmenter", lambda sam, **kwargs: sam)


def test_cuda_default_is_sam21_large_from_one_place(cache, monkeypatch):
    """With CUDA (monkeypatched: this machine has none) and no model named, the CLI's loader
    runs SAM 2.1 large, from the Hub cache; without transformers vit_h, saying why."""
    from annotator.cli import build_parser, load_backend
    from annotator.models import device as devices
    from annotator.models import loading

    on_fake_cuda(monkeypatch)
    asked = []

    def fake_hub(name, checkpoint=None, **kwargs):
        asked.append((name, str(kwargs["device"]), kwargs["why"]))
        return "predictor", "info"

    monkeypatch.setattr(loading, "load_hub_segmenter", fake_hub)
    assert devices.pick_device().type == "cuda"
    args = build_parser().parse_args(["serve", "--no-download"])
    assert load_backend(args) == ("predictor", "info")
    assert asked == [("sam2.1-large", "cuda", "default on CUDA")]
    # no transformers: vit_h (from the cache here), and the status line says why
    monkeypatch.setattr(loading, "transformers_available", lambda: False)
    (cache / "sam_vit_h_4b8939.pth").write_bytes(b"cached")
    assert choose_model(CUDA, download=False)[:3] == ("vit_h", cache / "sam_vit_h_4b8939.pth", "default on CUDA")
    segmenter, info = loading.load_segmenter(download=False, runtime="torch")
    assert segmenter == "vit_h" and info.model == "vit_h"
    assert "sam2.1-large" in info.status and "transformers, which is not installed" in info.status


def test_unavailable_cuda_default_falls_back_to_cached_sam1(cache, monkeypatch):
    from huggingface_hub import constants

    from annotator.models import loading

    on_fake_cuda(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))  # an empty Hub cache
    (cache / "sam_vit_b_01ec64.pth").write_bytes(b"cached")
    segmenter, info = loading.load_segmenter(download=False, runtime="torch")
    assert segmenter == "vit_b"
    assert "sam2.1-large unavailable" in info.why and "facebook/sam2.1-hiera-large" in info.why


def test_cpu_default_is_vit_t_from_the_cache(cache, vit_t_checkpoint):
    (cache / "mobile_sam.pt").write_bytes(vit_t_checkpoint.read_bytes())
    segmenter, info = load_segmenter(device="cpu", download=False)
    assert (info.backend, info.model, info.why) == ("sam", "vit_t", "default on CPU")
    assert info.status.startswith("SAM vit_t: default on CPU · checkpoint mobile_sam.pt · cpu")
    assert segmenter.name == "vit_t"


def test_cpu_default_downloads_vit_t(cache, vit_t_checkpoint, monkeypatch):
    local = dataclasses.replace(VARIANTS["vit_t"], url=vit_t_checkpoint.as_uri(), sha256=sha256_of(vit_t_checkpoint))
    monkeypatch.setitem(VARIANTS, "vit_t", local)
    name, path, why, _ = choose_model(CPU)
    assert (name, path, why) == ("vit_t", cache / "mobile_sam.pt", "default on CPU")
    assert sha256_of(path) == local.sha256


def test_cuda_sam1_default_is_vit_h(cache):
    (cache / "sam_vit_h_4b8939.pth").write_bytes(b"cached")  # resolution does not open the file
    assert choose_model(CUDA, download=False)[:3] == ("vit_h", cache / "sam_vit_h_4b8939.pth", "default on CUDA")


def test_unavailable_default_uses_another_cached_model(cache, monkeypatch):
    offline(monkeypatch, "vit_t")
    (cache / "sam_vit_b_01ec64.pth").write_bytes(b"cached")
    name, path, why, _ = choose_model(CPU)
    assert (name, path) == ("vit_b", cache / "sam_vit_b_01ec64.pth")
    assert why == "vit_t's checkpoint unavailable, vit_b's is cached"


def test_no_weights_at_all_falls_back_to_grabcut_and_says_how_to_get_vit_t(cache, monkeypatch):
    offline(monkeypatch, "vit_t")
    _, info = load_segmenter(device="cpu")
    assert info.backend == "classical" and info.model is None
    assert "NOT SAM" in info.status and "mobile_sam.pt" in info.status and "curl" in info.status


def test_model_flag_overrides_everything(cache, vit_t_checkpoint, tiny_checkpoint, monkeypatch):
    (cache / "mobile_sam.pt").write_bytes(vit_t_checkpoint.read_bytes())
    monkeypatch.setenv("ANNOTATOR_MODEL", "vit_t")
    _, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    assert (info.model, info.why) == ("tiny", "chosen with --model")
    assert info.status.startswith("SAM tiny: chosen with --model · checkpoint sam_tiny.pth")
    # a named model that cannot be had is never swapped for another SAM
    offline(monkeypatch, "vit_b")
    _, info = load_segmenter("vit_b", device="cpu")
    assert info.backend == "classical" and "sam_vit_b_01ec64.pth" in info.reason


def test_model_from_the_environment(cache, vit_t_checkpoint, monkeypatch):
    (cache / "mobile_sam.pt").write_bytes(vit_t_checkpoint.read_bytes())
    monkeypatch.setenv("ANNOTATOR_MODEL", "vit_t")
    assert choose_model(CUDA, download=False)[:3] == ("vit_t", cache / "mobile_sam.pt", "chosen with ANNOTATOR_MODEL")


def test_checkpoint_without_model_runs_the_model_it_holds(cache, vit_t_checkpoint):
    # on CUDA the default would be vit_h; the file is recognised as vit_t instead
    name, path, why, state = choose_model(CUDA, checkpoint=vit_t_checkpoint)
    assert (name, path, why) == ("vit_t", vit_t_checkpoint, "recognised from the checkpoint")
    assert "image_encoder.neck.0.weight" in state  # read once, handed on to load_sam
    _, info = load_segmenter(checkpoint=str(vit_t_checkpoint), device="cpu")
    assert (info.model, info.why) == ("vit_t", "recognised from the checkpoint")


def test_unknown_model_is_a_clear_error(cache):
    with pytest.raises(ValueError, match="unknown model 'vit_x'.*vit_t"):
        load_segmenter("vit_x", device="cpu")
