"""labelme JSON (also read and written by X-AnyLabeling and ISAT): one JSON per image.

Each mask is one ``polygon`` shape per part, the parts of one mask sharing a ``group_id`` (as
labelme groups them); a hole is joined to its part's ring by a zero-width bridge, which
labelme's even-odd fill (Qt when drawing, PIL in ``labelme_json_to_dataset``) leaves empty.
``labels.txt`` beside the JSON files lists the classes in order (labelme ``--labels``).

Reading takes ``polygon``, ``rectangle``, ``circle`` and ``mask`` shapes; shapes with the
same label and ``group_id`` are one mask, shapes without a ``group_id`` one mask each (as
labelme's own converters do). Lines and points have no area and are left out with a note.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.formats import polygons
from annotator.formats.coco import CocoDataset, CocoError, _read_json
from annotator.formats.dataset import (
    ImageSource,
    WriteResult,
    Written,
    annotation,
    class_index,
    class_names,
    image_stems,
    with_classes,
    write_image_files,
)

LABELME_VERSION = "5.5.0"
IGNORED_LABELS = ("__ignore__",)  # labelme's labels.txt convention: not a class


def write(dataset: CocoDataset, folder, *, tolerance: float = 0.0, images: ImageSource | None = None) -> WriteResult:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dataset = with_classes(dataset)
    names = class_names(dataset)
    index = class_index(dataset)
    stems = image_stems(dataset.images)
    result = WriteResult([], stems)
    copied = write_image_files(dataset, folder, stems, images, result.notes)
    by_image: dict = {}
    for a in dataset.annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    for img in dataset.images:
        shapes = []  # each shape as JSON text: points are formatted in numpy, not one by one
        anns = by_image.get(img["id"], [])
        for group, (a, (_, runs)) in enumerate(
            zip(anns, polygons.each_with_runs([a["segmentation"] for a in anns]), strict=True), start=1
        ):
            name = names[index[a["category_id"]]]
            poly = polygons.polygonise(a["segmentation"], tolerance, quantize=polygons.round_ring, runs=runs)
            if not poly.rings:
                result.masks.append(Written(img["id"], a["id"], name, None, 0.0))
                continue
            head = json.dumps(
                {
                    "label": name,
                    "group_id": group,
                    "description": "",
                    "shape_type": "polygon",
                    "flags": {},
                    "mask": None,
                },
                ensure_ascii=False,
            )[:-1]
            shapes += [f'{head}, "points": {points_json(ring)}}}' for ring in poly.rings]
            result.masks.append(Written(img["id"], a["id"], name, poly.rle, poly.iou))
            result.holes += poly.holes
            result.exact_fallbacks += poly.exact_fallback
        rest = json.dumps(
            {
                "imagePath": copied.get(img["id"], img.get("file_name") or ""),
                "imageData": None,
                "imageHeight": img["height"],
                "imageWidth": img["width"],
            },
            ensure_ascii=False,
        )[1:]
        text = f'{{"version": "{LABELME_VERSION}", "flags": {{}}, "shapes": [' + ", ".join(shapes) + "], " + rest
        (folder / f"{stems[img['id']]}.json").write_text(text, encoding="utf-8")
    (folder / "labels.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    return result


def points_json(ring: np.ndarray) -> str:
    """``[[x, y], ...]`` with two decimals, as JSON text built in numpy (a million floats
    written one by one through ``json`` take seconds). Numbers are right-aligned in a fixed
    width, padded with spaces, which JSON allows."""
    n = np.rint(np.asarray(ring, np.float64) * 100).astype(np.int64).reshape(-1)
    if n.size and n.min() < 0:
        raise ValueError("labelme points are image pixels, never negative")
    whole, frac = n // 100, n % 100
    width = max(1, len(str(int(whole.max())) if n.size else "0"))
    digits = np.full((n.size, width), ord(" "), np.uint8)
    for i in range(width):  # from the right: ones, tens, ...
        place = 10**i
        shown = (whole >= place) | (i == 0)
        digits[:, width - 1 - i] = np.where(shown, 48 + (whole // place) % 10, ord(" "))
    number = np.concatenate(
        [
            digits,
            np.full((n.size, 1), ord("."), np.uint8),
            (48 + frac // 10)[:, None].astype(np.uint8),
            (48 + frac % 10)[:, None].astype(np.uint8),
        ],
        axis=1,
    ).reshape(-1, 2, width + 3)
    k = number.shape[0]
    row = np.concatenate(
        [
            np.full((k, 1), ord("["), np.uint8),
            number[:, 0],
            np.full((k, 1), ord(","), np.uint8),
            number[:, 1],
            np.full((k, 1), ord("]"), np.uint8),
            np.full((k, 1), ord(","), np.uint8),
        ],
        axis=1,
    )
    return "[" + row.tobytes()[:-1].decode("ascii") + "]"


# -- reading ------------------------------------------------------------------------------------
def is_labelme(data) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("shapes"), list) and "imagePath" in data


def files_of(path) -> list[Path]:
    """The labelme JSON files of a folder (or the file itself)."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("*.json") if p.is_file())


def read(path, *, max_bytes: int | None = None, notes: list | None = None) -> CocoDataset:  # noqa: C901, PLR0912
    """One labelme file or a folder of them. ``notes`` gets what was left out, and why."""
    path = Path(path)
    notes = [] if notes is None else notes
    root = path if path.is_dir() else path.parent
    names: list[str] = []
    labels_txt = root / "labels.txt"
    if labels_txt.is_file():
        for line in labels_txt.read_text(encoding="utf-8").splitlines():
            if line.strip() and line.strip() not in IGNORED_LABELS and line.strip() not in names:
                names.append(line.strip())
    images, per_image = [], []
    skipped: dict = {}
    files = files_of(path)
    for image_id, f in enumerate(files, start=1):
        data = _read_json(f, max_bytes, label=f.name)
        if not is_labelme(data):
            if path.is_file():
                raise CocoError(f"{f.name}: not a labelme file (no 'shapes' and 'imagePath')")
            notes.append(f"{f.name} is not a labelme file; skipped")
            continue
        try:
            h, w = int(data["imageHeight"]), int(data["imageWidth"])
        except (KeyError, TypeError, ValueError):
            raise CocoError(f"{f.name}: needs imageHeight and imageWidth") from None
        if h < 1 or w < 1:
            raise CocoError(f"{f.name}: image size must be positive, got {h}x{w}")
        images.append(
            {
                "id": image_id,
                "file_name": str(data.get("imagePath") or f.with_suffix("").name),
                "height": h,
                "width": w,
                "labelme_file": f.name,
            }
        )
        groups: dict = {}  # (label, group) -> list of RLEs, in order of first shape
        for k, shape in enumerate(data["shapes"]):
            where = f"{f.name}: shape #{k}"
            if not isinstance(shape, Mapping) or "label" not in shape:
                raise CocoError(f"{where}: needs a 'label'")
            kind = shape.get("shape_type") or "polygon"
            try:
                rle = _shape_rle(shape, kind, h, w)
            except (TypeError, ValueError) as e:
                raise CocoError(f"{where}: {e}") from None
            if rle is None:
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            label = str(shape["label"])
            if label not in names:
                names.append(label)
            gid = shape.get("group_id")
            key = (label, gid) if gid is not None else (label, ("shape", k))
            groups.setdefault(key, []).append(rle)
        per_image.append((image_id, groups))
    if not images:
        raise CocoError(f"{path}: no labelme JSON files")
    for kind, n in sorted(skipped.items()):
        notes.append(f"{n} {kind} shape{'s' * (n != 1)} left out (no area)")
    cat_id = {n: k + 1 for k, n in enumerate(names)}
    annotations = []
    for image_id, groups in per_image:
        for (label, _), rles in groups.items():
            rle = rles[0] if len(rles) == 1 else rle_utils.union(rles)
            annotations.append(annotation(len(annotations) + 1, image_id, cat_id[label], rle))
    categories = [{"id": cat_id[n], "name": n, "supercategory": ""} for n in names]
    return CocoDataset(images, annotations, categories, {"description": f"labelme files from {path.name}"})


def _points(shape, at_least: int) -> np.ndarray:
    pts = np.asarray(shape.get("points"), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < at_least:
        raise ValueError(f"needs at least {at_least} points as [x, y] pairs")
    if not np.isfinite(pts).all():
        raise ValueError("has a NaN or infinite coordinate")
    return pts


def _shape_rle(shape: Mapping, kind: str, h: int, w: int) -> dict | None:
    if kind == "polygon":
        return rle_utils.from_polygons([_points(shape, 3).reshape(-1)], h, w)
    if kind == "rectangle":
        (x0, y0), (x1, y1) = _points(shape, 2)[:2]
        ring = [x0, y0, x1, y0, x1, y1, x0, y1]
        return rle_utils.from_polygons([ring], h, w)
    if kind == "circle":
        (cx, cy), (px, py) = _points(shape, 2)[:2]
        r = float(np.hypot(px - cx, py - cy))
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return rle_utils.from_polygons([np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).reshape(-1)], h, w)
    if kind == "mask":
        return _mask_shape(shape, h, w)
    return None  # point, line, linestrip, points: no area


def _mask_shape(shape: Mapping, h: int, w: int) -> dict:
    """labelme 5.3+: a PNG of the box between the two points, base64 in ``mask``."""
    from PIL import Image

    pts = _points(shape, 2)
    try:
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))) != 0
    except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
        raise ValueError(f"mask is not a base64 PNG ({e})") from None
    if crop.ndim == 3:
        crop = crop.any(axis=2)
    x0, y0 = (int(round(v)) for v in pts[0])
    full = np.zeros((h, w), bool)
    ys, xs = slice(max(y0, 0), min(y0 + crop.shape[0], h)), slice(max(x0, 0), min(x0 + crop.shape[1], w))
    full[ys, xs] = crop[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return rle_utils.encode(full)
