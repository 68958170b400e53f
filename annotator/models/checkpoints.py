"""Finding, downloading, verifying and loading SAM checkpoints.

Resolution order: an explicit path (``--checkpoint`` / ``ANNOTATOR_CHECKPOINT``), the cache
directory (``ANNOTATOR_CACHE``, default ``~/.cache/annotator``), then a download from the
official URL with a progress bar, a sha256 check and an atomic rename into the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch
from tqdm.auto import tqdm

from annotator.models.modeling.tinyvit import MOBILE_SAM_CONFIG
from annotator.models.registry import SamVariant

log = logging.getLogger(__name__)

CHECKPOINT_ENV = "ANNOTATOR_CHECKPOINT"
CACHE_ENV = "ANNOTATOR_CACHE"


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, downloaded, verified or loaded. The message says why
    and what to do; it is meant to be shown to the user as it is."""


class ChecksumError(CheckpointError):
    pass


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "annotator"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manual_download_hint(variant: SamVariant, target: Path) -> str:
    return (
        f"Download {variant.filename} ({_human(variant.size_bytes)}) by hand:\n"
        f"    curl -L -o {target} {variant.url}\n"
        f"or pass --checkpoint PATH (or set {CHECKPOINT_ENV}=PATH) to use a file you have."
    )


def resolve_checkpoint(
    variant: SamVariant,
    checkpoint: str | os.PathLike | None = None,
    *,
    cache: Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The path of a checkpoint file for ``variant``, downloading it if needed."""
    explicit = checkpoint or os.environ.get(CHECKPOINT_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {path}")
        return path

    if not variant.url:
        raise CheckpointError(f"model {variant.name} has no official checkpoint; pass --checkpoint PATH")
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / variant.filename
    if target.is_file():
        return target
    if not download:
        raise CheckpointError(f"no checkpoint for {variant.name} in {cache}.\n" + manual_download_hint(variant, target))
    return download_checkpoint(variant, target, progress=progress)


def download_checkpoint(variant: SamVariant, target: Path, *, progress: bool = True) -> Path:
    """Download to a temporary file beside ``target``, check sha256, then rename atomically,
    so an interrupted or corrupt download never sits in the cache under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        try:
            response = urllib.request.urlopen(variant.url, timeout=30)
        except (urllib.error.URLError, OSError) as e:
            raise CheckpointError(
                f"could not download the {variant.name} checkpoint from {variant.url}: "
                f"{getattr(e, 'reason', e)}.\n" + manual_download_hint(variant, target)
            ) from None
        with response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or variant.size_bytes
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"downloading {variant.filename}",
                disable=not progress,
            ) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        actual = digest.hexdigest()
        if variant.sha256 and actual != variant.sha256:
            raise ChecksumError(
                f"the downloaded {variant.filename} is corrupt or not the official file: "
                f"sha256 {actual}, expected {variant.sha256}. It was discarded; try again.\n"
                + manual_download_hint(variant, target)
            )
        os.replace(tmp, target)
        log.info("downloaded %s to %s", variant.filename, target)
        return target
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        tmp.unlink(missing_ok=True)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors safely (``weights_only=True``: no pickled code runs).

    Accepts a bare state dict (the official format) and the common fine-tuning wrappers
    (``{"model": ...}``, ``{"state_dict": ...}``, ``module.`` prefixes from DataParallel).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # garbage bytes, not a pickle of Python objects
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: it is damaged, truncated or another kind of file"
            ) from None
        raise CheckpointError(
            f"{path} holds Python objects other than tensors ({found.group(1)}), so it was not loaded: "
            "loading it could run arbitrary code. Use a checkpoint of tensors only, as the official "
            "SAM checkpoints are"
        ) from None
    except Exception as e:  # torch raises many types for non-checkpoint bytes
        first = (str(e).splitlines() or [""])[0].split(". ")[0].strip()
        detail = f" ({first})" if len(first) > 12 else ""  # torch's text, when it says something
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: it is damaged, truncated or another kind of file{detail}"
        ) from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a SAM checkpoint: it holds no state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def guess_variant(state: dict[str, torch.Tensor], variants) -> str | None:
    """The variant whose image encoder matches ``state`` (cheap: builds nothing): ViTs by
    width and depth, TinyViTs (vit_t) by their stages' depths and final width."""
    signature = _encoder_signature(state)
    if signature is None:
        return None
    for variant in variants:
        if _variant_signature(variant) == signature:
            return variant.name
    return None


def _encoder_signature(state) -> tuple | None:
    pos = state.get("image_encoder.pos_embed")
    if pos is not None:
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
        return ("vit", pos.shape[-1], len(blocks))
    neck = state.get("image_encoder.neck.0.weight")
    stages: dict[int, set[int]] = {}
    for k in state:
        if m := re.match(r"image_encoder\.layers\.(\d+)\.blocks\.(\d+)\.", k):
            stages.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if neck is None or not stages:
        return None
    return ("tinyvit", neck.shape[1], tuple(len(stages.get(i, ())) for i in range(max(stages) + 1)))


def _variant_signature(variant) -> tuple:
    if variant.encoder == "tinyvit":
        return ("tinyvit", MOBILE_SAM_CONFIG["embed_dims"][-1], MOBILE_SAM_CONFIG["depths"])
    return ("vit", variant.encoder_embed_dim, variant.encoder_depth)


def check_layout(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str, path) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[0]})")
    raise CheckpointError(f"{path} is not a {what} checkpoint: " + "; ".join(problems))


def load_sam(variant: SamVariant, path: Path, *, state: dict[str, torch.Tensor] | None = None):
    """Build ``variant`` and load the checkpoint at ``path`` into it (strict layout check).
    ``state``: the file's tensors if the caller has already read them."""
    from annotator.models.registry import VARIANTS

    if state is None:
        state = read_state_dict(Path(path))
    model = variant.build()
    expected = model.state_dict()
    try:
        check_layout(state, expected, f"SAM {variant.name}", path)
    except CheckpointError as e:
        others = [v for v in VARIANTS.values() if v.name != variant.name]
        guess = guess_variant(state, others) if _looks_like_sam(state) else None
        if guess:
            raise CheckpointError(f"{e}. It looks like a {guess} checkpoint: try --model {guess}") from None
        raise
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def _looks_like_sam(state) -> bool:
    return any(k.startswith("image_encoder.") for k in state) and any(k.startswith("mask_decoder.") for k in state)


def _human(n: int | None) -> str:
    if not n:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
