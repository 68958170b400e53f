"""The Hugging Face models the app runs (SAM 2.1, SAM 3) and where their weights come from.

A checkpoint is a folder in the Hugging Face layout (``config.json``, ``model.safetensors``,
the processor's files). Resolution order: ``--checkpoint DIR`` (or ``ANNOTATOR_CHECKPOINT``)
when it names a folder; the Hugging Face Hub cache (``HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``), shared with every other program that uses the Hub; then a
download from the Hub with a progress bar per file. Weights are safetensors: loading them runs
no pickled code.

``facebook/sam3`` is gated: the Hub serves it only to accounts that accepted Meta's SAM
licence on the model page, with a token (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from annotator.models.checkpoints import CHECKPOINT_ENV, CheckpointError

HUB = "https://huggingface.co/"
# what a folder must hold to be loaded (the processor's own files are optional: defaults)
REQUIRED_FILES = ("config.json",)
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")


@dataclass(frozen=True)
class HubModel:
    """One model the app can run through ``transformers``."""

    name: str  # what --model takes
    family: str  # "sam2.1" or "sam3"
    size: str  # "tiny", "small", "base-plus", "large" or "" (SAM 3 has one size)
    repo_id: str
    parameters_m: float  # millions of parameters of the image model (counted, benchmarks/models.py)
    weights_mb: int  # their size in fp32 (the download is larger for SAM 2.1: it holds video modules too)
    licence: str
    gated: bool = False
    description: str = ""

    @property
    def url(self) -> str:
        return HUB + self.repo_id


SAM2_LICENCE = "Apache-2.0"
SAM3_LICENCE = "SAM License (Meta's own; accept it on the model page)"

HUB_MODELS: dict[str, HubModel] = {
    m.name: m
    for m in (
        HubModel(
            "sam2.1-tiny",
            "sam2.1",
            "tiny",
            "facebook/sam2.1-hiera-tiny",
            31.5,
            120,
            SAM2_LICENCE,
            description="SAM 2.1 Hiera-T",
        ),
        HubModel(
            "sam2.1-small",
            "sam2.1",
            "small",
            "facebook/sam2.1-hiera-small",
            38.5,
            147,
            SAM2_LICENCE,
            description="SAM 2.1 Hiera-S",
        ),
        HubModel(
            "sam2.1-base-plus",
            "sam2.1",
            "base-plus",
            "facebook/sam2.1-hiera-base-plus",
            73.4,
            280,
            SAM2_LICENCE,
            description="SAM 2.1 Hiera-B+",
        ),
        HubModel(
            "sam2.1-large",
            "sam2.1",
            "large",
            "facebook/sam2.1-hiera-large",
            217.0,
            828,
            SAM2_LICENCE,
            description="SAM 2.1 Hiera-L, the best SAM 2.1 masks",
        ),
        HubModel(
            "sam3",
            "sam3",
            "",
            "facebook/sam3",
            840.0,
            3206,
            SAM3_LICENCE,
            gated=True,
            description="SAM 3: clicks, and find all instances of a text or exemplar boxes",
        ),
    )
}


def get_hub_model(name: str) -> HubModel:
    try:
        return HUB_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown Hugging Face model {name!r}; choose one of: {', '.join(HUB_MODELS)}") from None


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A local folder holding a model, and where it came from."""

    path: Path
    source: str  # "folder", "hub cache" or "download"
    revision: str | None  # the Hub commit of a cached/downloaded snapshot; None for a folder

    @property
    def revision_text(self) -> str:
        return self.revision[:7] if self.revision else "local folder"


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_folder(path: Path, model: HubModel) -> Path:
    """``path`` if it is a folder with a config and safetensors weights, else a clear error."""
    if not path.exists():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is a file; {model.name} loads from a folder in the Hugging Face layout "
            f"(config.json and model.safetensors), e.g. one made by `hf download {model.repo_id} "
            f"--local-dir DIR`"
        )
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    has_weights = any(any(path.glob(p)) for p in WEIGHT_PATTERNS)
    if missing or not has_weights:
        what = ", ".join(missing + ([] if has_weights else ["*.safetensors weights"]))
        raise CheckpointError(
            f"{path} is not a Hugging Face model folder: no {what}. Get one with "
            f"`hf download {model.repo_id} --local-dir DIR`"
        )
    return path


# the config ``model_type``s each loader accepts, and the --model that fits each
MODEL_TYPES = {
    "sam2": ("sam2", "sam2_video"),
    "sam3_tracker": ("sam3_video", "sam3_tracker", "sam3_tracker_video"),
    "sam3": ("sam3", "sam3_video"),
}
SUGGEST = {
    "sam2": "sam2.1-tiny (or -small, -base-plus, -large)",
    "sam2_video": "sam2.1-tiny (or -small, -base-plus, -large)",
    "sam3": "sam3",
    "sam3_video": "sam3",
}


def check_model_type(path: Path, kind: str, what: str) -> None:
    """Refuse a folder whose config is another architecture, naming the --model that fits."""
    import json

    try:
        model_type = json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise CheckpointError(f"{path}/config.json cannot be read as a model configuration") from None
    if model_type not in MODEL_TYPES[kind]:
        hint = f"; try --model {SUGGEST[model_type]}" if model_type in SUGGEST else ""
        raise CheckpointError(f"{path} is not a {what} checkpoint: it holds a {model_type!r} model{hint}")


def _revision_of(snapshot: Path) -> str | None:
    """The commit hash of a Hub cache snapshot folder (``.../snapshots/<commit>``)."""
    if snapshot.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", snapshot.name):
        return snapshot.name
    return None


def offline_hint(model: HubModel) -> str:
    access = (
        (
            f"{model.repo_id} is gated: open {model.url}, accept the licence, then create a token at "
            f"{HUB}settings/tokens and set HF_TOKEN=<token> (or run `hf auth login`).\n"
        )
        if model.gated
        else ""
    )
    return (
        f"{access}To get the weights on a machine with internet:\n"
        f"    hf download {model.repo_id}                  # into the Hub cache ({hub_cache_dir()})\n"
        f"or  hf download {model.repo_id} --local-dir DIR  # then: --checkpoint DIR\n"
        f"and copy the cache (or DIR) here; or pass --checkpoint DIR (or set {CHECKPOINT_ENV}=DIR) for a "
        f"folder you have."
    )


def resolve_hub_checkpoint(
    model: HubModel, checkpoint: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True
) -> ResolvedCheckpoint:
    """A local folder for ``model``: the explicit one, the Hub cache's, or a fresh download."""
    explicit = checkpoint or os.environ.get(CHECKPOINT_ENV)
    if explicit:
        return ResolvedCheckpoint(check_folder(Path(explicit).expanduser(), model), "folder", None)

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    patterns = list(DOWNLOAD_PATTERNS)
    try:  # the cache first: no network round trip when the weights are already here
        path = Path(snapshot_download(model.repo_id, allow_patterns=patterns, local_files_only=True))
        return ResolvedCheckpoint(check_folder(path, model), "hub cache", _revision_of(path))
    except (LocalEntryNotFoundError, CheckpointError):
        pass
    if not download:
        raise CheckpointError(
            f"no copy of {model.repo_id} in the Hugging Face cache ({hub_cache_dir()}) "
            f"and downloads are off.\n" + offline_hint(model)
        )
    if not progress:
        disable_progress_bars()
    try:
        path = Path(snapshot_download(model.repo_id, allow_patterns=patterns))
    except GatedRepoError:
        token = "a token is set but its account has no access" if _has_token() else "no token is set"
        raise CheckpointError(
            f"{model.repo_id} is gated and the Hub refused the download ({token}). Open {model.url}, "
            f"accept the licence, create a token at {HUB}settings/tokens, then set HF_TOKEN=<token> "
            f"(or run `hf auth login`) and start again."
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"the Hub has no model {model.repo_id} (or it is private and needs HF_TOKEN)") from None
    except (LocalEntryNotFoundError, OSError) as e:  # no network, DNS, proxy, HF_HUB_OFFLINE=1
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"could not download {model.repo_id} from the Hugging Face Hub ({why}) and it is not in the "
            f"cache ({hub_cache_dir()}).\n" + offline_hint(model)
        ) from None
    finally:
        if not progress:
            enable_progress_bars()
    return ResolvedCheckpoint(check_folder(path, model), "download", _revision_of(path))


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:  # a broken token file is not what this message is about
        return False
