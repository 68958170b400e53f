"""Every model family at its real size, random weights, side by side on this machine: image
encoder time, click time (one point, 3 candidates, masks at image size), memory.

No checkpoint is downloaded: each model is built from its real architecture (SAM 1's registry
variants; SAM 2.1's Hiera configurations; SAM 3's default transformers configuration) with
random weights, which cost the same time as trained ones. Repeats are interleaved (model A,
B, C, then again), so a machine that gets busier affects all alike.

    python benchmarks/models.py                       # vit_t, vit_b, SAM 2.1 t/s/b+/l, SAM 3; 2 repeats
    python benchmarks/models.py --models vit_t sam2.1-tiny --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "images"

# SAM 2.1 image encoders (Hiera) as the official configurations define them
HIERA = {
    "sam2.1-tiny": dict(
        hidden_size=96,
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 7, 2],
        global_attention_blocks=[5, 7, 9],
        window_positional_embedding_background_size=[7, 7],
        window_size_per_stage=[8, 4, 14, 7],
    ),
    "sam2.1-small": dict(
        hidden_size=96,
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 11, 2],
        global_attention_blocks=[7, 10, 13],
        window_positional_embedding_background_size=[7, 7],
        window_size_per_stage=[8, 4, 14, 7],
    ),
    "sam2.1-base-plus": dict(
        hidden_size=112,
        num_attention_heads=2,
        blocks_per_stage=[2, 3, 16, 3],
        global_attention_blocks=[12, 16, 20],
        window_positional_embedding_background_size=[14, 14],
        window_size_per_stage=[8, 4, 14, 7],
    ),
    "sam2.1-large": dict(
        hidden_size=144,
        num_attention_heads=2,
        blocks_per_stage=[2, 6, 36, 4],
        global_attention_blocks=[23, 33, 43],
        window_positional_embedding_background_size=[7, 7],
        window_size_per_stage=[8, 4, 16, 8],
    ),
}
DEFAULT_MODELS = ["vit_t", "vit_b", *HIERA, "sam3"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(name: str):
    """A predictor with the real architecture of ``name`` and random weights, on the CPU."""
    import torch

    torch.manual_seed(0)
    if name.startswith("vit_"):
        from annotator.models.predictor import SamSegmenter
        from annotator.testing import random_sam

        return SamSegmenter(random_sam(name), device="cpu")
    from annotator.models.hf_sam2 import HFSamPredictor

    if name in HIERA:
        from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

        h = dict(HIERA[name])
        dim, heads = h["hidden_size"], h["num_attention_heads"]
        h.update(
            model_type="sam2_hiera_det_model",
            embed_dim_per_stage=[dim, 2 * dim, 4 * dim, 8 * dim],
            num_attention_heads_per_stage=[heads, 2 * heads, 4 * heads, 8 * heads],
        )
        config = Sam2Config(
            vision_config=dict(backbone_config=h, backbone_channel_list=[8 * dim, 4 * dim, 2 * dim, dim])
        )
        return HFSamPredictor(Sam2Model(config).eval(), Sam2Processor(Sam2ImageProcessor()), device="cpu", name=name)
    if name == "sam3":
        from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

        from annotator.models.hf_sam3 import Sam3ConceptFinder
        from annotator.models.hf_testing import tiny_clip_tokenizer

        # the real image processor; a tiny tokenizer (its vocabulary does not change the cost)
        processor = Sam3Processor(Sam3ImageProcessor(), tiny_clip_tokenizer())
        return Sam3ConceptFinder(Sam3Model(Sam3Config()).eval(), processor, device="cpu")
    raise SystemExit(f"unknown model {name}")


def params_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy as np
    import torch

    from annotator.formats.images import load_image

    torch.set_grad_enabled(False)
    images = (
        [load_image(DATA / n) for n in ("truck.jpg", "dog.jpg", "groceries.jpg")]
        if DATA.is_dir()
        else [np.random.default_rng(k).integers(0, 255, (768, 1024, 3), dtype=np.uint8) for k in range(3)]
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, images "
        f"{', '.join(f'{i.shape[1]}x{i.shape[0]}' for i in images)}",
        flush=True,
    )
    models, memory = {}, {}
    for name in args.models:
        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        models[name] = build(name)
        memory[name] = {
            "weights": params_mb(models[name].model),
            "build_s": time.perf_counter() - t0,
            "rss_before": before,
        }
        print(
            f"built {name}: {memory[name]['weights']:.0f} MB of weights in {memory[name]['build_s']:.1f} s", flush=True
        )
    enc = {n: [] for n in models}
    click = {n: [] for n in models}
    for r in range(args.repeats):
        image = images[r % len(images)]
        h, w = image.shape[:2]
        for name, m in models.items():
            m.cache.clear()
            t0 = time.perf_counter()
            emb = m.embed(image)
            enc[name].append(time.perf_counter() - t0)
            memory[name]["embedding"] = emb.nbytes / 2**20
            t0 = time.perf_counter()
            if name == "sam3":
                m.find_all(emb, "car", threshold=0.5)
            else:
                m.predict(np.array([[w / 2, h / 2]]), np.array([1]), embedding=emb)
            click[name].append(time.perf_counter() - t0)
            print(
                f"  repeat {r + 1} {name}: encoder {enc[name][-1]:.2f} s, "
                f"{'find all' if name == 'sam3' else 'click'} {click[name][-1] * 1000:.0f} ms",
                flush=True,
            )
    base = statistics.median(enc["vit_b"]) if "vit_b" in enc else None
    print(f"\n{'model':18} {'weights MB':>10} {'embedding MB':>12} {'encoder s':>10} {'x vit_b':>8} {'click ms':>9}")
    for name in models:
        e = statistics.median(enc[name])
        ratio = f"{e / base:.2f}" if base else "-"
        what = " (find all 'car')" if name == "sam3" else ""
        print(
            f"{name:18} {memory[name]['weights']:10.0f} {memory[name]['embedding']:12.1f} {e:10.2f} "
            f"{ratio:>8} {statistics.median(click[name]) * 1000:9.0f}{what}"
        )
    print(f"\nprocess RSS at the end: {rss_mb():.0f} MB (all models loaded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
