"""Any format we read in, any format we write out, and proof that the file holds the masks.

``load(path)`` finds out what a path holds (COCO, SAM amg.py output, labelme, YOLO, VOC) and
reads it. ``export(dataset, out, fmt)`` writes one of ``FORMATS`` into a temporary place next to
``out``, reads it back with the same code that imports that format, and compares every image,
class and mask with what was meant to be written; only then does the file (or folder, or zip)
take its name. A failed check raises ``ExportCheckError`` and leaves nothing behind. The
returned ``ExportReport`` says what the export cost, per mask (IoU against the mask) and in one
line: ``312 masks on 3 images · YOLO min IoU 0.981 (tolerance 1 px)``.

Everything here works on ``CocoDataset`` (masks as compressed RLE); a mask is decoded only
inside its bounding box, one at a time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.formats import coco, labelme, voc, yolo
from annotator.formats.coco import CocoDataset, CocoError
from annotator.formats.dataset import ImageSource, WriteResult, Written, folder_images, image_stems, with_classes

FORMATS = {"coco-rle": "COCO RLE", "coco-polygon": "COCO polygons", "yolo": "YOLO", "labelme": "labelme", "voc": "VOC"}
POLYGON_FORMATS = ("coco-polygon", "yolo", "labelme")
FOLDER_FORMATS = ("yolo", "labelme", "voc")
INPUT_FORMATS = ("coco", "sam-amg", "labelme", "yolo", "voc")


class ExportCheckError(RuntimeError):
    """An export read back differs from the masks it was written from; nothing was kept."""


@dataclasses.dataclass
class Imported:
    """A dataset read from ``path``, what format it was, what was left out reading it, and
    the folder its image files are looked up in."""

    dataset: CocoDataset
    format: str
    notes: list
    root: Path


# -- reading ------------------------------------------------------------------------------------
def detect(path) -> str:
    """Which of ``INPUT_FORMATS`` a file or folder holds; ``CocoError`` says what was looked for
    when it is none of them."""
    path = Path(path)
    if path.is_dir():
        if (path / "metadata.csv").is_file():
            return "sam-amg"
        if voc.is_voc(path):
            return "voc"
        if yolo.find_yaml(path) is not None:
            return "yolo"
        if any(_peek_is_labelme(p) for p in labelme.files_of(path)[:20]):
            return "labelme"
        raise CocoError(
            f"{path}: a folder, but not one we read: looked for data.yaml (YOLO), "
            f"SegmentationObject/ (VOC), labelme JSON files, metadata.csv (SAM amg.py)"
        )
    if not path.exists():
        raise CocoError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    if _peek_is_labelme(path):
        return "labelme"
    return "coco"  # coco.load tells COCO, results lists and amg.py JSON apart, with its errors


def _peek_is_labelme(path: Path) -> bool:
    """A cheap look at the start of a JSON file for labelme's keys."""
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return (
        head.lstrip().startswith(b"{") and b'"shapes"' in head and (b'"imagePath"' in head or b'"imageHeight"' in head)
    )


def load(path, *, max_bytes: int | None = None) -> Imported:
    """Read annotations in any format we read (see ``detect``)."""
    path = Path(path)
    fmt = detect(path)
    notes: list = []
    root = path if path.is_dir() else path.parent
    if fmt == "labelme":
        dataset = labelme.read(path, max_bytes=max_bytes, notes=notes)
    elif fmt == "yolo":
        dataset = yolo.read(path)
        root = Path(yolo.find_yaml(path)).parent
    elif fmt == "voc":
        dataset = voc.read(path, notes=notes)
    else:
        dataset = coco.load(path, max_bytes=max_bytes)
        if not dataset.categories and all(a.get("category_id") is None for a in dataset.annotations):
            fmt = "sam-amg"
    return Imported(dataset, fmt, notes, root)


# -- the report ---------------------------------------------------------------------------------
@dataclasses.dataclass
class ExportReport:
    """What an export wrote and what it cost."""

    format: str
    path: Path
    n_images: int
    masks: list  # Written, one per mask of the dataset, in dataset order per image
    tolerance: float = 0.0
    notes: list = dataclasses.field(default_factory=list)
    exact_fallbacks: int = 0

    @property
    def ious(self) -> np.ndarray:
        """Per written mask: IoU of what the file gives back against the mask."""
        return np.array([m.iou for m in self.masks if m.expected is not None], np.float64)

    @property
    def min_iou(self) -> float:
        ious = self.ious
        return float(ious.min()) if ious.size else 1.0

    @property
    def exact(self) -> bool:
        return bool(np.all(self.ious == 1.0)) and not self.left_out

    @property
    def left_out(self) -> int:
        return sum(m.expected is None for m in self.masks)

    def worst(self, k: int = 5) -> list[tuple]:
        """The ``k`` masks the format changed most: (image id, annotation id, IoU)."""
        rows = sorted((m.iou, m.image_id, m.ann_id) for m in self.masks if m.expected is not None)
        return [(i, a, iou) for iou, i, a in rows[:k] if iou < 1.0]

    def summary(self) -> str:
        """``YOLO exact`` or ``YOLO min IoU 0.981 (tolerance 1 px)``, and what was left out."""
        label = FORMATS[self.format]
        if self.exact:
            text = f"{label} exact"
        else:
            floor = math.floor(self.min_iou * 1000) / 1000  # never round 0.9996 up to "1.000"
            text = f"{label} min IoU {floor:.3f}"
            if self.tolerance:
                text += f" (tolerance {self.tolerance:g} px)"
        extra = list(self.notes)
        if self.exact_fallbacks:
            n = self.exact_fallbacks
            extra.append(f"{n} mask{'s' * (n != 1)} too small for the tolerance, written exactly")
        return ", ".join([text] + extra)

    def line(self) -> str:
        n = len(self.masks)
        return f"{n} mask{'s' * (n != 1)} on {self.n_images} image{'s' * (self.n_images != 1)} · {self.summary()}"


def report_line(reports: Sequence[ExportReport]) -> str:
    """One line for several exports of the same masks: ``312 masks · COCO RLE exact · YOLO ...``."""
    if not reports:
        return "nothing exported"
    n = len(reports[0].masks)
    return " · ".join([f"{n} mask{'s' * (n != 1)}"] + [r.summary() for r in reports])


# -- writing ------------------------------------------------------------------------------------
def export(
    dataset: CocoDataset, out, fmt: str, *, tolerance: float = 0.0, images: ImageSource | None = None
) -> ExportReport:
    """Write ``dataset`` as ``fmt`` to ``out`` (COCO: a JSON file; the others: a folder, or a
    zip when ``out`` ends in ``.zip``), check it by reading it back, then put it in place.

    ``tolerance`` (pixels) simplifies polygon outlines (0: exact). ``images`` finds each image's
    file to copy into folder formats (YOLO needs the images: its coordinates are fractions).
    An existing file is replaced; an existing folder must be empty (nothing of yours is
    overwritten). Raises ``ExportCheckError`` if the read-back differs, ``CocoError`` for data
    the format cannot hold, ``ValueError`` for bad arguments.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"polygon tolerance must be a number of pixels, got {tolerance!r}") from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"polygon tolerance must be 0 or more pixels, got {tolerance!r}")
    out = Path(out)
    zipped = out.suffix.lower() == ".zip"
    if fmt in FOLDER_FORMATS and not zipped and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new folder (nothing was written)")
    if fmt not in FOLDER_FORMATS and out.is_dir():
        raise ValueError(f"{out} is a folder; COCO is one JSON file: give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset = with_classes(dataset)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        target = work / ("annotations.json" if fmt not in FOLDER_FORMATS else "export")
        written = _write(dataset, target, fmt, tolerance, images)
        back = _read_back(target, fmt, dataset)
        check(dataset, written, back, fmt, tolerance)
        if zipped:
            _zip(target, work / "export.zip")
            os.replace(work / "export.zip", out)
        elif fmt in FOLDER_FORMATS:
            if out.is_dir():
                out.rmdir()  # empty, checked above
            os.replace(target, out)
        else:
            os.replace(target, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportReport(fmt, out, len(dataset.images), written.masks, tolerance, written.notes, written.exact_fallbacks)


def _write(dataset: CocoDataset, target: Path, fmt: str, tolerance: float, images: ImageSource | None) -> WriteResult:
    if fmt == "yolo":
        return yolo.write(dataset, target, tolerance=tolerance, images=images)
    if fmt == "labelme":
        return labelme.write(dataset, target, tolerance=tolerance, images=images)
    if fmt == "voc":
        return voc.write(dataset, target, images=images)
    names = {c["id"]: str(c["name"]) for c in dataset.categories}
    if fmt == "coco-rle":
        coco.save(dataset, target, "rle")
        masks = [
            Written(a["image_id"], a["id"], names[a["category_id"]], a["segmentation"], 1.0)
            for a in dataset.annotations
        ]
        return WriteResult(masks, {i["id"]: i["id"] for i in dataset.images})
    results: list = []
    coco.save(dataset, target, "polygon", tolerance=tolerance, results=results)
    masks, fallbacks = [], 0
    for a, poly in zip(dataset.annotations, results, strict=True):
        if poly is None:  # written as RLE (crowd, or empty)
            masks.append(Written(a["image_id"], a["id"], names[a["category_id"]], a["segmentation"], 1.0))
        else:
            masks.append(Written(a["image_id"], a["id"], names[a["category_id"]], poly.rle, poly.iou))
            fallbacks += poly.exact_fallback
    return WriteResult(masks, {i["id"]: i["id"] for i in dataset.images}, exact_fallbacks=fallbacks)


def _read_back(target: Path, fmt: str, dataset: CocoDataset) -> CocoDataset:
    if fmt == "yolo":
        stems = image_stems(dataset.images)
        return yolo.read(target, sizes={stems[i["id"]]: (i["height"], i["width"]) for i in dataset.images})
    if fmt == "labelme":
        return labelme.read(target)
    if fmt == "voc":
        return voc.read(target)
    return coco.load(target)


def _stem_of(img: Mapping) -> str:
    return Path(str(img.get("labelme_file") or img["file_name"])).stem


def check(  # noqa: C901, PLR0912  (one comparison per thing an export can lose)
    dataset: CocoDataset,
    written: WriteResult,
    back: CocoDataset,
    fmt: str,
    tolerance: float,
) -> None:
    """Compare what was read back with what was written; ``ExportCheckError`` on any difference."""
    label = FORMATS[fmt]

    def fail(msg: str):
        raise ExportCheckError(f"{label} export failed its read-back check: {msg}; nothing was written")

    if fmt in ("coco-rle", "coco-polygon"):
        back_images = {img["id"]: img for img in back.images}
        key_of = {img["id"]: img["id"] for img in dataset.images}
    else:
        back_images = {_stem_of(img): img for img in back.images}
        key_of = written.stems
    if len(back.images) != len(dataset.images):
        fail(f"{len(dataset.images)} images written, {len(back.images)} read back")
    back_names = {c["id"]: str(c["name"]) for c in back.categories}
    want_classes = [str(c["name"]) for c in dataset.categories]
    if fmt in FOLDER_FORMATS and [str(c["name"]) for c in back.categories][: len(want_classes)] != want_classes:
        fail(f"the class list reads back as {[c['name'] for c in back.categories]}, not {want_classes}")
    by_image: dict = {}
    for a in back.annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    expected_by_image: dict = {}
    for m in written.masks:
        if m.expected is not None:
            expected_by_image.setdefault(m.image_id, []).append(m)
    for img in dataset.images:
        got_img = back_images.get(key_of[img["id"]])
        where = f"image {img.get('file_name', img['id'])!s}"
        if got_img is None:
            fail(f"{where} is missing")
        if (got_img["height"], got_img["width"]) != (img["height"], img["width"]):
            fail(f"{where} reads back as {got_img['height']}x{got_img['width']}, not {img['height']}x{img['width']}")
        want = expected_by_image.get(img["id"], [])
        got = by_image.get(got_img["id"], [])
        if len(want) != len(got):
            fail(f"{where}: {len(want)} masks written, {len(got)} read back")
        for m, a in zip(want, got, strict=True):
            if back_names.get(a["category_id"]) != m.name:
                fail(f"{where}, mask {m.ann_id}: class {m.name!r} reads back as {back_names.get(a['category_id'])!r}")
        if want:
            ious = rle_utils.iou_pairs([m.expected for m in want], [a["segmentation"] for a in got])
            bad = np.flatnonzero(ious != 1.0)
            if bad.size:
                k = int(bad[0])
                fail(
                    f"{where}, mask {want[k].ann_id}: the file gives back a different mask "
                    f"(IoU {ious[k]:.4f} with what was written)"
                )
    if fmt in POLYGON_FORMATS and tolerance == 0:
        for m in written.masks:
            if m.expected is not None and m.iou != 1.0:
                fail(f"mask {m.ann_id} of image {m.image_id}: the exact outline is off (IoU {m.iou:.4f})")


def _zip(folder: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())


def export_documents(
    items,
    out,
    fmt: str,
    *,
    tolerance: float = 0.0,
    categories=None,
    images: ImageSource | None = None,
    include_rejected: bool = False,
) -> ExportReport:
    """``export`` for annotation documents: ``items`` are ``(AnnotationDocument, image record)``
    pairs (the record needs ``id`` and ``file_name``), as ``coco.from_documents`` takes them;
    ``categories`` fixes class ids (a project's), labels not in it are added after."""
    dataset = coco.from_documents(items, categories=categories, include_rejected=include_rejected)
    return export(dataset, out, fmt, tolerance=tolerance, images=images)


def convert(
    source, out, fmt: str, *, tolerance: float = 0.0, copy_images: bool = True, max_bytes: int | None = None
) -> tuple[Imported, ExportReport]:
    """Read ``source`` in whatever format it is and export it as ``fmt`` (see ``export``); the
    images found beside the input are copied into folder formats unless ``copy_images`` is off."""
    imported = load(source, max_bytes=max_bytes)
    images = folder_images(imported.root) if copy_images else None
    report = export(imported.dataset, out, fmt, tolerance=tolerance, images=images)
    report.notes = list(imported.notes) + report.notes
    return imported, report
