"""Small randomly initialised SAM models for tests and benchmarks.

No SAM checkpoint can be downloaded where the tests run, so they build SAM from
``segment_anything``'s own modeling classes with seeded random weights, write it as a
checkpoint file and load it back through the real loading code. Random weights give poor
masks but run exactly the same computation as real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from annotator.registry import SamVariant, get_variant

# Same decoder and prompt encoder as the official models, a much smaller image encoder
# (still windowed + global attention with relative positions), so a test encodes in well
# under a second on 2 CPU cores.
TINY = SamVariant(
    "tiny", encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
    encoder_global_attn_indexes=(1,), description="test-only tiny SAM (random weights)",
)

TEST_VARIANTS = {TINY.name: TINY}


def _variant(variant: str | SamVariant) -> SamVariant:
    if isinstance(variant, SamVariant):
        return variant
    return TINY if variant == "tiny" else get_variant(variant)


def random_sam(variant: str | SamVariant = "tiny", seed: int = 0):
    """A SAM of ``variant``'s architecture with seeded random weights, in eval mode.

    The relative-position tables start at zero in the official code; they get small random
    values here so the code paths that use them are actually exercised.
    """
    variant = _variant(variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = variant.build()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "rel_pos" in name:
                    p.normal_(0.0, 0.02)
    return model.eval()


def write_random_checkpoint(path: str | Path, variant: str | SamVariant = "tiny", seed: int = 0) -> Path:
    """Save ``random_sam(variant, seed)``'s state dict where the real loader can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_sam(variant, seed).state_dict(), path)
    return path
