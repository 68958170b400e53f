"""Prompted segmentation: official SamPredictor vs annotator's SamSegmenter on each runtime,
side by side in one process.

Same seeded random weights, same photo (truck.jpg, 1800x1200). For each model: the image
encoder (fp32; int8 on the exported runtimes with ``--int8``), the click (cached embedding)
and upload -> first mask, every implementation measured in turn, the order rotated each
repeat so none always runs at the same point of a changing machine load. Then the masks of
each against the official ones (the parity contract: >= 99% of candidates at IoU >= 0.98,
scores within 1e-3) and the int8 drift (IoU vs fp32 over all candidates).

A click in the app (``ours``): decoder, then only the shown candidate upscaled (at canvas
size, here the image's: 1800x1200 fits the 2048-pixel canvas). ``click, all 3 full-res``:
``predict``, what the official predictor returns.

    python benchmarks/predict.py                       # vit_b and vit_t, every runtime installed
    python benchmarks/predict.py --model tiny --clicks 10 --repeats 1   # a quick smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's annotator, not another installed copy

import numpy as np  # noqa: E402
import torch  # noqa: E402
from segment_anything import SamPredictor  # noqa: E402

from annotator.formats.images import load_image  # noqa: E402
from annotator.models.predictor import SamSegmenter  # noqa: E402
from annotator.models.runtime import available  # noqa: E402
from annotator.testing import random_sam  # noqa: E402

DATA = Path(os.environ.get("ANNOTATOR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "images"


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


class Official:
    name = "official"

    def __init__(self, model):
        self.p = SamPredictor(random_sam(model, seed=0))

    def encode(self, image):
        self.p.set_image(image)

    def click(self, pt):
        masks, scores, _ = self.p.predict(pt[None], np.array([1]))
        return masks, scores

    def full(self, pt):
        return self.click(pt)


class Ours:
    def __init__(self, model, runtime, precision, cache):
        t0 = time.perf_counter()
        self.seg = SamSegmenter(
            random_sam(model, seed=0),
            device="cpu",
            runtime=runtime,
            precision=precision,
            runtime_cache=cache,
            progress=False,
        )
        self.setup_s = time.perf_counter() - t0
        self.name = runtime + ("" if precision == "fp32" else f" {precision}")

    def encode(self, image):
        self.seg.cache.clear()
        self.seg.set_image(image)

    def click(self, pt):
        """What the app does: candidates, the shown one upscaled."""
        pred = self.seg.predict_candidates(pt[None], np.array([1]))
        shown = pred.mask(pred.best())
        return shown, pred.scores

    def full(self, pt):
        pred = self.seg.predict(pt[None], np.array([1]))
        return pred.masks, pred.scores


def measure(model, image, args, cache) -> dict:
    print(f"\n=== model {model} (random weights, seed 0) ===", flush=True)
    impls = [Official(model)]
    runtimes = [r for r in ("torch", "onnx", "openvino") if available(r) and r in args.runtimes]
    for r in runtimes:
        impls.append(Ours(model, r, "fp32", cache))
        if r != "torch":
            print(f"  {r}: export + open {impls[-1].setup_s:.1f} s (the export is cached per checkpoint)")
    if args.int8:
        for r in runtimes:
            if r == "onnx":
                impls.append(Ours(model, r, "int8", cache))
    names = [i.name for i in impls]
    enc = {n: [] for n in names}
    for rep in range(args.repeats):
        k = rep % len(impls)
        for impl in impls[k:] + impls[:k]:
            t0 = time.perf_counter()
            impl.encode(image)
            enc[impl.name].append(time.perf_counter() - t0)

    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(0.1 * w, 0.9 * w, args.clicks), rng.uniform(0.1 * h, 0.9 * h, args.clicks)], 1)
    for impl in impls:  # warm-up (first calls allocate)
        impl.click(points[0])
    click = {n: [] for n in names}
    full = {n: [] for n in names}
    ious = {n: [] for n in names}
    score_err = {n: [] for n in names}
    fp32_masks = {}
    for j, pt in enumerate(points):
        k = j % len(impls)
        ref_masks = None
        for impl in impls[k:] + impls[:k]:
            t0 = time.perf_counter()
            impl.click(pt)
            click[impl.name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            masks, scores = impl.full(pt)
            full[impl.name].append(time.perf_counter() - t0)
            fp32_masks[impl.name] = (masks, scores)
        ref_masks, ref_scores = fp32_masks["official"]
        for n in names:
            masks, scores = fp32_masks[n]
            base, base_s = fp32_masks["onnx"] if n.endswith("int8") else (ref_masks, ref_scores)
            ious[n] += [iou(a, b) for a, b in zip(masks, base)]
            score_err[n].append(float(np.abs(scores - base_s).max()))

    # upload -> first mask: encoder + one click
    first = {n: min(enc[n]) + float(np.median(click[n])) for n in names}
    col = 14
    print(f"\n{'':<36}" + "".join(f"{n:>{col}}" for n in names))
    print(
        f"{'image encoder s (best of ' + str(args.repeats) + ')':<36}"
        + "".join(f"{min(enc[n]):>{col}.2f}" for n in names)
    )
    print(f"{'  vs official':<36}" + "".join(f"{min(enc['official']) / min(enc[n]):>{col - 1}.2f}x" for n in names))
    print(
        f"{'click p50 / p95 ms (shown cand.)':<36}"
        + "".join(f"{pct(click[n], 50):>{col - 7}.0f} /{pct(click[n], 95):>5.0f}" for n in names)
    )
    print(f"{'click, all 3 full-res p50 ms':<36}" + "".join(f"{pct(full[n], 50):>{col}.0f}" for n in names))
    print(f"{'upload -> first mask s':<36}" + "".join(f"{first[n]:>{col}.2f}" for n in names))
    print(
        f"{'candidates IoU>=0.98 vs reference':<36}"
        + "".join(f"{100 * np.mean(np.array(ious[n]) >= 0.98):>{col - 1}.1f}%" for n in names)
    )
    print(f"{'min IoU':<36}" + "".join(f"{min(ious[n]):>{col}.4f}" for n in names))
    print(f"{'max |score diff|':<36}" + "".join(f"{max(score_err[n]):>{col}.1e}" for n in names))
    print(
        f"  reference: the official model; for int8 the same runtime in fp32 (the drift). "
        f"{len(points)} clicks, {len(ious['official'])} candidates each; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    return dict(
        model=model,
        enc={n: min(v) for n, v in enc.items()},
        click_p95={n: pct(v, 95) for n, v in click.items()},
        first=first,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["vit_b", "vit_t"], help="one or more models, compared side by side")
    p.add_argument("--image", default=str(DATA / "truck.jpg"))
    p.add_argument("--clicks", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2, help="encoder runs per implementation (the best is reported)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnx", "openvino"])
    p.add_argument("--int8", action="store_true", help="also the int8 encoder on ONNX Runtime, with its drift")
    p.add_argument("--cache", default=None, help="export cache (default: a temporary folder, so the export is timed)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = load_image(args.image)
    h, w = image.shape[:2]
    print(f"image {Path(args.image).name} {w}x{h} · torch {torch.__version__} · {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(model, image, args, args.cache or tmp) for model in args.model]
    if len(results) > 1:
        print("\nside by side: image encoder s (speed-up over the official model)")
        for r in results:
            print(
                f"  {r['model']:<8}"
                + "   ".join(f"{n} {s:6.2f} ({r['enc']['official'] / s:4.2f}x)" for n, s in r["enc"].items())
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
