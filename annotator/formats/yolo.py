"""Ultralytics YOLO segmentation: ``data.yaml``, ``images/``, ``labels/<stem>.txt``.

Each line of a label file is one object: its class index, then the x, y of one polygon as
fractions of the image width and height. Ultralytics has no second ring per object, so a mask
with holes or several parts is written as one ring with zero-width bridges (Ultralytics' own
COCO converter joins parts the same way); its rasteriser (``cv2.fillPoly``) and ours (COCO's)
fill by the even-odd rule, so the holes stay holes. ``data.yaml`` lists the class names in
the project's class order (index = position).

Reading takes any Ultralytics segmentation dataset: ``data.yaml`` (parsed with PyYAML, since
files written by hand or by other tools use every YAML style), its ``train``/``val``/``test``
folders or image lists, and the label file of each image (``/images/`` -> ``/labels/``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.formats import polygons
from annotator.formats.coco import CocoDataset, CocoError
from annotator.formats.dataset import (
    ImageSource,
    WriteResult,
    Written,
    annotation,
    class_index,
    class_names,
    image_stems,
    is_image,
    oriented_size,
    with_classes,
    write_image_files,
)

SPLITS = ("train", "val", "test")


def decimals_for(width: int, height: int) -> int:
    """Decimals of the normalised coordinates: enough that rounding moves a vertex by under
    0.005 pixels, far below what changes which pixel centres a polygon covers."""
    return max(6, math.ceil(math.log10(max(width, height, 1))) + 3)


def write(dataset: CocoDataset, folder, *, tolerance: float = 0.0, images: ImageSource | None = None) -> WriteResult:
    folder = Path(folder)
    dataset = with_classes(dataset)
    names = class_names(dataset)
    index = class_index(dataset)
    stems = image_stems(dataset.images)
    result = WriteResult([], stems)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    write_image_files(dataset, folder / "images", stems, images, result.notes)
    by_image: dict = {}
    for a in dataset.annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    for img in dataset.images:
        h, w = img["height"], img["width"]
        d = decimals_for(w, h)
        scale = np.array([w, h], np.float64)

        last_text: list = []

        def quantize(ring, d=d, scale=scale, last_text=last_text):
            # the ring as a reader gets it back: the decimals written, parsed as the reader does
            text, values = format_fractions((ring / scale).reshape(-1), d)
            last_text[:] = [text]  # single=True: the last ring quantised is the one written
            return values.reshape(-1, 2) * scale

        lines = []
        anns = by_image.get(img["id"], [])
        for a, (_, runs) in zip(anns, polygons.each_with_runs([a["segmentation"] for a in anns]), strict=True):
            name = names[index[a["category_id"]]]
            poly = polygons.polygonise(a["segmentation"], tolerance, single=True, quantize=quantize, runs=runs)
            if not poly.rings:
                result.masks.append(Written(img["id"], a["id"], name, None, 0.0))
                continue
            lines.append(f"{index[a['category_id']]} {last_text[0]}")
            result.masks.append(Written(img["id"], a["id"], name, poly.rle, poly.iou))
            result.holes += poly.holes
            result.exact_fallbacks += poly.exact_fallback
        (folder / "labels" / f"{stems[img['id']]}.txt").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8"
        )
    _write_yaml(folder / "data.yaml", names)
    return result


def format_fractions(values: np.ndarray, decimals: int) -> tuple[str, np.ndarray]:
    """Numbers in [0, 1] as ``0.123456 1.000000 ...`` text, written digit by digit in numpy
    (formatting a million floats one by one takes a second), and the values a reader parses
    back from that text (``N / 10**decimals``: as exact as parsing the decimal)."""
    scale = 10**decimals
    n = np.rint(np.clip(values, 0.0, 1.0) * scale).astype(np.int64)
    chars = np.empty((n.size, decimals + 3), np.uint8)
    chars[:, 0] = 48 + n // scale
    chars[:, 1] = ord(".")
    frac = n % scale
    for i in range(decimals):
        chars[:, 2 + i] = 48 + (frac // 10 ** (decimals - 1 - i)) % 10
    chars[:, -1] = ord(" ")
    text = chars.tobytes()[:-1].decode("ascii")
    return text, n / scale


def parse_numbers(text: str) -> np.ndarray:
    """Whitespace-separated decimals as float64 (C's strtod: correctly rounded, and the same
    parse for the writer's check and the reader)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.fromstring(text, dtype=np.float64, sep=" ")
    return values


def _write_yaml(path: Path, names: list[str]) -> None:
    import yaml

    text = "# Ultralytics YOLO segmentation dataset written by annotator; paths are relative to this file\n"
    text += yaml.safe_dump(
        {"train": "images", "val": "images", "nc": len(names), "names": dict(enumerate(names))},
        sort_keys=False,
        allow_unicode=True,
    )
    path.write_text(text, encoding="utf-8")


# -- reading ------------------------------------------------------------------------------------
def find_yaml(path) -> Path | None:
    """The dataset YAML of a folder (``data.yaml``, else the one YAML with ``names``)."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    if not path.is_dir():
        return None
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return path / name
    found = [p for p in sorted(path.glob("*.y*ml")) if _names_of(_load_yaml(p), p, quiet=True)]
    return found[0] if len(found) == 1 else None


def _load_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CocoError(f"{path.name}: not a YAML file that can be read ({e})") from None


def _names_of(data, path: Path, quiet: bool = False) -> list[str] | None:
    names = data.get("names") if isinstance(data, Mapping) else None
    if isinstance(names, Mapping):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            keys = None
        if keys != list(range(len(names))):
            if quiet:
                return None
            raise CocoError(f"{path.name}: 'names' must be numbered 0, 1, 2, ... without gaps")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list):
        return [str(n) for n in names]
    if quiet:
        return None
    raise CocoError(f"{path.name}: no class 'names' (a list, or a mapping from index to name)")


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, the
    extension ``.txt``."""
    s = str(image)
    a, b = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if a in s:
        head, tail = s.rsplit(a, 1)
        s = head + b + tail
    return Path(s).with_suffix(".txt")


def _split_images(root: Path, entry) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    out = []
    for e in entries:
        if e is None:
            continue
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += [q for q in sorted(p.rglob("*")) if q.is_file() and is_image(q)]
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    out.append(q if q.is_absolute() else (p.parent / q))
    return out


def read(path, *, sizes: Mapping | None = None) -> CocoDataset:  # noqa: C901, PLR0912
    """A YOLO segmentation dataset (its folder or its YAML). ``sizes`` (stem -> (h, w)) stands
    in for image files that are not there: YOLO coordinates are fractions of the image size."""
    yaml_path = find_yaml(path)
    if yaml_path is None:
        raise CocoError(f"{path}: no data.yaml (a YOLO dataset names its classes there)")
    data = _load_yaml(yaml_path)
    names = _names_of(data, yaml_path)
    root = yaml_path.parent
    if isinstance(data.get("path"), str) and data["path"]:
        p = Path(data["path"])
        p = p if p.is_absolute() else root / p
        root = p if p.is_dir() else root
    image_paths, label_dirs = [], []
    for split in SPLITS:
        entry = data.get(split)
        image_paths += _split_images(root, entry)
        for e in entry if isinstance(entry, list) else [entry]:
            if isinstance(e, str) and not e.endswith(".txt"):
                label_dirs.append(label_path(root / e / "x.jpg").parent)
    pairs = {}  # label file -> image path (None: not there)
    for img in dict.fromkeys(image_paths):
        pairs.setdefault(label_path(img), img)
    for d in dict.fromkeys(label_dirs):  # labels whose image is missing
        if d.is_dir():
            for lab in sorted(d.rglob("*.txt")):
                pairs.setdefault(lab, None)
    if not pairs:
        raise CocoError(f"{yaml_path.name}: no images or label files found under {root}")
    categories = [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(names)]
    images, annotations = [], []
    for image_id, (lab, img) in enumerate(sorted(pairs.items(), key=lambda kv: str(kv[0])), start=1):
        stem = lab.stem
        if img is not None and img.is_file():
            h, w = oriented_size(img)
            file_name = os.path.relpath(img, root)
        elif sizes is not None and stem in sizes:
            h, w = sizes[stem]
            file_name = stem
        else:
            raise CocoError(
                f"{os.path.relpath(lab, root)}: its image is missing; YOLO coordinates "
                f"are fractions of the image size, so the image is needed"
            )
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        if lab.is_file():
            for _, rle, cls in _read_labels(lab, h, w, len(names), root):
                annotations.append(annotation(len(annotations) + 1, image_id, cls + 1, rle))
    return CocoDataset(images, annotations, categories, {"description": f"YOLO segmentation dataset {yaml_path.name}"})


def _read_labels(path: Path, h: int, w: int, n_classes: int, root: Path):
    where = os.path.relpath(path, root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CocoError(f"{where}: cannot be read ({e})") from None
    scale = np.array([w, h], np.float64)
    for k, line in enumerate(text.splitlines(), start=1):
        head, _, rest = line.strip().partition(" ")
        if not head:
            continue
        try:
            cls_value = float(head)
        except ValueError:
            raise CocoError(f"{where} line {k}: not numbers") from None
        values = parse_numbers(rest)
        if values.size != len(rest.split()):
            raise CocoError(f"{where} line {k}: not numbers")
        tokens = [head]
        cls = int(cls_value)
        if cls != cls_value or not 0 <= cls < n_classes:
            raise CocoError(f"{where} line {k}: class {tokens[0]} is not one of the {n_classes} classes in data.yaml")
        if values.size == 4:
            raise CocoError(f"{where} line {k}: a box (YOLO detection label), not a segmentation polygon")
        if values.size < 6 or values.size % 2:
            raise CocoError(
                f"{where} line {k}: a polygon needs x y pairs of at least 3 points, got {values.size} numbers"
            )
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise CocoError(f"{where} line {k}: coordinates must be fractions of the image size (0 to 1)")
        ring = values.reshape(-1, 2) * scale
        yield k, rle_utils.from_polygons([ring.reshape(-1)], h, w), cls
