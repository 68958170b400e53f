"""Memory, hit-test and edit speed of the annotation document at scale.

1000 blob-shaped masks (random star polygons, some holed, sizes log-uniform) on a
4000x3000 image: held as RLE, indexed for hit tests. Targets: under 100 MB in all
(dense bool would be 12 GB), hit test under 5 ms, merge under 50 ms.

    python benchmarks/masks.py [--masks 1000] [--height 3000] [--width 4000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's annotator
sys.path.insert(1, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from blobs import blob_rles  # noqa: E402

from annotator.annotations.document import AnnotationDocument  # noqa: E402


def ms(samples):
    s = sorted(samples)
    return (
        f"median {statistics.median(s) * 1e3:7.3f} ms  p99 {s[int(0.99 * (len(s) - 1))] * 1e3:7.3f} ms"
        f"  max {s[-1] * 1e3:7.3f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    h, w, n = args.height, args.width, args.masks

    # memory: everything the document keeps alive (RLE strings, records, history, index)
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    rles = blob_rles(h, w, n, seed=args.seed)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc = AnnotationDocument(h, w)
    doc.add_many(rles)
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc.build_index()
    t_index = time.perf_counter() - t0
    del rles
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    areas = np.array([a.area for a in doc])
    rle_bytes = sum(len(a.counts) for a in doc)
    dense_gb = n * h * w / 1e9
    print(
        f"{n} masks on {w}x{h}: mask area median {int(np.median(areas))} px, "
        f"max {areas.max()} px, coverage {areas.sum() / (h * w):.1f}x the image"
    )
    print(f"  generate {t_gen:.2f} s, add_many {t_add * 1e3:.0f} ms, build hit index {t_index * 1e3:.0f} ms")
    print(f"memory held (tracemalloc): {held / 2**20:7.1f} MB   [target < 100 MB; dense bool: {dense_gb:.0f} GB]")
    print(
        f"  RLE strings {rle_bytes / 2**20:.1f} MB, hit index {doc.index.nbytes / 2**20:.1f} MB, "
        f"doc.nbytes() {doc.nbytes() / 2**20:.1f} MB"
    )

    rng = np.random.default_rng(1)
    # hit test: uniform clicks, then clicks that land on masks
    points = np.stack([rng.uniform(0, w, 2000), rng.uniform(0, h, 2000)], axis=1)
    times, depths = [], []
    for x, y in points:
        t0 = time.perf_counter()
        hits = doc.hit_test(x, y)
        times.append(time.perf_counter() - t0)
        depths.append(len(hits))
    print(
        f"hit test, 2000 clicks:        {ms(times)}   [target < 5 ms]  "
        f"(masks under a click: mean {np.mean(depths):.1f}, max {max(depths)})"
    )
    hit_median = statistics.median(times)

    # correctness spot check against decoded masks
    sample = [a for a in doc.annotations[:: max(1, n // 20)]]
    for a in sample:
        m = a.mask()
        ys, xs = np.nonzero(m)
        k = len(ys) // 2
        assert a.id in doc.hit_test(xs[k], ys[k])
    cold = AnnotationDocument(h, w)
    cold.add_many([a.rle for a in doc])
    times = []
    for x, y in points[:200]:
        t0 = time.perf_counter()
        cold.hit_test(x, y)
        times.append(time.perf_counter() - t0)
    print(f"hit test, first 200 clicks without a prebuilt index: {ms(times)}")

    # merge and subtract on overlapping masks; undo after each
    anns = doc.annotations
    boxes = np.array([a.bbox for a in anns])
    merge_times, sub_times, undo_times, merged_sizes = [], [], [], []
    for _trial in range(30):
        i = int(rng.integers(0, n))
        x, y, bw, bh = boxes[i]
        overlap = np.flatnonzero(
            (boxes[:, 0] < x + bw)
            & (boxes[:, 0] + boxes[:, 2] > x)
            & (boxes[:, 1] < y + bh)
            & (boxes[:, 1] + boxes[:, 3] > y)
        )
        group = [anns[j].id for j in overlap[:5]]
        if len(group) < 2:
            group = [anns[i].id, anns[(i + 1) % n].id]
        t0 = time.perf_counter()
        new = doc.merge(group)
        merge_times.append(time.perf_counter() - t0)
        merged_sizes.append(doc[new].area)
        t0 = time.perf_counter()
        doc.undo()
        undo_times.append(time.perf_counter() - t0)
        big = max(group, key=lambda k: doc[k].area)
        t0 = time.perf_counter()
        try:
            doc.subtract(big, [k for k in group if k != big])
            sub_times.append(time.perf_counter() - t0)
            doc.undo()
        except ValueError:
            pass
    print(
        f"merge 2-5 overlapping masks:  {ms(merge_times)}   [target < 50 ms]  "
        f"(merged area median {int(np.median(merged_sizes))} px)"
    )
    print(f"subtract:                     {ms(sub_times)}")
    print(f"undo:                         {ms(undo_times)}")
    t0 = time.perf_counter()
    doc.select(doc.ids[: n // 2])
    doc.merge()
    print(f"merge of {n // 2} masks at once: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    ok = held < 100 * 2**20 and hit_median < 5e-3 and statistics.median(merge_times) < 50e-3
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
