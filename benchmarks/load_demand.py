"""What one person of ``benchmarks/load.py`` asks of the server, in CPU seconds.

Runs load.py's sequence for one session (upload, 3 objects of a point, a refining point and
accept, a box, segment everything on a 4x4 grid, select, merge, delete, export) on each of
the four shared photos, one at a time, in this process, through the same ``Workbench``
methods the app's handlers call, each View's canvas frame built as the page gets it. Prints
the CPU time per action (every thread of the process: the model's too) and what N sessions
need against what the cores give in the time load.py took: where that ratio nears 1, waiting
in queues, not the work itself, sets the latency people see.

    python benchmarks/load_demand.py                  # tiny random SAM, as load.py serves
    python benchmarks/load_demand.py --sessions 20 --wall 108
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `annotator serve` sets it
sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import DATA, IMAGES  # noqa: E402  (load.py's photos; it also puts this checkout first)

PER_SESSION = {"upload": 1, "click": 8, "accept": 4, "everything": 1, "select": 4, "merge": 1, "delete": 1, "export": 1}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="random-weight SAM: tiny (default, as load.py) or vit_b")
    p.add_argument("--sessions", type=int, default=20, help="sessions to scale the demand to (default 20)")
    p.add_argument("--wall", type=float, default=None, help="seconds load.py took with that many (optional)")
    args = p.parse_args()

    from annotator.app.workbench import Workbench
    from annotator.models.loading import load_segmenter
    from annotator.testing import write_random_checkpoint

    checkpoint = write_random_checkpoint(Path(tempfile.mkdtemp()) / f"sam_{args.model}.pth", args.model, seed=0)
    segmenter, info = load_segmenter(args.model, str(checkpoint), device="cpu", download=False)
    wb = Workbench(segmenter, info)
    wb.browser_canvas = True  # as build_app sets it: every View carries the canvas's frame
    cost = defaultdict(list)

    def shown(view):
        if getattr(view, "frame", None) is not None:
            view.frame()
        return view

    def act(name, fn, *a, **kw):
        """``fn(*a, **kw)``, and the frame of the View it returns, timed."""
        c0, t0 = cpu_seconds(), time.perf_counter()
        shown(fn(*a, **kw))
        cost[name].append((cpu_seconds() - c0, time.perf_counter() - t0))

    for i, name in enumerate(IMAGES):
        sid, rng = f"s{i}", random.Random(i)

        def upload(sid=sid, name=name):
            shown(wb.open_image(sid, DATA / name))
            return wb.encode(sid)

        def everything(sid=sid):
            for step in wb.segment_everything(
                sid, points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0
            ):
                shown(step.view)

        act("upload", upload)
        h, w = wb.session(sid).image.shape[:2]
        for k in range(3):
            x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
            act("click", wb.click, sid, x, y, "positive")
            act("click", wb.click, sid, min(x + 0.1 * w, w - 1), y, "negative")
            act("accept", wb.accept, sid, f"obj{k}")
        x, y = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
        act("click", wb.click, sid, x, y, "box")
        act("click", wb.click, sid, x + 0.3 * w, y + 0.3 * h, "box")
        act("accept", wb.accept, sid, "box")
        act("everything", everything)
        act("select", wb.select_mask, sid, 1)
        act("select", wb.select_mask, sid, 2)
        act("merge", wb.merge, sid)
        act("select", wb.clear_selection, sid)
        act("select", wb.select_mask, sid, 4)
        act("delete", wb.delete, sid)
        act("export", lambda sid=sid: wb.export(sid, "rle", True, False).view)

    print(f"SAM {args.model} (random weights), {info.runtime}, one session at a time, {os.cpu_count()} cores")
    print(f"{'action':<12}{'CPU ms':>9}{'wall ms':>9}{'per session':>13}{'CPU s/session':>15}")
    total = 0.0
    for action, n in PER_SESSION.items():
        v = cost[action]
        c, wl = sum(x for x, _ in v) / len(v), sum(y for _, y in v) / len(v)
        total += c * n
        print(f"{action:<12}{c * 1000:>9.0f}{wl * 1000:>9.0f}{n:>13}{c * n:>15.2f}")
    need = total * args.sessions
    print(f"one session: {total:.1f} CPU s; {args.sessions} sessions: {need:.0f} CPU s")
    if args.wall:
        have = os.cpu_count() * args.wall
        print(f"the cores give {have:.0f} CPU s in {args.wall:g} s: the server alone needs {need / have:.0%} of them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
