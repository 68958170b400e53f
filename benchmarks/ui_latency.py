"""Server time for a click in the app: predict + canvas overlay + response encoding.

SAM vit_b architecture (seeded random weights), CPU, truck.jpg (1800x1200), the image
embedding already cached, a document that already holds masks (so the canvas has an
overlay under the prompt). Each sample is one click as the app handles it, run in a worker
thread as Gradio runs handlers:

- first click of a new object (3 candidates), a refinement click (previous logits fed
  back), and a same-pixel click that cycles candidates (no model call);
- ``predict``: the segmenter call; ``canvas``: the rest of ``Workbench.click`` (prompt
  state, drawing the prompt over the cached masks layer, status and table); ``encode``:
  what Gradio does with the outputs before sending them (JPEG encoding of the canvas into
  its cache; the other outputs are small).

OpenMP's wait policy decides a click's time on a busy CPU: with the default (active
waiting) torch's threads spin against other processes. ``annotator serve`` sets
OMP_WAIT_POLICY=PASSIVE; the policy is read when torch loads, so each policy is measured in
its own process, side by side, and the ratio printed. Then, with serve's policy, the same
clicks end to end through a running app (``/click`` over HTTP with gradio_client, queue and
response included, no file download). Prints p50/p95.

    python benchmarks/ui_latency.py                 # vit_b, 40 objects
    python benchmarks/ui_latency.py --model tiny --objects 5   # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
GOAL_MS = 100.0


class Timed:
    """Wraps a segmenter, recording the time of each predict call."""

    def __init__(self, segmenter):
        self._seg = segmenter
        self.last = 0.0

    def __getattr__(self, name):
        return getattr(self._seg, name)

    def predict(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self._seg.predict(*args, **kwargs)
        self.last = time.perf_counter() - t0
        return out


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def row(name, values) -> str:
    return f"  {name:<28} p50 {pct(values, 50):7.1f} ms   p95 {pct(values, 95):7.1f} ms   (n={len(values)})"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_b")
    p.add_argument("--image", default=str(DATA / "truck.jpg"))
    p.add_argument("--objects", type=int, default=40, help="objects prompted (3 clicks each)")
    p.add_argument("--masks", type=int, default=30, help="masks in the document under the prompt")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-http", action="store_true", help="skip the end-to-end run through the app")
    p.add_argument(
        "--omp-wait",
        choices=("PASSIVE", "ACTIVE"),
        default=None,
        help="measure one policy in this process (default: both, in child processes)",
    )
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)  # a child's results
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.omp_wait is not None:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait  # before torch loads
        with ThreadPoolExecutor(1) as pool:  # a handler thread, as in the server
            return pool.submit(run, args).result()
    results = {}
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for policy in ("PASSIVE", "ACTIVE"):
        note = " (annotator serve's setting)" if policy == "PASSIVE" else " (OpenMP's default)"
        print(f"\n=== OMP_WAIT_POLICY={policy}{note}", flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            extra = [] if policy == "PASSIVE" else ["--no-http"]
            subprocess.run(
                [sys.executable, __file__, *passthrough, *extra, "--omp-wait", policy, "--json", out.name],
                check=True,
                env={**os.environ, "OMP_WAIT_POLICY": policy},
            )
            results[policy] = json.loads(Path(out.name).read_text())
    print("\nside by side (ms):            PASSIVE p50/p95      ACTIVE p50/p95     ACTIVE/PASSIVE (p50)")
    for key in ("predict", "all clicks"):
        a, b = results["PASSIVE"][key], results["ACTIVE"][key]
        print(f"  {key:<26} {a[0]:8.1f} {a[1]:8.1f}    {b[0]:8.1f} {b[1]:8.1f}    {b[0] / a[0]:6.1f}x")
    p95 = results["PASSIVE"]["all clicks"][1]
    print(
        f"goal: p95 < {GOAL_MS:.0f} ms with serve's setting -> {'met' if p95 < GOAL_MS else 'NOT met'} "
        f"(p95 {p95:.1f} ms)"
    )
    return 0


def run(args) -> int:
    import gradio as gr
    import torch

    from annotator.app.workbench import Workbench
    from annotator.models.loading import BackendInfo
    from annotator.models.predictor import SamSegmenter
    from annotator.testing import random_sam

    if args.threads:
        torch.set_num_threads(args.threads)
    seg = Timed(SamSegmenter(random_sam(args.model, 0), device="cpu"))
    info = BackendInfo("sam", args.model, f"random_{args.model}.pth", "cpu", "fp32")
    wb = Workbench(seg, info)
    sid = "bench"
    t0 = time.perf_counter()
    wb.open_image(sid, args.image)
    encode_s = time.perf_counter() - t0
    s = wb.session(sid)
    h, w = s.image.shape[:2]
    print(
        f"{args.model} on CPU ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}), {Path(args.image).name} {w}x{h}; "
        f"image encoder {encode_s:.1f} s (once; cached after)"
    )

    rng = np.random.default_rng(0)
    # a document with masks, as after some annotating
    for _ in range(args.masks):
        wb.click(sid, float(rng.uniform(0, w)), float(rng.uniform(0, h)), "positive")
        wb.accept(sid, "thing")
    print(f"document: {len(s.doc)} masks under the prompt")

    image_out = gr.Image(format="jpeg", interactive=False)  # the canvas component's encoder
    for _ in range(3):  # warm-up: first decoder calls set up kernels
        wb.clear_prompt(sid)
        image_out.postprocess(wb.click(sid, float(rng.uniform(0, w)), float(rng.uniform(0, h))).canvas)
    results = {"first click (3 candidates)": [], "refinement click": [], "same pixel (cycle)": []}
    parts = {"predict": [], "canvas": [], "encode": []}
    totals = []
    clicks = []
    for _ in range(args.objects):
        x, y = float(rng.uniform(50, w - 50)), float(rng.uniform(50, h - 50))
        dx, dy = rng.uniform(-40, 40, 2)
        wb.clear_prompt(sid)
        for kind, cx, cy, mode in (
            ("first click (3 candidates)", x, y, "positive"),
            ("same pixel (cycle)", x + 1, y, "positive"),
            ("refinement click", x + dx, y + dy, "negative"),
        ):
            seg.last = 0.0
            t0 = time.perf_counter()
            view = wb.click(sid, cx, cy, mode)
            t1 = time.perf_counter()
            if view.canvas is not None:
                image_out.postprocess(view.canvas)
            t2 = time.perf_counter()
            clicks.append((cx, cy, mode))
            results[kind].append(t2 - t0)
            totals.append(t2 - t0)
            if kind != "same pixel (cycle)":
                parts["predict"].append(seg.last)
                parts["canvas"].append(t1 - t0 - seg.last)
                parts["encode"].append(t2 - t1)

    print("\nserver time per click (in process):")
    for name, values in results.items():
        print(row(name, values))
    print(row("all clicks", totals))
    print("breakdown of clicks that run the model:")
    for name, values in parts.items():
        print(row(name, values))
    if args.json:
        measured = {**results, **parts, "all clicks": totals}
        summary = {name: [pct(v, 50), pct(v, 95)] for name, v in measured.items()}
        Path(args.json).write_text(json.dumps(summary))

    if not args.no_http:
        http(wb, args.image, clicks[: min(len(clicks), 60)])
    return 0


def http(wb, image, clicks) -> None:
    """The same clicks through a running app: browser-equivalent API calls over HTTP."""
    from gradio_client import Client, handle_file

    from annotator.app.ui import build_app
    from annotator.testing import free_port

    port = free_port()
    demo = build_app(wb.segmenter, wb.info, workbench=wb)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        client.predict(handle_file(image), api_name="/upload")  # embedding from the cache
        times = []
        for k, (x, y, mode) in enumerate(clicks):
            if k % 3 == 0:
                client.predict(api_name="/clear_prompt")
            t0 = time.perf_counter()
            client.predict(x, y, mode, api_name="/click")
            times.append(time.perf_counter() - t0)
        print("\nend to end through the app (gradio_client -> queue -> handler -> response):")
        print(row("click round trip", times))
    finally:
        demo.close()


if __name__ == "__main__":
    sys.exit(main())
