"""Which torch device and encoder precision to run on."""

from __future__ import annotations

import os

DEVICE_ENV = "ANNOTATOR_DEVICE"
PRECISIONS = ("fp32", "bf16", "fp16")


def pick_device(override: str | None = None):
    """cuda > mps > cpu, unless ``override`` (or ``ANNOTATOR_DEVICE``) names one."""
    import torch  # lazily: the CLI's non-model commands should not pay for importing torch

    name = override or os.environ.get(DEVICE_ENV)
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU here")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"device {name!r} was asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_precision(device) -> str:
    """bf16 for the image encoder on GPUs that support it; fp32 elsewhere (on CPU bf16 is
    faster but changes masks slightly, so it is opt-in there)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str):
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
