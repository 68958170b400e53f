"""COCO instance annotations in and out, and PNG label masks.

Reads COCO instances JSON with compressed RLE, uncompressed RLE or polygons (as other
tools write them), COCO results lists, and SAM's own ``scripts/amg.py`` output (a JSON
list of records per image, or its ``binary_mask`` folder of PNGs + ``metadata.csv``).
Every mask is checked while reading; a bad file raises ``CocoError`` naming the annotation
(its index and id) and the problem.

Writes COCO instances JSON whose masks are RLE (default, ``counts`` as str) or polygons.
Polygons are exact: each outline is traced on the pixel edges (a contour of the mask
upsampled 2x, shifted back by a quarter pixel), so pycocotools rasterises it back to the
same pixels; holes are joined to their outer ring by a zero-width bridge (pycocotools
unions the polygons of one annotation, so a hole cannot be a polygon of its own), and
separate parts stay separate polygons. SAM metadata (predicted_iou, stability_score,
point_coords, crop_box, prompts) stays on each annotation, the model and its parameters
in ``info``.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.annotations.document import REVIEW_STATES, SOURCES, AnnotationDocument
from annotator.limits import human_bytes

SAM_FIELDS = ("predicted_iou", "stability_score", "point_coords", "crop_box", "prompts")
PROVENANCE_FIELDS = ("model", "score", "concept")
ANNOTATOR_FIELDS = ("source", "review", "visible", "z", "parents", "subtracted")
DEFAULT_CATEGORY = "object"


class CocoError(ValueError):
    """A COCO file is malformed; the message names where and what."""


@dataclass
class CocoDataset:
    """A COCO instances dataset held in memory.

    ``annotations`` are dicts whose ``segmentation`` is always a compressed RLE with
    ``bytes`` counts, with ``area`` and ``bbox`` computed from the mask; other fields
    (``score``, SAM metadata, ...) are kept as read. ``category_id`` is None for
    class-agnostic masks (SAM's automatic generator).
    """

    images: list[dict]
    annotations: list[dict]
    categories: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    licenses: list = field(default_factory=list)

    def image(self, image_id) -> dict:
        for img in self.images:
            if img["id"] == image_id:
                return img
        raise KeyError(f"no image with id {image_id!r}")

    def annotations_for(self, image_id) -> list[dict]:
        return [a for a in self.annotations if a["image_id"] == image_id]

    @property
    def category_names(self) -> dict:
        return {c["id"]: c["name"] for c in self.categories}


# -- reading --------------------------------------------------------------------------------
def _where(k: int, ann) -> str:
    if isinstance(ann, Mapping) and "id" in ann:
        return f"annotation #{k} (id {ann['id']!r})"
    return f"annotation #{k}"


def _read_json(path, max_bytes: int | None = None, label: str | None = None) -> Any:
    path = Path(path)
    label = label or str(path)  # how messages name the file
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            # checked before reading: parsing JSON takes several times its size in memory
            raise CocoError(
                f"{label}: the file is {human_bytes(path.stat().st_size)}; imported JSON "
                f"may be at most {human_bytes(max_bytes)}"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CocoError(f"{label}: no such file") from None
    except UnicodeDecodeError as e:
        raise CocoError(f"{label}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CocoError(f"{label}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def load(
    source, *, images: Sequence[Mapping] | None = None, name: str | None = None, max_bytes: int | None = None
) -> CocoDataset:
    """Read annotations from a path (or already-parsed JSON): COCO instances, a COCO results
    list (needs ``images``: the ground truth's image records), SAM's amg.py JSON, or an amg.py
    ``binary_mask`` folder. A JSON file larger than ``max_bytes`` is refused unread.
    ``name`` is how messages name the file (default: the path)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return load_amg_folder(path)
        data = _read_json(path, max_bytes, label=name)
        name = name or path.name
    else:
        data, name = source, name or "annotations"
    try:
        if isinstance(data, Mapping):
            if "annotations" not in data:
                raise CocoError("a COCO file needs an 'annotations' list")
            return _load_instances(data)
        if isinstance(data, list):
            if data and all(isinstance(a, Mapping) and "image_id" in a for a in data):
                if images is None:
                    raise CocoError(
                        "this is a COCO results list (annotations only); it needs the ground truth's images to be read"
                    )
                return _load_instances({"images": list(images), "annotations": data}, results=True)
            return load_amg(data, file_name=_amg_image_name(name))
        raise CocoError(f"expected a JSON object or list, got {type(data).__name__}")
    except CocoError as e:
        raise CocoError(f"{name}: {e}") from None


def _amg_image_name(name: str | None) -> str:
    # amg.py writes <image name without extension>.json per image
    return Path(name).stem if name else "image"


def _check_images(raw) -> list[dict]:
    if not isinstance(raw, list):
        raise CocoError("'images' must be a list")
    images, seen = [], set()
    for k, img in enumerate(raw):
        where = f"image #{k}" + (f" (id {img['id']!r})" if isinstance(img, Mapping) and "id" in img else "")
        if not isinstance(img, Mapping):
            raise CocoError(f"{where} is not an object")
        for f in ("id", "height", "width"):
            if f not in img:
                raise CocoError(f"{where}: missing field '{f}'")
        try:
            h, w = int(img["height"]), int(img["width"])
        except (TypeError, ValueError):
            raise CocoError(f"{where}: height and width must be integers") from None
        if h < 1 or w < 1 or h != img["height"] or w != img["width"]:
            raise CocoError(
                f"{where}: height and width must be positive integers, got {img['height']!r} x {img['width']!r}"
            )
        if img["id"] in seen:
            raise CocoError(f"{where}: image id {img['id']!r} appears twice")
        seen.add(img["id"])
        images.append({**img, "height": h, "width": w})
    return images


def _check_categories(raw) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise CocoError("'categories' must be a list")
    out, seen = [], set()
    for k, cat in enumerate(raw):
        if not isinstance(cat, Mapping) or "id" not in cat or "name" not in cat:
            raise CocoError(f"category #{k}: needs 'id' and 'name'")
        if cat["id"] in seen:
            raise CocoError(f"category #{k}: id {cat['id']!r} appears twice")
        seen.add(cat["id"])
        out.append(dict(cat))
    return out


def segmentation_to_rle(seg, height: int, width: int) -> dict:
    """A COCO ``segmentation`` (RLE of either kind, or polygons) as a validated compressed RLE."""
    if isinstance(seg, Mapping):
        try:
            return rle_utils.normalize(seg, (height, width))
        except rle_utils.RleError as e:
            raise CocoError(f"bad RLE: {e}") from None
    if isinstance(seg, list):
        if not seg:
            raise CocoError("segmentation is an empty list")
        polys = [seg] if all(isinstance(v, (int, float)) for v in seg) else seg
        clean = []
        for j, poly in enumerate(polys):
            if not isinstance(poly, list) or not {type(v) for v in poly} <= {int, float}:
                raise CocoError(f"polygon {j} is not a list of numbers")
            if len(poly) % 2:
                raise CocoError(f"polygon {j} has an odd number of coordinates ({len(poly)})")
            if len(poly) < 6:
                raise CocoError(f"polygon {j} has {len(poly) // 2} points; a polygon needs at least 3")
            values = np.asarray(poly, dtype=np.float64)
            if not np.isfinite(values).all():
                raise CocoError(f"polygon {j} has a NaN or infinite coordinate")
            clean.append(values)
        return rle_utils.from_polygons(clean, height, width)
    raise CocoError(f"segmentation must be an RLE object or a list of polygons, got {type(seg).__name__}")


def _check_bbox(bbox) -> None:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise CocoError(f"bbox must be [x, y, width, height], got {bbox!r}")
    try:
        vals = [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise CocoError(f"bbox must be four numbers, got {bbox!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise CocoError(f"bbox has a NaN or infinite value: {bbox!r}")
    if min(vals) < 0:
        raise CocoError(f"bbox has a negative value: {bbox!r}")


def _load_instances(data: Mapping, results: bool = False) -> CocoDataset:
    images = _check_images(data.get("images", []))
    categories = _check_categories(data.get("categories"))
    sizes = {img["id"]: (img["height"], img["width"]) for img in images}
    cat_ids = {c["id"] for c in categories}
    raw = data["annotations"]
    if not isinstance(raw, list):
        raise CocoError("'annotations' must be a list")
    annotations, seen = [], set()
    for k, ann in enumerate(raw):
        where = _where(k, ann)
        if not isinstance(ann, Mapping):
            raise CocoError(f"{where} is not an object")
        missing = [f for f in ("image_id", "segmentation") + (() if results else ("id",)) if f not in ann]
        if missing:
            raise CocoError(f"{where}: missing field '{missing[0]}'")
        out = dict(ann)
        if results:
            out.setdefault("id", k + 1)
        if out["id"] in seen:
            raise CocoError(f"{where}: annotation id {out['id']!r} appears twice")
        seen.add(out["id"])
        if ann["image_id"] not in sizes:
            raise CocoError(f"{where}: unknown image_id {ann['image_id']!r}")
        if "category_id" in ann and ann["category_id"] is not None:
            if categories and ann["category_id"] not in cat_ids:
                raise CocoError(f"{where}: unknown category_id {ann['category_id']!r}")
        elif categories and not results:
            raise CocoError(f"{where}: missing field 'category_id'")
        out.setdefault("category_id", None)
        h, w = sizes[ann["image_id"]]
        try:
            if "bbox" in ann and ann["bbox"] is not None:
                _check_bbox(ann["bbox"])
            if "area" in ann and not (
                isinstance(ann["area"], (int, float)) and math.isfinite(ann["area"]) and ann["area"] >= 0
            ):
                raise CocoError(f"area must be a non-negative number, got {ann['area']!r}")
            rle = segmentation_to_rle(ann["segmentation"], h, w)
        except CocoError as e:
            raise CocoError(f"{where}: {e}") from None
        out["segmentation"] = rle
        out["area"] = int(rle_utils.areas([rle])[0])
        out["bbox"] = [float(v) for v in rle_utils.bboxes([rle])[0]]
        out["iscrowd"] = int(ann.get("iscrowd", 0) or 0)
        annotations.append(out)
    info = dict(data.get("info") or {})
    return CocoDataset(images, annotations, categories, info, list(data.get("licenses") or []))


def load_amg(records, *, file_name: str = "image", image_id: int = 1) -> CocoDataset:
    """SAM's automatic mask generator output for one image (``amg.py --output-mode
    coco_rle``, or ``SamAutomaticMaskGenerator(output_mode="coco_rle").generate``)."""
    if not isinstance(records, list):
        raise CocoError("SAM amg output is a JSON list of mask records")
    size = None
    annotations = []
    for k, rec in enumerate(records):
        where = f"mask record #{k}"
        if not isinstance(rec, Mapping):
            raise CocoError(f"{where} is not an object")
        if "segmentation" not in rec:
            raise CocoError(f"{where}: missing field 'segmentation'")
        seg = rec["segmentation"]
        if isinstance(seg, Mapping) and "size" in seg:
            try:
                this = tuple(int(v) for v in seg["size"])
            except (TypeError, ValueError):
                raise CocoError(f"{where}: bad RLE size {seg['size']!r}") from None
        else:
            raise CocoError(f"{where}: segmentation must be an RLE (amg.py --output-mode coco_rle)")
        if size is None:
            size = this
        elif this != size:
            raise CocoError(f"{where}: mask is {this[0]}x{this[1]} but earlier masks are {size[0]}x{size[1]}")
        try:
            if "bbox" in rec:
                _check_bbox(rec["bbox"])
            rle = segmentation_to_rle(seg, *size)
        except CocoError as e:
            raise CocoError(f"{where}: {e}") from None
        ann = {k2: v for k2, v in rec.items() if k2 not in ("segmentation", "area", "bbox")}
        ann.update(
            id=k + 1,
            image_id=image_id,
            category_id=None,
            segmentation=rle,
            area=int(rle_utils.areas([rle])[0]),
            bbox=[float(v) for v in rle_utils.bboxes([rle])[0]],
            iscrowd=0,
        )
        ann.setdefault("source", "auto")
        annotations.append(ann)
    if size is None:
        raise CocoError("SAM amg output has no masks, so the image size is unknown")
    images = [{"id": image_id, "file_name": file_name, "height": size[0], "width": size[1]}]
    return CocoDataset(images, annotations, [], {"description": "SAM automatic mask generator output"})


def load_amg_folder(folder) -> CocoDataset:
    """amg.py ``--output-mode binary_mask`` output: ``<i>.png`` masks and ``metadata.csv``."""
    folder = Path(folder)
    meta_path = folder / "metadata.csv"
    if not meta_path.is_file():
        raise CocoError(f"{folder}: no metadata.csv (not an amg.py binary_mask folder)")
    with meta_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    records = []
    for k, row in enumerate(rows):
        where = f"{folder.name}: mask record #{k}"
        try:
            i = int(row["id"])
            png = cv2.imread(str(folder / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
            if png is None:
                raise CocoError(f"{where}: cannot read {i}.png")
            records.append(
                {
                    "segmentation": rle_utils.to_json(rle_utils.encode(png > 127)),
                    "predicted_iou": float(row["predicted_iou"]),
                    "stability_score": float(row["stability_score"]),
                    "point_coords": [[float(row["point_input_x"]), float(row["point_input_y"])]],
                    "crop_box": [float(row[c]) for c in ("crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h")],
                }
            )
        except (KeyError, ValueError) as e:
            raise CocoError(f"{where}: bad metadata.csv row ({e})") from None
    try:
        return load_amg(records, file_name=folder.name)
    except CocoError as e:
        raise CocoError(f"{folder.name}: {e}") from None


# -- polygons -------------------------------------------------------------------------------
def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """Polygons (flat x, y lists) that pycocotools rasterises back to ``mask``.

    One polygon per connected part (8-connected), holes bridged into their part's ring.
    ``tolerance`` > 0 simplifies outlines (cv2.approxPolyDP, in pixels) at some accuracy.
    """
    from annotator.formats import polygons

    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if ys.size == 0:
        return []
    crop = mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    parts = polygons.trace_crop(crop, int(xs[0]), int(ys[0]), tolerance)
    return [polygons.flat(r) for r in polygons.part_rings(parts) if len(r) >= 3]


# -- writing --------------------------------------------------------------------------------
def json_value(v):
    """``json.dump``'s ``default``: numpy scalars and arrays, RLE bytes, tuples."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, bytes):
        return v.decode("ascii")
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"cannot write a {type(v).__name__} to JSON")


def to_json(
    dataset: CocoDataset, segmentation: str = "rle", *, tolerance: float = 0.0, results: list | None = None
) -> dict:
    """The dataset as a COCO instances dict ready for ``json.dump``.

    ``segmentation``: ``rle`` (compressed, counts as str) or ``polygon`` (crowd annotations
    and empty masks stay RLE: COCO requires it of crowds, and a polygon needs 3 points).
    Every annotation gets a category: class-agnostic masks go to a category named ``object``.
    With polygons, ``results`` (a list) gets each annotation's ``formats.polygons.Polygons``
    (None where RLE was written): the mask a reader gets back and its IoU.
    """
    from annotator.formats import polygons

    if segmentation not in ("rle", "polygon"):
        raise ValueError(f"segmentation must be 'rle' or 'polygon', got {segmentation!r}")
    categories = [dict(c) for c in dataset.categories]
    annotations = []
    default_id = None
    runs_of = (
        polygons.each_with_runs([a["segmentation"] for a in dataset.annotations]) if segmentation == "polygon" else None
    )
    for ann in dataset.annotations:
        runs = next(runs_of)[1] if runs_of is not None else None
        out = dict(ann)
        if out.get("category_id") is None:
            if default_id is None:
                existing = {c["name"]: c["id"] for c in categories}
                default_id = existing.get(DEFAULT_CATEGORY)
                if default_id is None:
                    default_id = max((c["id"] for c in categories if isinstance(c["id"], int)), default=0) + 1
                    categories.append({"id": default_id, "name": DEFAULT_CATEGORY, "supercategory": ""})
            out["category_id"] = default_id
        rle = out["segmentation"]
        poly = None
        if segmentation == "polygon" and not out.get("iscrowd"):
            # traced from the mask's box only: never the whole image per mask
            poly = polygons.polygonise(rle, tolerance, quantize=polygons.round_ring, runs=runs)
        if poly is not None and poly.rings:
            out["segmentation"] = [polygons.flat(r) for r in poly.rings]
        else:
            out["segmentation"] = rle_utils.to_json(rle)
            poly = None
        if results is not None:
            results.append(poly)
        annotations.append(out)
    info = dict(dataset.info)
    info.setdefault("date_created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return {
        "info": info,
        "licenses": list(dataset.licenses),
        "images": [dict(i) for i in dataset.images],
        "annotations": annotations,
        "categories": categories,
    }


def save(
    dataset: CocoDataset, path, segmentation: str = "rle", *, tolerance: float = 0.0, results: list | None = None
) -> Path:
    """Write the dataset as COCO instances JSON (atomically: a crash leaves the old file);
    ``results`` as for ``to_json``."""
    path = Path(path)
    data = to_json(dataset, segmentation, tolerance=tolerance, results=results)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(data, default=json_value)  # one shot: the C encoder (json.dump is pure Python)
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


# -- documents ------------------------------------------------------------------------------
def from_documents(
    items: Iterable[tuple[AnnotationDocument, Mapping]],
    *,
    categories: Sequence[Mapping] | None = None,
    model: str | None = None,
    parameters: Mapping | None = None,
    include_rejected: bool = False,
    description: str = "annotator export",
) -> CocoDataset:
    """A dataset from ``(document, image record)`` pairs (the record needs ``id`` and
    ``file_name``; height and width come from the document).

    Labels become categories (``categories`` fixes their ids; new labels are appended);
    unlabeled masks go to ``object``. Rejected masks are left out unless ``include_rejected``.
    """
    cats = [dict(c) for c in (categories or [])]
    by_name = {c["name"]: c["id"] for c in cats}

    def category(label):
        name = DEFAULT_CATEGORY if label is None else label
        if name not in by_name:
            by_name[name] = max((c["id"] for c in cats), default=0) + 1
            cats.append({"id": by_name[name], "name": name, "supercategory": ""})
        return by_name[name]

    images, annotations = [], []
    next_id = 1
    for doc, image in items:
        img = dict(image)
        if "id" not in img:
            raise ValueError("each image record needs an 'id'")
        img.setdefault("file_name", f"{img['id']}.jpg")
        img["height"], img["width"] = doc.size
        images.append(img)
        for z, a in enumerate(doc.annotations):
            if a.review == "rejected" and not include_rejected:
                continue
            ann = {
                "id": next_id,
                "image_id": img["id"],
                "category_id": category(a.label),
                "segmentation": a.rle,
                "area": a.area,
                "bbox": list(a.bbox),
                "iscrowd": 0,
            }
            for f in SAM_FIELDS:
                if getattr(a, f) is not None:
                    ann[f] = getattr(a, f)
            if isinstance(a.meta, Mapping):  # which model made it; SAM 3's score and concept
                ann.update({k: a.meta[k] for k in PROVENANCE_FIELDS if k in a.meta})
            ann.update(
                source=a.source,
                review=a.review,
                visible=a.visible,
                z=z,
                parents=list(a.parents),
                subtracted=list(a.subtracted),
                annotator_id=a.id,
            )
            annotations.append(ann)
            next_id += 1
    info = {
        "description": description,
        "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if model is not None:
        info["model"] = model
    if parameters is not None:
        info["parameters"] = dict(parameters)
    return CocoDataset(images, annotations, cats, info)


def to_document(dataset: CocoDataset, image_id, **kwargs) -> AnnotationDocument:
    """The annotations of one image as a document (labels from category names, SAM metadata
    and review state kept, z-order from ``z`` when present, otherwise file order)."""
    img = dataset.image(image_id)
    doc = AnnotationDocument(img["height"], img["width"], image_id=image_id, **kwargs)
    names = dataset.category_names
    anns = dataset.annotations_for(image_id)
    anns = sorted(anns, key=lambda a: a.get("z", 0)) if all("z" in a for a in anns) else anns
    known = (
        set(SAM_FIELDS)
        | set(ANNOTATOR_FIELDS)
        | {"id", "image_id", "category_id", "segmentation", "area", "bbox", "annotator_id"}
    )
    items = []
    for a in anns:
        item = {
            "segmentation": a["segmentation"],
            "label": names.get(a.get("category_id")) if a.get("category_id") is not None else None,
        }
        for f in SAM_FIELDS:
            if a.get(f) is not None:
                item[f] = a[f]
        if a.get("source") in SOURCES:
            item["source"] = a["source"]
        if a.get("review") in REVIEW_STATES:
            item["review"] = a["review"]
        if "visible" in a:
            item["visible"] = bool(a["visible"])
        extra = {k: v for k, v in a.items() if k not in known}
        item["meta"] = {"coco_id": a["id"], **extra}
        items.append(item)
    if items:
        doc.add_many(items, source="import", action=f"import {len(items)} masks")
    return doc
