"""benchmarks/load.py: its leak check catches what it must, and a short run passes."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from annotator.annotations.document import AnnotationDocument
from annotator.formats import coco

ROOT = Path(__file__).resolve().parents[2]


def _load_module():
    spec = importlib.util.spec_from_file_location("load_benchmark", ROOT / "benchmarks" / "load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session_result(prefix="s01-"):
    """A document after the benchmark's sequence, its export and its table."""
    doc = AnnotationDocument(40, 60)
    for k in range(3):
        m = np.zeros((40, 60), bool)
        m[5 + 10 * k : 12 + 10 * k, 5 : 20 + k] = True
        doc.add(m, label=f"{prefix}obj{k}")
    box = np.zeros((40, 60), bool)
    box[:10, 30:50] = True
    doc.add(box, label=f"{prefix}box")
    auto = np.zeros((40, 60), bool)
    auto[20:, 40:] = True
    doc.add_many([auto], source="auto")
    doc.merge([1, 2])
    doc.delete([4])
    table = {"data": [["", a.id, a.label or "", a.source, "", "", a.area, a.review] for a in doc]}
    dataset = coco.to_json(coco.from_documents([(doc, {"id": 1, "file_name": "dog.jpg"})]))
    return dataset, table


def test_export_check_passes_a_clean_session_and_catches_leaks_and_lost_edits():
    problems = _load_module().export_problems
    dataset, table = _session_result()
    assert problems(dataset, table, "dog.jpg", "s01-") == []
    # another session's mask in this export
    foreign, _ = _session_result("s02-")
    leaked = dict(
        dataset,
        annotations=dataset["annotations"] + [dict(foreign["annotations"][0], annotator_id=99)],
        categories=dataset["categories"] + [dict(c, id=c["id"] + 100) for c in foreign["categories"]],
    )
    leaked["annotations"][-1]["category_id"] += 100
    found = problems(leaked, table, "dog.jpg", "s01-")
    assert any("labels of other sessions" in p for p in found)
    assert any("exported ids" in p for p in found)
    # another session's image, and a lost mask
    assert any("images" in p for p in problems(dataset, table, "truck.jpg", "s01-"))
    lost = dict(dataset, annotations=[a for a in dataset["annotations"] if a["annotator_id"] != 3])
    assert any("mask 3" in p for p in problems(lost, table, "dog.jpg", "s01-"))


def test_two_sessions_run_clean():
    run = subprocess.run(
        [sys.executable, "benchmarks/load.py", "--sessions", "2", "--grid", "2", "--timeout", "240"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "errors: 0" in run.stdout and "cross-session leaks or lost edits: 0" in run.stdout
    for action in ("upload", "click", "accept", "everything", "merge", "delete", "export"):
        assert f"\n{action} " in run.stdout
