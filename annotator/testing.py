"""Small randomly initialised SAM models for tests and benchmarks (and a free port for the
apps they start, and the Chromium they drive).

No SAM checkpoint can be downloaded where the tests run, so they build SAM from
``segment_anything``'s own modeling classes with seeded random weights, write it as a
checkpoint file and load it back through the real loading code. Random weights give poor
masks but run exactly the same computation as real ones.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from annotator.models.registry import TINY, SamVariant, get_variant

# Debian's chromium for the browser tests and benchmarks (never `playwright install`), and the
# flags that keep a headless run quiet: no GPU, no background network, no first-run pages
CHROMIUM = os.environ.get("ANNOTATOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _variant(variant: str | SamVariant) -> SamVariant:
    if isinstance(variant, SamVariant):
        return variant
    return TINY if variant == "tiny" else get_variant(variant)


def random_sam(variant: str | SamVariant = "tiny", seed: int = 0):
    """A SAM of ``variant``'s architecture with seeded random weights, in eval mode."""
    variant = _variant(variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = variant.build()
        randomize_inert_parameters(model)
    return model.eval()


@torch.no_grad()
def randomize_inert_parameters(model: torch.nn.Module) -> torch.nn.Module:
    """Give random values to what initialisation leaves inert, so the code paths that use
    them are actually exercised: the ViT's relative-position tables and TinyViT's attention
    biases (zeros), and BatchNorm (an identity: unit weight and variance, zero bias and mean).
    Works on any model with those names (ours or upstream's); uses the global torch RNG."""
    for name, p in model.named_parameters():
        if "rel_pos" in name:
            p.normal_(0.0, 0.02)
        elif name.endswith("attention_biases"):
            p.normal_(0.0, 0.5)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model


def write_random_checkpoint(path: str | Path, variant: str | SamVariant = "tiny", seed: int = 0) -> Path:
    """Save ``random_sam(variant, seed)``'s state dict where the real loader can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_sam(variant, seed).state_dict(), path)
    return path


def free_port() -> int:
    """A free TCP port on the loopback interface, for an app a test or benchmark starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
