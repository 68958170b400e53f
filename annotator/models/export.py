"""SAM's image encoder as ONNX files, built once per set of weights.

Exported from the official modules with PyTorch's TorchScript exporter (``dynamo=False``:
it needs no extra package and traces SAM's encoders as they are): (1, 3, 1024, 1024)
preprocessed image -> (1, 256, 64, 64) features, in fp32 and (ONNX Runtime's dynamic
quantization of it) int8. The prompt decoder is not exported: it runs in PyTorch
(``annotator.models.runtime`` says why).

Files live under ``<cache>/runtime/<weights key>/<part>/model.onnx``; the key is a hash of the
weights and of what shapes the graph, so another checkpoint or another exporter builds anew.
Each part is written to a temporary folder and renamed into place, so an interrupted or
concurrent build never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from annotator.models.modeling.attention import _FUSED

log = logging.getLogger(__name__)

# Bump when the exported graphs change (inputs, outputs, what they compute).
EXPORT_VERSION = 1
OPSET = 17
PARTS = ("encoder", "encoder-int8")
# parts earlier versions wrote and nothing reads now, removed on the next use of their folder:
# the prompt decoder (exported until 2026-12-02; clicks decode in PyTorch since)
RETIRED_PARTS = ("decoder",)


def weights_key(model: Sam) -> str:
    """A hash of the model's weights and architecture (and of this exporter's version): the
    name of its folder in the cache."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"v{EXPORT_VERSION} torch {torch.__version__.split('+')[0]} opset {OPSET}".encode())
    h.update(type(model.image_encoder).__name__.encode())
    for name, t in list(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
        # flattened first: a 0-d tensor (BatchNorm's num_batches_tracked in vit_t) has no byte view
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


@contextlib.contextmanager
def official_attention(model: torch.nn.Module):
    """The official attention modules for the duration (``fuse_attention`` swaps classes in
    place); what was fused is fused again afterwards."""
    official = {fused: orig for orig, fused in _FUSED.items()}
    swapped = [(m, type(m)) for m in model.modules() if type(m) in official]
    for m, cls in swapped:
        m.__class__ = official[cls]
    try:
        yield model
    finally:
        for m, cls in swapped:
            m.__class__ = cls


def _export(module, args, path: Path, input_names, output_names, dynamic_axes=None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_encoder(model: Sam, path: Path) -> None:
    size = model.image_encoder.img_size
    x = torch.zeros(1, 3, size, size)
    with official_attention(model), torch.no_grad():
        _export(model.image_encoder.float().eval(), (x,), path, ["image"], ["features"])


def quantize_encoder(fp32_path: Path, path: Path) -> None:
    """Dynamic int8 quantization of the encoder's matrix-multiplication weights (activations
    stay float and are quantized on the fly): ONNX Runtime's own tool, which needs ``onnx``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


class ExportCache:
    """Exported parts of one model under ``root/<weights key>/``, built on first use."""

    def __init__(self, model: Sam, root: str | os.PathLike | None = None, key: str | None = None):
        if root is None:
            from annotator.models.checkpoints import cache_dir

            root = cache_dir() / "runtime"
        self.model = model
        self.key = key or weights_key(model)
        self.dir = Path(root) / self.key

    def path(self, part: str) -> Path:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; one of {', '.join(PARTS)}")
        return self.dir / part / "model.onnx"

    def missing(self, parts) -> list[str]:
        return [p for p in parts if not self.path(p).exists()]

    def ensure(self, parts, progress: bool = True) -> dict[str, Path]:
        """Paths of ``parts``, exporting those not on disk yet (with a progress bar)."""
        for part in RETIRED_PARTS:
            if (self.dir / part).is_dir():
                log.info("removing %s: no longer used", self.dir / part)
                shutil.rmtree(self.dir / part, ignore_errors=True)
        todo = self.missing(parts)
        if "encoder-int8" in todo and "encoder" not in todo and not self.path("encoder").exists():
            todo.insert(0, "encoder")
        if todo:
            from tqdm.auto import tqdm

            log.info("exporting %s to %s (once for these weights)", ", ".join(todo), self.dir)
            bar = tqdm(
                total=len(todo),
                desc="Preparing the CPU runtime (once per checkpoint)",
                unit="part",
                disable=not progress,
            )
            try:
                for part in todo:
                    bar.set_postfix_str(part)
                    self._build(part)
                    bar.update(1)
            finally:
                bar.close()
        return {p: self.path(p) for p in parts}

    def _build(self, part: str) -> None:
        final = self.path(part).parent
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=final.parent))
        try:
            target = tmp / "model.onnx"
            if part == "encoder":
                export_encoder(self.model, target)
            else:
                quantize_encoder(self.path("encoder"), target)
            try:
                os.replace(tmp, final)
            except OSError:
                if not self.path(part).exists():  # not another process finishing first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
