"""Project store latency: what an accepted edit costs before the UI may report it saved.

On truck.jpg's size (1800x1200) with N masks already on the image (ellipses, RLE like real
masks), times: save after adding one mask (the common edit), save after relabelling one,
undo from the store, loading the image's document, and one-image COCO export. Each save is
a committed transaction (synchronous=FULL: on disk when it returns). Also the file size.

    python benchmarks/project.py [--masks 100 500] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator.annotations.document import AnnotationDocument  # noqa: E402
from annotator.projects.store import Project  # noqa: E402

H, W = 1200, 1800


def ellipse(rng, h=H, w=W) -> np.ndarray:
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(10, h / 4), rng.uniform(10, w / 4)
    y, x = np.ogrid[:h, :w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def ms(samples) -> str:
    return f"{statistics.median(samples) * 1e3:7.2f} ms (p90 {np.percentile(samples, 90) * 1e3:.2f})"


def run(n_masks: int, repeat: int, folder: Path) -> None:
    rng = np.random.default_rng(0)
    image = folder / "img.png"
    from PIL import Image

    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(image)
    path = folder / f"bench{n_masks}.annotator"
    with Project(path) as p:
        img = p.add_image(image).id
        doc = AnnotationDocument(H, W)
        doc.add_many([ellipse(rng) for _ in range(n_masks)], source="auto")
        t = time.perf_counter()
        p.save(img, doc)
        first = time.perf_counter() - t
        extra = [ellipse(rng) for _ in range(repeat)]
        add, relabel, undo, redo = [], [], [], []
        for k in range(repeat):
            doc.add(extra[k])
            t = time.perf_counter()
            p.save(img, doc)
            add.append(time.perf_counter() - t)
            doc.relabel([doc.ids[k]], f"label{k % 5}")
            t = time.perf_counter()
            p.save(img, doc)
            relabel.append(time.perf_counter() - t)
        for _ in range(repeat):
            t = time.perf_counter()
            p.undo(img)
            undo.append(time.perf_counter() - t)
        for _ in range(repeat):
            t = time.perf_counter()
            p.redo(img)
            redo.append(time.perf_counter() - t)
        loads = []
        for _ in range(5):
            t = time.perf_counter()
            p.load_document(img)
            loads.append(time.perf_counter() - t)
        t = time.perf_counter()
        p.export_coco(folder / "out.json")
        export = time.perf_counter() - t
    size = sum(f.stat().st_size for f in folder.glob(path.name + "*"))
    print(f"\n{n_masks} masks on {W}x{H} (+{repeat} edits of each kind)")
    print(f"  first save of all masks    {first * 1e3:7.1f} ms")
    print(f"  save after adding one mask {ms(add)}")
    print(f"  save after relabelling one {ms(relabel)}")
    print(f"  undo (store)               {ms(undo)}")
    print(f"  redo (store)               {ms(redo)}")
    print(f"  load the document          {ms(loads)}")
    print(f"  export COCO (one image)    {export * 1e3:7.1f} ms")
    print(f"  project file + WAL         {size / 2**20:7.2f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    for n in args.masks:
        with tempfile.TemporaryDirectory() as d:
            run(n, args.repeat, Path(d))


if __name__ == "__main__":
    main()
