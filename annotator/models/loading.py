"""Choosing and loading the segmentation backend the app and CLI run on.

SAM when weights can be had (explicit path, cache or download); the classical GrabCut
backend only when they cannot, and then loudly: ``BackendInfo.status`` says which backend
and model run and why, for the UI's status line and the log.

Which model: the one named (``--model`` or ``ANNOTATOR_MODEL``) over everything; else the
one a given checkpoint file holds; else the device's default (``default_model``, the one
place the CLI, the app and the Space take it from), the best the hardware can afford:
SAM 2.1 large on CUDA (vit_h when ``transformers`` is not installed), vit_b on Apple MPS,
MobileSAM's vit_t on CPU. When the default's checkpoint can be neither found nor downloaded,
a SAM 1 checkpoint already in the cache is used rather than dropping to GrabCut.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from annotator.models.checkpoints import (
    CHECKPOINT_ENV,
    CheckpointError,
    guess_variant,
    load_sam,
    read_state_dict,
    resolve_checkpoint,
)
from annotator.models.device import default_precision, pick_device
from annotator.models.embeddings import EmbeddingCache
from annotator.models.grabcut import GrabCutSegmenter
from annotator.models.hub import HUB_MODELS, get_hub_model, resolve_hub_checkpoint
from annotator.models.predictor import SamSegmenter
from annotator.models.registry import VARIANTS, get_variant
from annotator.models.runtime import check_runtime, default_runtime

log = logging.getLogger(__name__)

MODEL_ENV = "ANNOTATOR_MODEL"
RUNTIME_NAMES = {"torch": "PyTorch", "onnx": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass
class BackendInfo:
    backend: str  # "sam" or "classical"
    model: str | None
    checkpoint: str | None
    device: str
    precision: str
    reason: str = ""  # why the classical backend runs instead of SAM
    why: str = ""  # why this SAM model, e.g. "default on CPU", "chosen with --model"
    family: str = "sam"  # "sam" (SAM 1, MobileSAM), "sam2.1" or "sam3"
    revision: str | None = None  # Hub commit of a Hugging Face checkpoint (None: a local file/folder)
    repo_id: str | None = None  # Hub id of a Hugging Face model
    concepts: bool = False  # can find all instances of a text / exemplar boxes (SAM 3)
    runtime: str = "torch"  # what runs the model: torch, onnx (ONNX Runtime) or openvino

    @property
    def model_tag(self) -> str:
        """Which model made a mask, as recorded with it: name, and the Hub revision or the
        checkpoint's file name."""
        if self.backend != "sam":
            return "grabcut"
        if self.repo_id:
            return f"{self.model} ({self.repo_id}@{self.revision[:12] if self.revision else 'local folder'})"
        return f"{self.model} ({Path(self.checkpoint).name})" if self.checkpoint else str(self.model)

    @property
    def status(self) -> str:
        if self.backend == "sam" and self.repo_id:
            rev = f"revision {self.revision[:7]}" if self.revision else f"folder {Path(self.checkpoint).name}"
            return f"{self.model} ({self.repo_id}, {rev}): {self.why} · {self.device} · encoder {self.precision}"
        if self.backend == "sam":
            return (
                f"SAM {self.model}: {self.why} · checkpoint {Path(self.checkpoint).name} · "
                f"{self.device} · {RUNTIME_NAMES[self.runtime]} · encoder {self.precision}"
            )
        return f"Classical backend (GrabCut), NOT SAM: {self.reason}"


# On CUDA: SAM 2.1 large. The SAM 2 paper measures Hiera-L more accurate than SAM ViT-H on
# images (SA-23 zero-shot) and several times faster on a GPU; benchmarks/models.py measured it
# faster on this project's CPU too (encoder and click side by side, README's model table).
CUDA_DEFAULT = "sam2.1-large"
NO_TRANSFORMERS = (
    f"{CUDA_DEFAULT}, the CUDA default, runs through Hugging Face transformers, which is not "
    "installed (pip install 'transformers==5.24.0'); running SAM 1's vit_h instead"
)


def transformers_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def model_preference(device) -> tuple[str, ...]:
    """Official models in the order the app picks them on ``device`` when none is named
    (the first is the default; the SAM 1 ones after it are tried from the cache when its
    checkpoint cannot be had)."""
    kind = torch.device(device).type
    if kind == "cuda":
        sam1 = ("vit_h", "vit_l", "vit_b", "vit_t")
        return (CUDA_DEFAULT, *sam1) if transformers_available() else sam1
    if kind == "mps":
        return ("vit_b", "vit_t", "vit_l", "vit_h")
    return ("vit_t", "vit_b", "vit_l", "vit_h")  # CPU: the encoder time is what users wait for


def default_model(device) -> str:
    """The model to run when the user names none: the best one the hardware can afford."""
    return model_preference(device)[0]


def sam1_preference(device) -> tuple[str, ...]:
    return tuple(name for name in model_preference(device) if name in VARIANTS)


def choose_model(
    device,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    *,
    download: bool = True,
) -> tuple[str, Path, str, dict | None]:
    """``(model name, checkpoint path, why, state)``: which SAM to run and why.

    ``state`` is the checkpoint's tensors when they had to be read to recognise the model
    (so they are not read twice), else None. Raises ``CheckpointError`` when no weights can
    be had, ``ValueError`` for an unknown model name.
    """
    env_model = os.environ.get(MODEL_ENV)
    if model or env_model:
        name = model or env_model
        why = "chosen with --model" if model else f"chosen with {MODEL_ENV}"
        return name, resolve_checkpoint(get_variant(name), checkpoint, download=download), why, None

    fallback = sam1_preference(device)[0]
    label = f"default on {torch.device(device).type.upper()}"
    if checkpoint or os.environ.get(CHECKPOINT_ENV):
        path = resolve_checkpoint(get_variant(fallback), checkpoint, download=False)
        state = read_state_dict(path)
        guessed = guess_variant(state, VARIANTS.values())
        return guessed or fallback, path, "recognised from the checkpoint" if guessed else label, state

    first, *others = sam1_preference(device)
    try:
        return first, resolve_checkpoint(get_variant(first), download=download), label, None
    except CheckpointError as e:
        for other in others:
            try:
                path = resolve_checkpoint(get_variant(other), download=False)
            except CheckpointError:
                continue
            log.warning("%s is unavailable (%s); running the cached %s instead", first, e, other)
            return other, path, f"{first}'s checkpoint unavailable, {other}'s is cached", None
        raise


def load_segmenter(
    model: str | None = None,
    checkpoint: str | None = None,
    *,
    device: str | None = None,
    precision: str | None = None,
    download: bool = True,
    fallback: bool = True,
    cache_bytes: int = 512 * 2**20,
    runtime: str | None = None,
):
    """Returns ``(segmenter, BackendInfo)``; ``model`` and ``checkpoint`` as in ``choose_model``.

    ``runtime``: torch, onnx or openvino (``annotator.models.runtime``); default ONNX Runtime
    on a CPU when installed, else PyTorch. When the default runtime cannot be prepared, PyTorch
    runs and the log says why; a runtime asked for by name is an error instead.

    Falls back to GrabCut only when no weights can be found or downloaded. A checkpoint
    that exists but is broken or of the wrong architecture is an error, never a fallback:
    the user asked for it.
    """
    dev = pick_device(device)
    prec = precision or default_precision(dev)
    hub_name = model or os.environ.get(MODEL_ENV)
    if hub_name in HUB_MODELS:
        return load_hub_segmenter(
            hub_name,
            checkpoint,
            device=dev,
            precision=prec,
            download=download,
            why="chosen with --model" if model else f"chosen with {MODEL_ENV}",
            cache_bytes=cache_bytes,
        )
    unavailable = ""  # why the device's default (a Hugging Face model) does not run
    if hub_name is None and not (checkpoint or os.environ.get(CHECKPOINT_ENV)):
        default = default_model(dev)
        if default in HUB_MODELS:
            try:
                return load_hub_segmenter(
                    default,
                    device=dev,
                    precision=prec,
                    download=download,
                    why=f"default on {dev.type.upper()}",
                    cache_bytes=cache_bytes,
                )
            except CheckpointError as e:
                unavailable = f"{default} unavailable ({str(e).splitlines()[0]})"
                log.warning("%s; trying SAM 1 checkpoints", unavailable)
        elif dev.type == "cuda":
            unavailable = NO_TRANSFORMERS
            log.warning("%s", NO_TRANSFORMERS)
    try:
        name, path, why, state = choose_model(dev, model, checkpoint, download=download)
    except CheckpointError as e:
        if not fallback or checkpoint or os.environ.get(CHECKPOINT_ENV):
            raise
        why_not = f"{unavailable}; {e}" if unavailable else str(e)
        info = BackendInfo("classical", None, None, "cpu", "n/a", reason=f"no SAM weights ({why_not})")
        log.warning("running WITHOUT SAM: %s", info.status)
        return GrabCutSegmenter(), info
    chosen = check_runtime(runtime, dev) if runtime else default_runtime(dev)
    sam = load_sam(get_variant(name), path, state=state)
    try:
        segmenter = SamSegmenter(
            sam, device=dev, precision=prec, cache=EmbeddingCache(cache_bytes), name=name, runtime=chosen
        )
    except Exception as e:  # noqa: BLE001 - an export that fails falls back loudly, below
        if runtime or chosen == "torch" or prec != "fp32":
            raise
        log.warning("the %s runtime could not be prepared (%s: %s); running PyTorch", chosen, type(e).__name__, e)
        chosen = "torch"
        segmenter = SamSegmenter(sam, device=dev, precision=prec, cache=EmbeddingCache(cache_bytes), name=name)
    if unavailable:
        why = f"{why}; {unavailable}"
    info = BackendInfo("sam", name, str(path), str(dev), prec, why=why, runtime=chosen)
    log.info("backend: %s", info.status)
    return segmenter, info


def load_hub_segmenter(
    name: str,
    checkpoint=None,
    *,
    device=None,
    precision: str | None = None,
    download: bool = True,
    why: str = "chosen with --model",
    cache_bytes: int = 512 * 2**20,
):
    """``(predictor, BackendInfo)`` for a Hugging Face model (SAM 2.1 or SAM 3). SAM 3's
    predictor does clicks with SAM 3's tracker and carries a ``finder`` for "find all"."""
    from annotator.models.hf_sam2 import HFSamPredictor, load_hf_model

    hub = get_hub_model(name)
    dev = pick_device(str(device) if device is not None else None)
    prec = precision or default_precision(dev)
    resolved = resolve_hub_checkpoint(hub, checkpoint, download=download)
    cache = EmbeddingCache(cache_bytes)
    if hub.family == "sam3":
        model, processor = load_hf_model(resolved.path, "sam3_tracker")
        predictor = HFSamPredictor(model, processor, device=dev, precision=prec, cache=cache, name=name)
        predictor.finder = load_concept_finder(resolved.path, device=dev, cache=EmbeddingCache(cache_bytes))
    else:
        model, processor = load_hf_model(resolved.path, "sam2")
        predictor = HFSamPredictor(model, processor, device=dev, precision=prec, cache=cache, name=name)
    info = BackendInfo(
        "sam",
        name,
        str(resolved.path),
        str(dev),
        prec,
        why=f"{why}, from the {resolved.source}",
        family=hub.family,
        revision=resolved.revision,
        repo_id=hub.repo_id,
        concepts=hub.family == "sam3",
    )
    log.info("backend: %s", info.status)
    return predictor, info


def load_concept_finder(path, *, device=None, cache: EmbeddingCache | None = None):
    """SAM 3's concept finder (``Sam3ConceptFinder``) from a local Hugging Face folder."""
    from annotator.models.hf_sam3 import Sam3ConceptFinder, load_sam3

    model, processor = load_sam3(path)
    return Sam3ConceptFinder(model, processor, device=device, cache=cache)
