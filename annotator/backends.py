"""Choosing and loading the segmentation backend the app and CLI run on.

SAM when weights can be had (explicit path, cache or download); the classical GrabCut
backend only when they cannot, and then loudly: ``BackendInfo.status`` says which backend
runs and why, for the UI's status line and the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from annotator.checkpoints import CHECKPOINT_ENV, CheckpointError, load_sam, resolve_checkpoint
from annotator.classical import GrabCutSegmenter
from annotator.device import default_precision, pick_device
from annotator.embeddings import EmbeddingCache
from annotator.registry import get_variant
from annotator.segmenter import SamSegmenter

log = logging.getLogger(__name__)


@dataclass
class BackendInfo:
    backend: str  # "sam" or "classical"
    model: str | None
    checkpoint: str | None
    device: str
    precision: str
    reason: str = ""

    @property
    def status(self) -> str:
        if self.backend == "sam":
            return (
                f"SAM {self.model} · checkpoint {Path(self.checkpoint).name} · "
                f"{self.device} · encoder {self.precision}"
            )
        return f"Classical backend (GrabCut), NOT SAM: {self.reason}"


def default_model(device) -> str:
    """The model to run when the user names none: the best one the hardware can afford."""
    return "vit_h" if str(device).startswith("cuda") else "vit_b"


def load_segmenter(
    model: str | None = None,
    checkpoint: str | None = None,
    *,
    device: str | None = None,
    precision: str | None = None,
    download: bool = True,
    fallback: bool = True,
    cache_bytes: int = 512 * 2**20,
):
    """Returns ``(segmenter, BackendInfo)``.

    Falls back to GrabCut only when no weights can be found or downloaded. A checkpoint
    that exists but is broken or of the wrong architecture is an error, never a fallback:
    the user asked for it.
    """
    dev = pick_device(device)
    name = model or default_model(dev)
    variant = get_variant(name)
    prec = precision or default_precision(dev)
    try:
        path = resolve_checkpoint(variant, checkpoint, download=download)
    except CheckpointError as e:
        if not fallback or checkpoint or os.environ.get(CHECKPOINT_ENV):
            raise
        info = BackendInfo("classical", None, None, "cpu", "n/a", reason=f"no SAM weights ({e})")
        log.warning("running WITHOUT SAM: %s", info.status)
        return GrabCutSegmenter(), info
    sam = load_sam(variant, path)
    segmenter = SamSegmenter(sam, device=dev, precision=prec, cache=EmbeddingCache(cache_bytes), name=name)
    info = BackendInfo("sam", name, str(path), str(dev), prec)
    log.info("backend: %s", info.status)
    return segmenter, info
