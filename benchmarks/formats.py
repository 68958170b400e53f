"""Export 2000 masks on a 12 MP image to every format: time and peak memory per format.

Goal: every format under 5 s and 300 MB on this CPU. Each format runs in a fresh process
(so one format's memory does not hide another's); time is the whole ``convert.export``:
tracing, writing, reading back and the check. Peak memory is the process's resident memory
sampled every 5 ms during the export, above what it held before (the dataset itself: RLE).

    python benchmarks/formats.py [--masks 2000] [--width 4000 --height 3000] [--tolerance 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator.annotations import rle as rle_utils  # noqa: E402
from annotator.formats import coco  # noqa: E402

FORMATS = ("coco-rle", "coco-polygon", "yolo", "labelme", "voc")
GOAL_S, GOAL_MB = 5.0, 300


def make_dataset(n: int, h: int, w: int, seed: int = 0, max_side: int = 800) -> coco.CocoDataset:
    """SAM-like masks: box sides from 12 px to ``max_side`` (log-uniform), some with several
    parts and holes, overlapping; each drawn in its box and encoded from the box (no
    full-size arrays)."""
    rng = np.random.default_rng(seed)
    anns = []
    for k in range(n):
        s = float(np.exp(rng.uniform(np.log(12), np.log(max_side))))
        bw, bh = max(4, int(s * rng.uniform(0.6, 1.4))), max(4, int(s * rng.uniform(0.6, 1.4)))
        bw, bh = min(bw, w), min(bh, h)
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        crop = np.zeros((bh, bw), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cv2.ellipse(
                crop,
                (int(rng.integers(0, bw)), int(rng.integers(0, bh))),
                (max(1, int(bw * rng.uniform(0.15, 0.5))), max(1, int(bh * rng.uniform(0.15, 0.5)))),
                float(rng.uniform(0, 180)),
                0,
                360,
                1,
                -1,
            )
        for _ in range(int(rng.integers(0, 4))):
            cv2.circle(
                crop,
                (int(rng.integers(0, bw)), int(rng.integers(0, bh))),
                max(1, int(min(bw, bh) * rng.uniform(0.02, 0.12))),
                0,
                -1,
            )
        if not crop.any():
            crop[bh // 2, bw // 2] = 1
        anns.append(
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": int(rng.integers(1, 21)),
                "segmentation": rle_utils.encode_bbox(crop.astype(bool), x0, y0, (h, w)),
                "iscrowd": 0,
            }
        )
    cats = [{"id": i, "name": f"class {i}", "supercategory": ""} for i in range(1, 21)]
    return coco.CocoDataset([{"id": 1, "file_name": "big.jpg", "height": h, "width": w}], anns, cats)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(dataset_path: str, fmt: str, out_dir: str, tolerance: float) -> dict:
    """In the child: load the dataset, then time one export while sampling memory."""
    import gc

    from annotator.formats import convert

    dataset = coco.load(dataset_path)
    gc.collect()
    base = rss_mb()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = Path(out_dir) / (fmt + (".json" if fmt.startswith("coco") else ""))
    start, cpu = time.perf_counter(), time.process_time()
    report = convert.export(dataset, out, fmt, tolerance=tolerance)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    done.set()
    t.join()
    peak[0] = max(peak[0], rss_mb())
    size = out.stat().st_size if out.is_file() else sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "format": fmt,
        "seconds": seconds,
        "cpu": cpu,
        "peak_mb": peak[0] - base,
        "min_iou": report.min_iou,
        "summary": report.summary(),
        "mb_written": size / 2**20,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--masks", type=int, default=2000)
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--tolerance", type=float, default=0.0)
    p.add_argument(
        "--max-side",
        type=int,
        default=800,
        help="largest mask box side, px (default 800: the masks cover the image 5 times "
        "over, as SAM's nested whole/part/subpart masks do)",
    )
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--child", nargs=3, metavar=("DATASET", "FORMAT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(*args.child, args.tolerance)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = make_dataset(args.masks, args.height, args.width, max_side=args.max_side)
        path = Path(tmp) / "dataset.json"
        coco.save(ds, path)
        area = rle_utils.areas([a["segmentation"] for a in ds.annotations])
        print(
            f"{args.masks} masks on a {args.width}x{args.height} image ({args.width * args.height / 1e6:.0f} MP), "
            f"mask areas {int(np.median(area))} px median, {int(area.max())} px max, summed "
            f"{area.sum() / (args.width * args.height):.1f}x the image; made in {time.perf_counter() - t0:.1f} s; "
            f"polygon tolerance {args.tolerance:g} px; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )
        rows = []
        for fmt in args.formats:
            out = Path(tmp) / fmt
            out.mkdir()
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            res = subprocess.run(
                [sys.executable, __file__, "--tolerance", str(args.tolerance), "--child", str(path), fmt, str(out)],
                capture_output=True,
                text=True,
                env=env,
            )
            if res.returncode != 0:
                print(f"{fmt}: failed\n{res.stderr}")
                return 1
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    # wall time counts waiting for a CPU on a shared machine; CPU time is the work itself
    print(
        f"\n{'format':<14}{'wall s':>8}{'CPU s':>8}{'peak MB':>9}{'MB out':>8}  goal ({GOAL_S:g} s, {GOAL_MB} MB)"
        f"  read-back check"
    )
    for r in rows:
        ok = "met" if r["cpu"] < GOAL_S and r["peak_mb"] < GOAL_MB else "MISSED"
        print(
            f"{r['format']:<14}{r['seconds']:>8.2f}{r['cpu']:>8.2f}{r['peak_mb']:>9.0f}{r['mb_written']:>8.1f}  "
            f"{ok:<20}  {r['summary']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
