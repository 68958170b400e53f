"""`annotator convert` and `annotator eval` end to end, as a user runs them."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import LABELME_COCO
from pycocotools.coco import COCO

from annotator.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
LABELME = LABELME_COCO / "annotations.json"


def annotator(*args):
    """The CLI in a fresh interpreter, exactly as a user runs it (costs a torch import)."""
    return subprocess.run(
        [sys.executable, "-m", "annotator", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def masks_of(path):
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO(str(path))
    return {a: c.annToMask(c.anns[a]).astype(bool) for a in sorted(c.anns)}, c


def run_main(capsys, *args):
    """The CLI in this process (cheaper, for everything but the headline round trip)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_convert_and_eval():
    text = build_parser().format_help()
    assert "convert" in text and "eval" in text and "serve" in text


def test_labelme_round_trip_through_rle_and_back(tmp_path):
    original, _ = masks_of(LABELME)
    rle_path, again_path, poly_path = tmp_path / "rle.json", tmp_path / "again.json", tmp_path / "poly.json"

    out = annotator("convert", LABELME, "-o", rle_path)
    assert out.returncode == 0, out.stderr
    assert "wrote 12 annotations on 3 images (coco-rle)" in out.stderr
    assert "12 masks on 3 images · COCO RLE exact" in out.stderr
    data = json.loads(rle_path.read_text())
    assert all(isinstance(a["segmentation"]["counts"], str) for a in data["annotations"])
    assert {c["id"]: c["name"] for c in data["categories"]}[0] == "_background_"
    as_rle, _ = masks_of(rle_path)
    assert as_rle.keys() == original.keys()
    for k in original:  # the RLE step is pixel-exact
        assert np.array_equal(as_rle[k], original[k])

    # the next two only read rle.json: run them side by side
    again, poly = (
        subprocess.Popen(
            [sys.executable, "-m", "annotator", "convert", str(rle_path), "-o", str(p), *extra],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p, extra in ((again_path, ()), (poly_path, ("--segmentation", "polygon")))
    )
    assert again.wait(timeout=120) == 0 and poly.wait(timeout=120) == 0, (again.stderr.read(), poly.stderr.read())
    again.stderr.close()
    poly.stderr.close()
    assert [a["segmentation"] for a in json.loads(again_path.read_text())["annotations"]] == [
        a["segmentation"] for a in data["annotations"]
    ]  # RLE -> RLE changes nothing

    as_poly, c = masks_of(poly_path)
    assert all(isinstance(a["segmentation"], list) for a in c.dataset["annotations"])
    for k in original:
        iou = (as_poly[k] & as_rle[k]).sum() / (as_poly[k] | as_rle[k]).sum()
        assert iou >= 0.9
        assert np.array_equal(as_poly[k], as_rle[k])  # our polygons are exact, in fact


def test_eval_prints_a_table(tmp_path, capsys):
    rle_path = tmp_path / "rle.json"
    assert run_main(capsys, "convert", LABELME, "-o", rle_path)[0] == 0
    code, stdout, stderr = run_main(capsys, "eval", rle_path, LABELME, "--json", tmp_path / "m.json")
    assert code == 0, stderr
    lines = {line.split("  ")[0].strip(): line.split()[-1] for line in stdout.splitlines() if "  " in line}
    assert lines["recall@0.5 (class-agnostic)"] == "1.0000"
    assert lines["recall@0.75 (class-agnostic)"] == "1.0000"
    assert lines["segm AP"] == "1.0000" and lines["mIoU"] == "1.0000"
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["ap"]["AP"] == 1.0 and saved["gt_instances"] == 12


def test_bad_input_exits_2_naming_the_annotation(tmp_path, capsys):
    data = json.loads(LABELME.read_text())
    data["annotations"][3]["bbox"] = [1, 2, float("nan"), 4]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, _, stderr = run_main(capsys, "convert", bad, "-o", tmp_path / "out.json")
    assert code == 2
    assert "bad.json: annotation #3 (id 3): bbox has a NaN" in stderr
    assert not (tmp_path / "out.json").exists()
    code, _, stderr = run_main(capsys, "eval", bad, LABELME)
    assert code == 2 and "annotation #3" in stderr
    code, _, stderr = run_main(capsys, "eval", LABELME, tmp_path / "missing.json")
    assert code == 2 and "no such file" in stderr
