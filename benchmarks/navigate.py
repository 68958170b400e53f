"""Moving to the next image of a project: with the background prefetch and without.

A project of the shared photos; a person opens the first image, works on it for a while
(here: until the prefetch of the next image has finished, the case it is built for, or a
fixed --think time), then presses "next". Times ``Workbench.step_image`` (load the image and
its saved masks, the embedding, the View), with ``prefetch=True`` and ``prefetch=False``
side by side in one process, alternating, and prints the medians and their ratio. Random
weights (no checkpoint here); the model's architecture is what costs the time.

    python benchmarks/navigate.py                  # vit_t (the CPU default), 3 rounds
    python benchmarks/navigate.py --model vit_b
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "images"
IMAGES = ["truck.jpg", "dog.jpg", "dogs.jpg", "groceries.jpg"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_t", help="architecture with random weights (default vit_t)")
    p.add_argument("--rounds", type=int, default=3, help="walks through the project per setting")
    p.add_argument(
        "--think",
        type=float,
        default=None,
        help="seconds spent on each image before 'next' (default: until the prefetch is done)",
    )
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as annotator serve sets it

    from annotator.app.workbench import Workbench
    from annotator.models.loading import load_segmenter
    from annotator.projects.library import ProjectLibrary
    from annotator.testing import write_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="annotator-navigate-") as tmp:
        tmp = Path(tmp)
        ckpt = write_random_checkpoint(tmp / f"{args.model}.pth", args.model)
        times: dict[bool, list[float]] = {True: [], False: []}
        encoder: list[float] = []
        for round_ in range(args.rounds):
            for prefetch in (True, False) if round_ % 2 == 0 else (False, True):
                # a fresh model (and so an empty embedding cache) for every walk
                segmenter, info = load_segmenter(args.model, str(ckpt), device="cpu")
                wb = Workbench(
                    segmenter, info, projects=ProjectLibrary(tmp / f"p{round_}{prefetch}"), prefetch=prefetch
                )
                sid = uuid.uuid4().hex
                wb.open_project(sid, "walk")
                t0 = time.perf_counter()
                wb.add_uploads(sid, [DATA / name for name in IMAGES], show=True)  # shows image 1
                if not prefetch:
                    encoder.append(time.perf_counter() - t0)
                for _ in range(len(IMAGES) - 1):
                    if args.think is not None:
                        time.sleep(args.think)
                    elif wb.prefetcher is not None:
                        wb.prefetcher.wait_idle(600)
                    t0 = time.perf_counter()
                    view = wb.step_image(sid, 1)
                    times[prefetch].append(time.perf_counter() - t0)
                    assert "Embedding" in view.message, view.message
                if wb.prefetcher is not None:
                    wb.prefetcher.close()
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"model {args.model} (random weights), CPU, {len(IMAGES)} images, {args.rounds} rounds")
        print(f"first image shown with its embedding: median {statistics.median(encoder):.2f} s")
        print(
            f"'next image' without prefetch: median {off * 1e3:.0f} ms (n={len(times[False])}, "
            f"max {max(times[False]) * 1e3:.0f} ms)"
        )
        print(
            f"'next image' with prefetch:    median {on * 1e3:.0f} ms (n={len(times[True])}, "
            f"max {max(times[True]) * 1e3:.0f} ms)"
        )
        print(f"ratio: {off / on:.1f}x faster with prefetch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
