"""Prompted segmentation: official SamPredictor vs annotator's SamSegmenter, side by side.

Same seeded random weights, same photo (truck.jpg, 1800x1200), one process. Prints, for
each model, the image-encoder time (fp32 official, fp32 fused ours, bf16 ours), the
click-to-mask time (prompt encoder + decoder + postprocessing to full-resolution masks,
cached embedding) at p50/p95, the ratios, and how far ours is from the official masks;
then the models side by side, each encoder's speed-up over the first model's.

For vit_t (MobileSAM) "official" is SamPredictor over the TinyViT with hand-written
attention, which tests/test_mobilesam.py shows computes exactly what upstream MobileSAM does.

    python benchmarks/predict.py                  # vit_b and vit_t
    python benchmarks/predict.py --model tiny --clicks 10   # quick smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor

from annotator.formats.images import load_image
from annotator.models.predictor import SamSegmenter
from annotator.testing import random_sam

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def measure(model, image, args) -> dict:
    h, w = image.shape[:2]
    print()
    print(f"=== model {model} (random weights, seed 0) ===")

    official = SamPredictor(random_sam(model, seed=0))
    ours = SamSegmenter(random_sam(model, seed=0), device="cpu")
    ours_bf16 = SamSegmenter(random_sam(model, seed=0), device="cpu", precision="bf16")

    def encode_ours(seg):
        seg.cache.clear()
        return seg.set_image(image)

    t_off, _ = timed(lambda: official.set_image(image), args.repeats)
    t_ours, _ = timed(lambda: encode_ours(ours), args.repeats)
    t_bf16, _ = timed(lambda: encode_ours(ours_bf16), args.repeats)
    ref = official.features
    rel_err = float((ours.embedding.features - ref).abs().max() / ref.abs().max())
    rel_err_bf16 = float((ours_bf16.embedding.features - ref).abs().max() / ref.abs().max())

    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(0.1 * w, 0.9 * w, args.clicks), rng.uniform(0.1 * h, 0.9 * h, args.clicks)], 1)
    lbl = np.array([1])
    # warm-up (first calls allocate)
    official.predict(points[:1], lbl)
    ours.predict(points[:1], lbl)
    t_click_off, t_click_ours, ious, ious_bf16, score_err = [], [], [], [], []
    for pt in points:
        t0 = time.perf_counter()
        m_ref, s_ref, _ = official.predict(pt[None], lbl)
        t1 = time.perf_counter()
        pred = ours.predict(pt[None], lbl)
        t2 = time.perf_counter()
        t_click_off.append(t1 - t0)
        t_click_ours.append(t2 - t1)
        ious += [iou(a, b) for a, b in zip(pred.masks, m_ref)]
        score_err.append(float(np.abs(pred.scores - s_ref).max()))
        pred_bf16 = ours_bf16.predict(pt[None], lbl)
        ious_bf16 += [iou(a, b) for a, b in zip(pred_bf16.masks, pred.masks)]

    print()
    print(f"{'image encoder':<34}{'seconds':>10}{'vs official':>14}")
    print(f"{'  official SamPredictor (fp32)':<34}{t_off:>10.2f}{1.0:>13.2f}x")
    print(f"{'  ours, fused attention (fp32)':<34}{t_ours:>10.2f}{t_off / t_ours:>13.2f}x")
    print(f"{'  ours, bf16 autocast':<34}{t_bf16:>10.2f}{t_off / t_bf16:>13.2f}x")
    print(f"  features max rel. error: fp32 {rel_err:.2e}, bf16 {rel_err_bf16:.2e}")
    print()
    print(f"{'click to masks (cached embedding)':<34}{'p50 ms':>10}{'p95 ms':>10}{'p50 ratio':>12}")
    print(f"{'  official SamPredictor':<34}{pct(t_click_off, 50):>10.1f}{pct(t_click_off, 95):>10.1f}{1.0:>11.2f}x")
    print(f"{'  ours':<34}{pct(t_click_ours, 50):>10.1f}{pct(t_click_ours, 95):>10.1f}"
          f"{statistics.median(t_click_off) / statistics.median(t_click_ours):>11.2f}x")
    print()
    print(f"masks vs official over {len(ious)} candidates: min IoU {min(ious):.5f}, "
          f"max |score diff| {max(score_err):.2e}")
    print(f"bf16 masks vs fp32: min IoU {min(ious_bf16):.4f}, mean {np.mean(ious_bf16):.4f}, "
          f"{np.mean(np.array(ious_bf16) >= 0.98) * 100:.1f}% of candidates at IoU >= 0.98")
    return dict(model=model, encoder=t_off, encoder_ours=t_ours, encoder_bf16=t_bf16,
                click_p50_ms=pct(t_click_ours, 50))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["vit_b", "vit_t"], help="one or more models, compared side by side")
    p.add_argument("--image", default=str(DATA / "truck.jpg"))
    p.add_argument("--clicks", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2, help="encoder runs per variant (min is reported)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    image = load_image(args.image)
    h, w = image.shape[:2]
    print(f"image {Path(args.image).name} {w}x{h} · torch {torch.__version__} · {torch.get_num_threads()} threads")
    results = [measure(model, image, args) for model in args.model]
    if len(results) > 1:
        base = results[0]
        print()
        print(f"side by side: image-encoder seconds (official fp32, ours fused fp32, ours bf16), "
              f"speed-up over {base['model']}, click p50")
        for r in results:
            print(f"  {r['model']:<8}official {r['encoder']:6.2f} s ({base['encoder'] / r['encoder']:5.2f}x)   "
                  f"ours {r['encoder_ours']:6.2f} s ({base['encoder_ours'] / r['encoder_ours']:5.2f}x)   "
                  f"bf16 {r['encoder_bf16']:6.2f} s   click {r['click_p50_ms']:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
