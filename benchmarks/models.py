"""Every model family at its real size, random weights, side by side on this machine: image
encoder time, click time (one point, 3 candidates, masks at image size; SAM 3: find all
"car"), peak memory of that work, each also relative to vit_b.

No checkpoint is downloaded: each model is built from its real architecture (SAM 1's registry
variants; SAM 2.1's Hiera configurations; SAM 3's default transformers configuration) with
random weights, which cost the same time as trained ones. The Hugging Face models are built
without transformers' weight initialisation (minutes for SAM 3's 840M parameters on a busy
CPU) and filled from one seeded generator instead (``random_hf_model``). Repeats are
interleaved (model A, B, C, then again), so a machine that gets busier affects all alike.

Peak memory: the process's peak RSS (VmHWM, reset before each model's work through
/proc/self/clear_refs) less its RSS before: activations plus the embedding, not the weights.

    python benchmarks/models.py                       # vit_t, vit_b, vit_h, SAM 2.1 t/s/b+/l, SAM 3; 2 repeats
    python benchmarks/models.py --models vit_h sam2.1-large --repeats 3
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
DEFAULT_MODELS = ["vit_t", "vit_b", "vit_h", *HIERA, "sam3"]


def status_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return status_mb("VmRSS")


def reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its RSS now (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def random_hf_model(model_cls, config, seed: int = 0):
    """``model_cls(config)`` with random weights, built fast: transformers' weight init (and
    torch's in each layer) is skipped, then every parameter is filled from one seeded
    generator (normal(0, 0.02) for matrices, ones for other weights, zeros for biases), and
    the modules that own buffers get their usual init (position tables, ids)."""
    import torch
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = model_cls(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02, generator=g)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
        for module in model.modules():
            if next(module.buffers(recurse=False), None) is not None:
                model._init_weights(module)
    return model.eval()


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
        model = random_hf_model(Sam2Model, config)
        return HFSamPredictor(model, Sam2Processor(Sam2ImageProcessor()), device="cpu", name=name)
    if name == "sam3":
        from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

        from annotator.models.hf_sam3 import Sam3ConceptFinder
        from annotator.models.hf_testing import tiny_clip_tokenizer

        # the real image processor; a tiny tokenizer (its vocabulary does not change the cost)
        processor = Sam3Processor(Sam3ImageProcessor(), tiny_clip_tokenizer())
        return Sam3ConceptFinder(random_hf_model(Sam3Model, Sam3Config()), processor, device="cpu")
    raise SystemExit(f"unknown model {name}")


def params_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    unknown = [n for n in args.models if n not in DEFAULT_MODELS and n not in ("vit_l", "tiny")]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_MODELS)}, vit_l")
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
    peak = {n: [] for n in models}
    for r in range(args.repeats):
        image = images[r % len(images)]
        h, w = image.shape[:2]
        for name, m in models.items():
            m.cache.clear()
            gc.collect()
            before = rss_mb()
            can_reset = reset_peak()
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
            peak[name].append(status_mb("VmHWM") - before if can_reset else float("nan"))
            print(
                f"  repeat {r + 1} {name}: encoder {enc[name][-1]:.2f} s, "
                f"{'find all' if name == 'sam3' else 'click'} {click[name][-1] * 1000:.0f} ms, "
                f"peak +{peak[name][-1]:.0f} MB",
                flush=True,
            )
    med = {n: (statistics.median(enc[n]), statistics.median(click[n]), statistics.median(peak[n])) for n in models}
    base = med.get("vit_b")

    def rel(value: float, k: int) -> str:
        return f"{value / base[k]:.2f}" if base and base[k] > 0 else "-"

    print(
        f"\n{'model':18} {'weights MB':>10} {'embed MB':>8} {'encoder s':>9} {'x vit_b':>7} "
        f"{'click ms':>8} {'x vit_b':>7} {'peak MB':>8} {'x vit_b':>7}"
    )
    for name in models:
        e, c, pk = med[name]
        what = " (click = find all 'car')" if name == "sam3" else ""
        print(
            f"{name:18} {memory[name]['weights']:10.0f} {memory[name]['embedding']:8.1f} {e:9.2f} {rel(e, 0):>7} "
            f"{c * 1000:8.0f} {rel(c, 1):>7} {pk:8.0f} {rel(pk, 2):>7}{what}"
        )
    if "vit_h" in med and "sam2.1-large" in med:
        (eh, ch, _), (el, cl, _) = med["vit_h"], med["sam2.1-large"]
        print(
            f"\nsam2.1-large / vit_h: encoder {el / eh:.2f}, click {cl / ch:.2f}, "
            f"encoder + one click {(el + cl) / (eh + ch):.2f}"
        )
    print(f"\nprocess RSS at the end: {rss_mb():.0f} MB (all models loaded); load: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
