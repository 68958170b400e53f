"""Many people at once: N concurrent gradio_client sessions against a local app.

Starts ``python -m annotator serve`` on loopback with a small seeded random SAM (the test
model; ``--model vit_b`` for real-size compute), then runs N sessions in parallel, each
doing what a person does with one image:

    upload -> 3 objects (point, refinement point, accept with a label) -> a box, accepted
    -> segment everything on a small grid -> select two masks and merge them
    -> delete one -> export COCO (RLE)

The canvas comes inside every response (a frame of what changed, drawn by the browser; were it
a served image file, the session would fetch it as a browser does: the "canvas" row). Each session
uses its own label prefix, and at the end its exported COCO file must hold exactly the masks
its own table shows (same ids, same areas, its own labels and image) and nothing of any
other session: a leak or a lost edit is reported as such. Prints errors, and p50/p95/max
latency per action.

Bounded: ``--sessions`` (default 20, at most 64) and ``--timeout`` for the whole run; the
server listens on 127.0.0.1 only and is stopped at the end.

    python benchmarks/load.py                  # 20 sessions, tiny random SAM
    python benchmarks/load.py --sessions 4     # a quick look
    python benchmarks/load.py --think 1        # people pause ~1 s between actions
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's annotator, not another installed copy
DATA = ROOT.parent / "shared" / "data" / "images"
IMAGES = ["truck.jpg", "dog.jpg", "dogs.jpg", "groceries.jpg"]
CANVAS, STATUS, MESSAGE, CANDIDATES, TABLE = range(5)  # outputs of every view endpoint
ACTIONS = ["upload", "click", "accept", "everything", "select", "merge", "delete", "export", "canvas"]


def start_server(model: str, checkpoint: str, port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    cmd = [
        sys.executable,
        "-m",
        "annotator",
        "serve",
        "--model",
        model,
        "--checkpoint",
        checkpoint,
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-download",
    ]
    log = open(log_path, "w")  # noqa: SIM115  (the server's log: open for the process's life)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not answer within 180 s:\n{log_path.read_text()}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (its threads and waited-for children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Session:
    """One person's sequence; records (action, seconds) and the problems it saw."""

    def __init__(self, index: int, url: str, rng: random.Random, grid: int, call_timeout: float, think: float = 0.0):
        from gradio_client import Client

        self.index, self.url, self.rng, self.grid = index, url, rng, grid
        self.call_timeout = call_timeout
        self.think = think
        self.prefix = f"s{index:02d}-"
        self.image = IMAGES[index % len(IMAGES)]
        self.client = Client(url, verbose=False, download_files=False)
        self.times: list[tuple[str, float]] = []
        self.errors: list[str] = []
        self.leaks: list[str] = []

    def call(self, action: str, *args, api_name: str):
        if self.think:
            time.sleep(self.rng.uniform(0, 2 * self.think))  # a person looks before the next action
        t0 = time.perf_counter()
        try:
            out = self.client.submit(*args, api_name=api_name).result(timeout=self.call_timeout)
        except Exception as e:
            raise RuntimeError(f"{api_name}: {type(e).__name__}: {e}") from None
        self.times.append((action, time.perf_counter() - t0))
        if isinstance(out, tuple) and out and isinstance(out[CANVAS], dict) and out[CANVAS].get("url"):
            self.fetch(out[CANVAS])  # the browser loads the new canvas
        return out

    def fetch(self, file: dict) -> bytes:
        t0 = time.perf_counter()
        with urllib.request.urlopen(file["url"], timeout=self.call_timeout) as r:
            data = r.read()
        self.times.append(("canvas", time.perf_counter() - t0))
        return data

    def run(self) -> None:
        from gradio_client import handle_file

        try:
            out = self.call("upload", handle_file(str(DATA / self.image)), api_name="/upload")
            w, h = (int(v) for v in out[STATUS].split(self.image, 1)[1].split()[0].split("x"))
            for k in range(3):
                x, y = self.rng.uniform(0.2, 0.8) * w, self.rng.uniform(0.2, 0.8) * h
                self.call("click", x, y, "positive", api_name="/click")
                self.call("click", min(x + 0.1 * w, w - 1), y, "negative", api_name="/click")
                self.call("accept", f"{self.prefix}obj{k}", api_name="/accept")
            x, y = self.rng.uniform(0.1, 0.5) * w, self.rng.uniform(0.1, 0.5) * h
            self.call("click", x, y, "box", api_name="/click")
            self.call("click", x + 0.3 * w, y + 0.3 * h, "box", api_name="/click")
            self.call("accept", f"{self.prefix}box", api_name="/accept")
            t0 = time.perf_counter()
            job = self.client.submit(self.grid, 16, 0.0, 0.0, 0.7, 0, 0, api_name="/segment_everything")
            last = job.result(timeout=self.call_timeout)
            self.times.append(("everything", time.perf_counter() - t0))
            if "found" not in last[MESSAGE]:
                self.errors.append(f"segment everything: {last[MESSAGE]!r}")
            self.call("select", 1, api_name="/select_mask")
            self.call("select", 2, api_name="/select_mask")
            out = self.call("merge", api_name="/merge")
            if "Merged" not in out[MESSAGE]:
                self.errors.append(f"merge: {out[MESSAGE]!r}")
            self.call("select", api_name="/clear_selection")
            self.call("select", 4, api_name="/select_mask")
            self.call("delete", api_name="/delete")
            table = self.client.submit(api_name="/masks").result(timeout=self.call_timeout)
            out = self.call("export", "rle", True, False, api_name="/export_coco")
            coco_file = next(f for f in out[-2] if f["path"].endswith("_coco.json"))
            self.leaks += export_problems(json.loads(self.fetch(coco_file)), table, self.image, self.prefix)
        except Exception as e:  # reported per session, the others go on
            self.errors.append(f"{type(e).__name__}: {e}")


def export_problems(dataset: dict, table: dict, image: str, prefix: str) -> list[str]:
    """What is wrong with one session's exported COCO, given the mask table its own session
    shows: masks of others, lost edits, undone merges or deletes ([] when none)."""
    from pycocotools import mask as mask_utils

    problems = []
    rows = {int(r[1]): r for r in table["data"]}
    anns = {a["annotator_id"]: a for a in dataset["annotations"]}
    if [i["file_name"] for i in dataset["images"]] != [image]:
        problems.append(f"images {[i['file_name'] for i in dataset['images']]} != [{image}]")
    if set(anns) != set(rows):
        problems.append(f"exported ids {sorted(anns)} != the session's masks {sorted(rows)}")
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    labels = {names[a["category_id"]] for a in anns.values()}
    foreign = {n for n in labels if n != "object" and not n.startswith(prefix)}
    if foreign:
        problems.append(f"labels of other sessions: {sorted(foreign)}")
    for ann_id, ann in anns.items():
        area = int(mask_utils.area(ann["segmentation"]))
        if ann_id in rows and int(rows[ann_id][6]) != area:
            problems.append(f"mask {ann_id}: exported area {area} != table area {rows[ann_id][6]}")
    # masks 1 and 2 were merged into a new one and mask 4 (the box) deleted; mask 3 was
    # left alone and must be there with its label
    if {1, 2, 4} & set(anns):
        problems.append(f"merged or deleted masks came back: {sorted({1, 2, 4} & set(anns))}")
    if 3 not in anns or names[anns[3]["category_id"]] != f"{prefix}obj2":
        problems.append("mask 3 (obj2) lost or relabelled")
    if not any(a.get("source") == "auto" for a in anns.values()):
        problems.append("no segment-everything masks in the export")
    return problems


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=20, help="concurrent sessions (default 20, at most 64)")
    p.add_argument("--model", default="tiny", help="random-weight SAM to serve: tiny (default) or vit_b")
    p.add_argument("--grid", type=int, default=4, help="points_per_side of segment everything (default 4)")
    p.add_argument("--timeout", type=float, default=900, help="seconds for the whole run (default 900)")
    p.add_argument(
        "--call-timeout",
        type=float,
        default=300,
        help="seconds one request may take before it counts as an error (default 300)",
    )
    p.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean seconds a person waits between actions (uniform 0..2x; default 0: "
        "every session acts as fast as the server answers, a stress test)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not 1 <= args.sessions <= 64:
        p.error("--sessions must be between 1 and 64")

    from annotator.testing import free_port, write_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="annotator-load-") as tmp:
        tmp = Path(tmp)
        checkpoint = write_random_checkpoint(tmp / f"sam_{args.model}.pth", args.model, seed=args.seed)
        port = free_port()
        t0 = time.perf_counter()
        server = start_server(args.model, str(checkpoint), port, tmp / "server.log")
        print(f"server up in {time.perf_counter() - t0:.1f} s (model {args.model}, random weights, 127.0.0.1:{port})")
        try:
            url = f"http://127.0.0.1:{port}/"
            sessions = [
                Session(i, url, random.Random(args.seed * 1000 + i), args.grid, args.call_timeout, args.think)
                for i in range(args.sessions)
            ]
            t0 = time.perf_counter()
            server_cpu0, own_cpu0 = cpu_seconds(server.pid), sum(os.times()[:2])
            pool = ThreadPoolExecutor(args.sessions)
            futures = [pool.submit(s.run) for s in sessions]
            done, not_done = wait(futures, timeout=args.timeout)
            pool.shutdown(wait=False, cancel_futures=True)  # a stuck session must not hold the run
            wall = time.perf_counter() - t0
            rss = peak_rss_mib(server.pid)
            server_cpu = cpu_seconds(server.pid)
            server_cpu = None if server_cpu is None or server_cpu0 is None else server_cpu - server_cpu0
            own_cpu = sum(os.times()[:2]) - own_cpu0
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        server_log = (tmp / "server.log").read_text(errors="replace")

    timed_out = [s.index for s, f in zip(sessions, futures) if f in not_done]
    times = defaultdict(list)
    for s in sessions:
        for action, seconds in s.times:
            times[action].append(seconds * 1000)
    print(
        f"\n{args.sessions} sessions, think time {args.think:g} s, "
        f"{sum(len(s.times) for s in sessions)} requests in {wall:.1f} s"
        + (f"; server peak RSS {rss:.0f} MiB" if rss else "")
    )
    # where the cores went: a server near len(cores) x wall is saturated, and waiting is queueing
    if server_cpu is not None:
        print(
            f"CPU seconds over the run: server {server_cpu:.0f}, the sessions' clients (this process) "
            f"{own_cpu:.0f}; {os.cpu_count()} cores x {wall:.0f} s = {os.cpu_count() * wall:.0f}"
        )
    print(f"{'action':<12}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for action in ACTIONS:
        v = times.get(action, [])
        if v:
            print(f"{action:<12}{len(v):>6}{percentile(v, 50):>10.0f}{percentile(v, 95):>10.0f}{max(v):>10.0f}")
    errors = [(s.index, e) for s in sessions for e in s.errors]
    leaks = [(s.index, e) for s in sessions for e in s.leaks]
    print(f"\nerrors: {len(errors)}")
    for i, e in errors:
        print(f"  session {i}: {e}")
    if errors:
        print("the server's log ends:\n  " + "\n  ".join(server_log.splitlines()[-40:]))
    print(f"cross-session leaks or lost edits: {len(leaks)}")
    for i, e in leaks:
        print(f"  session {i}: {e}")
    if timed_out:
        print(f"timed out after {args.timeout:.0f} s: sessions {timed_out}", flush=True)
        os._exit(1)  # their threads are still waiting on the stopped server
    return 1 if errors or leaks else 0


if __name__ == "__main__":
    raise SystemExit(main())
