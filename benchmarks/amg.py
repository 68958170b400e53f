"""Automatic mask generation: official SamAutomaticMaskGenerator vs annotator's MaskGenerator.

Same seeded random weights (vit_b architecture), same photo (truck.jpg, 1800x1200), same
arguments; points_per_side 16 and 32, SAM's default thresholds and thresholds 0
(pred_iou_thresh = stability_score_thresh = 0). One benchmark run alternates the two; each
generation runs in a fresh subprocess so its peak memory (VmHWM, peak resident set) is its own.
Prints per-stage times, the end-to-end and post-decoder time ratios, the peak-memory ratio and
how many masks each found (and how many of the official ones ours found again).

    python benchmarks/amg.py                              # everything (about an hour on 2 cores)
    python benchmarks/amg.py --points 16 --thresholds default
    python benchmarks/amg.py --quick                      # tiny model, 8x8 points: a smoke run
    python benchmarks/amg.py --redundancy-only            # grouping / hierarchy at 1000 masks

Stages: encoder (image encoder incl. resizing); decoder (prompt encoder + mask decoder, for
ours also the per-image decoder set-up); post-decoder = everything else (upscaling, stability,
boxes, filters, RLE, concatenation, NMS, records).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's annotator, not another installed copy
DATA = Path(os.environ.get("ANNOTATOR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "images"
THRESHOLDS = {
    "default": {},
    "zero": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
}


# -- one generation, in its own process ---------------------------------------------------------


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


class StageTimer:
    """Accumulates wall time per stage by wrapping functions; nested stages are not double
    counted (time inside an inner timed call goes to the inner stage only)."""

    def __init__(self):
        self.times = defaultdict(float)
        self._stack = []

    def wrap(self, owner, name, stage):
        fn = getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            timer._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = timer._stack.pop()
                spent = time.perf_counter() - t0
                timer.times[stage] += spent - inner
                if timer._stack:
                    timer._stack[-1] += spent

        setattr(owner, name, timed)


def run_official(model, image, kwargs, timer):
    import segment_anything.automatic_mask_generator as am
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor
    from segment_anything.utils import amg as amg_utils

    timer.wrap(SamPredictor, "set_image", "encoder")
    timer.wrap(type(model.prompt_encoder), "forward", "decoder")
    timer.wrap(type(model.mask_decoder), "forward", "decoder")
    timer.wrap(type(model), "postprocess_masks", "upscale")
    for name, stage in [
        ("calculate_stability_score", "stability"),
        ("batched_mask_to_box", "boxes"),
        ("is_box_near_crop_edge", "crop edge / pad"),
        ("uncrop_masks", "crop edge / pad"),
        ("mask_to_rle_pytorch", "rle"),
        ("batched_nms", "nms"),
        ("coco_encode_rle", "records"),
        ("rle_to_mask", "records"),
        ("area_from_rle", "records"),
    ]:
        timer.wrap(am, name, stage)
    timer.wrap(amg_utils.MaskData, "cat", "MaskData cat/filter")
    timer.wrap(amg_utils.MaskData, "filter", "MaskData cat/filter")
    generator = SamAutomaticMaskGenerator(model, **kwargs)
    return generator.generate(image)


def run_ours(model, image, kwargs, timer):
    """``model``: a Sam, or a SamSegmenter on an exported runtime (see ``prepare``)."""
    import annotator.amg.generator as amg
    import annotator.amg.postprocess as amg_masks
    from annotator.models.modeling.mask_decoder import EmbeddingDecoder
    from annotator.models.predictor import SamSegmenter

    timer.wrap(SamSegmenter, "embed", "encoder")
    sam = model.model if isinstance(model, SamSegmenter) else model
    timer.wrap(type(sam.prompt_encoder), "forward", "decoder")
    for name in ("__init__", "transformer", "iou", "masks"):
        timer.wrap(EmbeddingDecoder, name, "decoder")
    timer.wrap(amg_masks, "upscale_transposed", "upscale")
    timer.wrap(amg_masks, "stability_scores", "stability")
    timer.wrap(amg_masks, "stability_from_low_res", "stability")
    timer.wrap(amg_masks, "boxes_from_transposed", "boxes")
    timer.wrap(amg_masks, "near_crop_edge", "crop edge / pad")
    timer.wrap(amg_masks, "encode_transposed", "rle")
    timer.wrap(amg, "batched_nms", "nms")
    timer.wrap(amg.MaskGenerator, "_records", "records")
    timer.wrap(amg_masks.MaskSet, "concat", "MaskData cat/filter")
    timer.wrap(amg_masks.MaskSet, "select", "MaskData cat/filter")
    generator = amg.MaskGenerator(model, **kwargs)
    return generator.generate(image)


def prepare(spec: dict, model):
    """What a run gets as its model: the Sam, or for ours on an exported runtime a segmenter on
    it, built (and exported, once per cache) before the clock starts."""
    runtime = spec["impl"].partition(":")[2]
    if not runtime or runtime == "torch":
        return model
    from annotator.models.predictor import SamSegmenter

    return SamSegmenter(model, device="cpu", runtime=runtime, runtime_cache=spec.get("cache"), progress=False)


def worker(spec: dict) -> dict:
    import torch

    from annotator.formats.images import load_image
    from annotator.testing import random_sam

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    image = load_image(spec["image"])
    model = random_sam(spec["model"], spec["seed"])
    prepared = prepare(spec, model)
    timer = StageTimer()
    baseline_kb = _vm_kb("VmRSS")
    run = run_official if spec["impl"] == "official" else run_ours
    load_before = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with torch.no_grad():
        records = run(prepared, image, spec["kwargs"], timer)
    total = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "total": total,
        "cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "load": [load_before, os.getloadavg()[0]],
        "stages": dict(timer.times),
        "n_masks": len(records),
        "records": [{k: r[k] for k in ("segmentation", "predicted_iou", "stability_score")} for r in records],
        "peak_kb": _vm_kb("VmHWM"),
        "baseline_kb": baseline_kb,
    }


def run_in_subprocess(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{spec['impl']} run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_all(spec: dict, impls: list[str], repeat: int) -> dict[str, dict]:
    """Each implementation ``repeat`` times, the order rotated each round so none always runs
    at the same point of a changing machine load. The fastest run of each is kept; peak memory
    is the highest seen."""
    runs = {impl: [] for impl in impls}
    for r in range(repeat):
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            runs[impl].append(run_in_subprocess({**spec, "impl": impl}))
    best = {}
    for impl, rs in runs.items():
        b = dict(min(rs, key=lambda r: r["total"]))
        b["peak_kb"] = max(r["peak_kb"] for r in rs)
        b["runs"] = len(rs)
        best[impl] = b
    return best


# -- comparison ----------------------------------------------------------------------------------


def found_again(official: list[dict], ours: list[dict]) -> int:
    """Official masks that ours has too: IoU >= 0.98, predicted_iou / stability within 1e-3."""
    from pycocotools import mask as mask_utils

    if not official or not ours:
        return 0

    def rle(r):
        return {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}

    def close(a, b):
        return (
            abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-3
            and abs(a["stability_score"] - b["stability_score"]) <= 1e-3
        )

    by_counts = defaultdict(list)
    for r in ours:
        by_counts[r["segmentation"]["counts"]].append(r)
    rest = [r for r in official if not any(close(r, m) for m in by_counts[r["segmentation"]["counts"]])]
    found = len(official) - len(rest)
    if rest:
        ious = mask_utils.iou([rle(r) for r in rest], [rle(r) for r in ours], [0] * len(ours))
        for i, ref in enumerate(rest):
            found += any(close(ref, ours[j]) for j in range(len(ours)) if ious[i, j] >= 0.98)
    return found


def print_config(title: str, official: dict, ours: dict) -> dict:
    stages = [
        "encoder",
        "decoder",
        "upscale",
        "stability",
        "boxes",
        "crop edge / pad",
        "rle",
        "MaskData cat/filter",
        "nms",
        "records",
    ]
    print(f"\n== {title}")
    print(f"  {'stage':<22}{'official s':>12}{'ours s':>10}{'ratio':>8}")
    for stage in stages:
        a, b = official["stages"].get(stage, 0.0), ours["stages"].get(stage, 0.0)
        ratio = f"{a / b:7.1f}x" if b > 0.005 else "       -"
        print(f"  {stage:<22}{a:12.2f}{b:10.2f}{ratio}")

    def post(r):
        return r["total"] - r["stages"].get("encoder", 0.0) - r["stages"].get("decoder", 0.0)

    rows = {
        "end to end": (official["total"], ours["total"]),
        "post-decoder": (post(official), post(ours)),
    }
    rows["end to end, CPU time"] = (official["cpu"], ours["cpu"])
    for name, (a, b) in rows.items():
        print(f"  {name:<22}{a:12.2f}{b:10.2f}{a / b:7.1f}x")
    pa, pb = official["peak_kb"] / 1024, ours["peak_kb"] / 1024
    ia, ib = (official["peak_kb"] - official["baseline_kb"]) / 1024, (ours["peak_kb"] - ours["baseline_kb"]) / 1024
    print(
        f"  {'peak memory MiB':<22}{pa:12.0f}{pb:10.0f}{pa / pb:7.2f}x   (above the loaded model: {ia:.0f} vs {ib:.0f} MiB)"
    )
    print(
        f"  load average (1 min) before/after: official {official['load'][0]:.1f}/{official['load'][1]:.1f}, "
        f"ours {ours['load'][0]:.1f}/{ours['load'][1]:.1f}; best of {official.get('runs', 1)} runs each"
    )
    found = found_again(official["records"], ours["records"])
    print(
        f"  masks: official {official['n_masks']}, ours {ours['n_masks']}; "
        f"official masks found again: {found}/{official['n_masks']}"
    )
    return {
        "config": title,
        "end_to_end_ratio": official["total"] / ours["total"],
        "cpu_ratio": official["cpu"] / ours["cpu"],
        "post_decoder_ratio": post(official) / post(ours),
        "peak_memory_ratio": pa / pb,
        "official_s": official["total"],
        "ours_s": ours["total"],
        "official_peak_mib": pa,
        "ours_peak_mib": pb,
        "masks": [official["n_masks"], ours["n_masks"], found],
    }


def redundancy_benchmark(n: int = 1000, size=(1200, 1800), seed: int = 0) -> None:
    """Group-by-IoU and containment hierarchy on ``n`` ellipse masks: 40% independent, 30%
    jittered near-copies of those, 30% smaller ellipses inside them."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from annotator.annotations import redundancy

    rng = np.random.default_rng(seed)
    h, w = size

    def ellipse(cx, cy, rx, ry):
        m = np.zeros((h, w), np.uint8)
        x0, x1 = int(max(cx - rx, 0)), int(min(cx + rx + 1, w))
        y0, y1 = int(max(cy - ry, 0)), int(min(cy + ry + 1, h))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        m[y0:y1, x0:x1] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        if not m.any():
            m[int(min(cy, h - 1)), int(min(cx, w - 1))] = 1
        return mask_utils.encode(np.asfortranarray(m))

    base = [(rng.uniform(0, w), rng.uniform(0, h), *rng.uniform(10, 300, size=2)) for _ in range(int(0.4 * n))]
    shapes = list(base)
    for _ in range(int(0.3 * n)):
        cx, cy, rx, ry = base[rng.integers(len(base))]
        shapes.append(
            (cx + rng.normal(0, 3), cy + rng.normal(0, 3), rx * rng.uniform(0.95, 1.05), ry * rng.uniform(0.95, 1.05))
        )
    while len(shapes) < n:
        cx, cy, rx, ry = base[rng.integers(len(base))]
        f = rng.uniform(0.2, 0.6)
        shapes.append((cx + rng.uniform(-0.3, 0.3) * rx, cy + rng.uniform(-0.3, 0.3) * ry, rx * f, ry * f))
    rles = [ellipse(*s) for s in shapes]
    scores = rng.random(n)
    t0 = time.perf_counter()
    groups = redundancy.group_by_iou(rles, scores, 0.8)
    t1 = time.perf_counter()
    keep = redundancy.keep_best(rles, scores, 0.8)
    t2 = time.perf_counter()
    merged, _ = redundancy.merge_groups(rles, scores, 0.8)
    t3 = time.perf_counter()
    parents = redundancy.containment_parents(rles, 0.9)
    t4 = time.perf_counter()
    print(f"\n== redundancy on {n} masks ({w}x{h})")
    print(f"  group_by_iou(0.8):        {t1 - t0:6.2f}s  {len(np.unique(groups))} groups")
    print(f"  keep_best(0.8):           {t2 - t1:6.2f}s  {len(keep)} kept")
    print(f"  merge_groups(0.8):        {t3 - t2:6.2f}s  {len(merged)} unions")
    print(f"  containment_parents(0.9): {t4 - t3:6.2f}s  {(parents >= 0).sum()} masks have a parent")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", default="vit_b")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", default=str(DATA / "truck.jpg"))
    p.add_argument("--points", type=int, nargs="+", default=[16, 32])
    p.add_argument("--thresholds", nargs="+", choices=sorted(THRESHOLDS), default=["default", "zero"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per implementation, alternating order; the fastest of each is reported",
    )
    p.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch", "onnx"],
        help="runtimes for ours (a column each; the official model runs on PyTorch)",
    )
    p.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "annotator-bench-runtime"),
        help="export cache for the exported runtimes (built before the clock starts)",
    )
    p.add_argument("--quick", action="store_true", help="tiny model, 8x8 points, both threshold sets")
    p.add_argument("--redundancy-only", action="store_true")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.redundancy_only:
        redundancy_benchmark()
        return 0
    if args.quick:
        args.model, args.points = "tiny", [8]
    summary = []
    print(f"model {args.model} (seeded random weights), image {args.image}, points_per_batch 64")
    for points in args.points:
        for name in args.thresholds:
            kwargs = {"points_per_side": points, "output_mode": "coco_rle", **THRESHOLDS[name]}
            spec = {
                "model": args.model,
                "seed": args.seed,
                "image": args.image,
                "kwargs": kwargs,
                "threads": args.threads,
            }
            impls = ["official"] + [f"ours:{r}" for r in args.runtimes]
            best = run_all({**spec, "cache": args.cache}, impls, args.repeat)
            for r in args.runtimes:
                summary.append(
                    print_config(
                        f"points_per_side {points}, thresholds {name}, ours on {r}", best["official"], best[f"ours:{r}"]
                    )
                )
            sys.stdout.flush()
    print("\n== summary")
    for s in summary:
        print(
            f"  {s['config']:<40} end to end {s['end_to_end_ratio']:.1f}x (CPU time {s['cpu_ratio']:.1f}x), post-decoder "
            f"{s['post_decoder_ratio']:.1f}x, peak memory {s['official_peak_mib']:.0f} vs "
            f"{s['ours_peak_mib']:.0f} MiB ({s['peak_memory_ratio']:.2f}x)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if not args.quick and args.model != "tiny":
        redundancy_benchmark()
    return 0


if __name__ == "__main__":
    sys.exit(main())
