"""Export and import: a session's masks out as COCO, label PNGs, overlay and figures; COCO
files (or SAM ``amg.py`` output) in, for review."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from annotator.annotations import render
from annotator.annotations.document import AnnotationDocument
from annotator.app import memory
from annotator.app.checks import need_image
from annotator.app.classes import class_list
from annotator.app.context import Context
from annotator.app.state import KEEP_EXPORTS, Session, WorkbenchError
from annotator.app.text import plural
from annotator.formats import coco, convert, labels
from annotator.formats import figures as figs
from annotator.formats.filenames import safe_name, safe_stem

IMPORTED_FIELDS = (
    "label",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
    "prompts",
    "review",
    "visible",
    "meta",
)


def export_folder(ctx: Context, s: Session, out_dir: str | Path | None = None) -> Path:
    """A fresh folder for one export (a download never gets an older file of the same name);
    only the session's last few stay."""
    if out_dir is not None:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = Path(tempfile.mkdtemp(prefix="export-", dir=ctx.export_root))
    s.exports.append(folder)
    while len(s.exports) > KEEP_EXPORTS:  # only recent downloads stay available
        shutil.rmtree(s.exports.pop(0), ignore_errors=True)
    return folder


# what the Export tab offers: the training formats (``formats.convert.FORMATS``); "rle" and
# "polygon" are the older names of the two COCO ones
LEGACY_FORMATS = {"rle": "coco-rle", "polygon": "coco-polygon"}


def export(
    ctx: Context,
    s: Session,
    segmentation: str = "rle",
    include_pending: bool = True,
    figures: bool = True,
    out_dir: str | Path | None = None,
    tolerance: float = 0.0,
) -> tuple[list[Path], str]:
    """Write the annotations as ``segmentation`` (a format of ``formats.convert.FORMATS``:
    COCO RLE or polygons, YOLO, labelme, VOC; folder formats come as one zip with the image),
    read back and checked; then a 16-bit instance-id PNG, a class-index PNG, the overlay PNG
    and, with ``figures``, the review figures. ``tolerance`` (pixels) simplifies polygons
    (0: exact). Rejected masks are left out; pending ones too unless ``include_pending``.
    Returns the files (the chosen format's first) and the message, which says what the
    export cost (e.g. polygons' min IoU)."""
    fmt = LEGACY_FORMATS.get(segmentation, segmentation)
    if fmt not in convert.FORMATS:
        raise WorkbenchError(f"export format must be one of {', '.join(convert.FORMATS)}; got {segmentation!r}")
    need_image(s)
    anns = [a for a in s.doc.annotations if a.review == "accepted" or (include_pending and a.review == "pending")]
    if not anns:
        raise WorkbenchError(
            "Nothing to export: accept a mask first" + ("." if include_pending else ", or include pending masks.")
        )
    keep = {a.id for a in anns}
    doc = AnnotationDocument.from_records(*s.doc.size, [r for r in s.doc.records() if r["id"] in keep], image_id=s.name)
    folder = export_folder(ctx, s, out_dir)
    stem = safe_stem(s.name)
    h, w = s.doc.size
    dataset = coco.from_documents(
        [(doc, {"id": 1, "file_name": s.name, "height": h, "width": w})],
        categories=class_list(s).coco_categories(),  # ids stable across exports, as the legend's
        model=ctx.info.model_tag,
        parameters=s.amg_params or None,
    )
    target = folder / (f"{stem}_coco.json" if fmt.startswith("coco") else f"{stem}_{fmt}.zip")
    try:
        report = convert.export(dataset, target, fmt, tolerance=tolerance, images=_image_source(s))
    except (convert.ExportCheckError, coco.CocoError, ValueError) as e:
        raise WorkbenchError(f"Could not export as {convert.FORMATS[fmt]}: {e}. Nothing was written.") from None
    files = [target]
    files += _label_pngs(folder, stem, doc, anns)
    over = render.overlay(
        s.image, [a.rle for a in anns], alpha=s.view.alpha, colors=render.palette(a.id for a in anns), outlines=True
    )
    files.append(_write_rgb_png(folder / f"{stem}_overlay.png", over))
    if figures:
        files += _figures(s.image, anns, folder, stem)
    n_pending = sum(a.review == "pending" for a in anns)
    what = f"{len(anns)} masks ({len(anns) - n_pending} accepted, {n_pending} pending)"
    return [Path(f) for f in files], (
        f"Exported {what} as {convert.FORMATS[fmt]} and {len(files) - 1} more files: {report.line()}."
    )


def _image_source(s: Session):
    """The session's image as the file the export's images/ folder gets (its own name)."""
    suffix = Path(s.name).suffix.lower() or ".png"
    ok, data = cv2.imencode(
        suffix if suffix in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff") else ".png",
        cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR),
    )
    return (lambda img: data.tobytes()) if ok else None


def _label_pngs(folder: Path, stem: str, doc: AnnotationDocument, anns: list) -> list[Path]:
    files = [labels.write_instance_png(folder / f"{stem}_instances.png", doc)]
    classes = ["background"] + sorted({a.label or coco.DEFAULT_CATEGORY for a in anns})
    relabelled = doc
    if any(a.label is None for a in anns):
        relabelled = AnnotationDocument.from_records(
            *doc.size, [{**r, "label": r["label"] or coco.DEFAULT_CATEGORY} for r in doc.records()]
        )
    files.append(labels.write_semantic_png(folder / f"{stem}_classes.png", relabelled, classes))
    (folder / f"{stem}_classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    files.append(folder / f"{stem}_classes.txt")
    return files


def _figures(image: np.ndarray, anns: list, folder: Path, stem: str) -> list[Path]:
    rles = [a.rle for a in anns]
    scores = {
        k: [getattr(a, k) if getattr(a, k) is not None else float("nan") for a in anns]
        for k in ("predicted_iou", "stability_score")
        if any(getattr(a, k) is not None for a in anns)
    }
    files = [
        figs.mask_grid(image, rles, folder / f"{stem}_masks.png", scores=scores or None),
        figs.size_views(image, rles, folder / f"{stem}_sizes.png"),
    ]
    if "predicted_iou" in scores:
        files.append(figs.quality_views(image, rles, scores["predicted_iou"], folder / f"{stem}_quality.png"))
    if len(rles) > 1:
        files.append(
            figs.containment_heatmap(rles, folder / f"{stem}_containment.png", labels=[str(a.id) for a in anns])
        )
    return files


def import_annotations(ctx: Context, s: Session, path: str | Path) -> str:
    """Add the masks of a COCO file (or SAM amg.py output) for the current image, for review.

    The file's image is matched by file name, then (for a file of one image) by size."""
    need_image(s)
    label = safe_name(Path(path).name, "the file")
    try:
        dataset = coco.load(path, max_bytes=ctx.limits.json_bytes, name=label)
        image = matching_image(s, dataset, label)
        imported = coco.to_document(dataset, image["id"])
    except WorkbenchError:
        raise
    except (coco.CocoError, ValueError, KeyError, TypeError) as e:
        why = str(e).strip("'")
        why = why if why.startswith(f"{label}: ") else f"{label}: {why}"
        raise WorkbenchError(
            f"Could not import {why}. Nothing was imported; the masks you have are unchanged."
        ) from None
    items = [{"segmentation": a.rle, **{f: getattr(a, f) for f in IMPORTED_FIELDS}} for a in imported]
    if not items:
        raise WorkbenchError(f"{label} has no annotations for {image.get('file_name')}.")
    memory.need_room_for_masks(ctx.limits, s, len(items), f"import the {len(items)} masks of {label}")
    dropped = memory.make_room(
        ctx.limits, s, sum(len(i["segmentation"]["counts"]) for i in items), f"import the masks of {label}"
    )
    try:
        ids = s.doc.add_many(items, source="import", action=f"import {len(items)} masks")
    except ValueError as e:  # checked in full before anything is added
        raise WorkbenchError(f"Could not import {label}: {e}. Nothing was imported.") from None
    return f"Imported {plural(len(ids), 'mask')} from {label} (ids {ids[0]}–{ids[-1]}).{dropped}"


def matching_image(s: Session, dataset, file_label: str) -> dict:
    h, w = s.image.shape[:2]
    names = {Path(s.name).name, Path(s.name).stem}
    files = [Path(str(i.get("file_name", ""))) for i in dataset.images]
    by_name = [i for i, f in zip(dataset.images, files) if f.name in names or f.stem in names]
    candidates = by_name or (dataset.images if len(dataset.images) == 1 else [])
    if not candidates:
        listed = ", ".join(str(i.get("file_name")) for i in dataset.images[:5])
        raise WorkbenchError(
            f"{file_label} has no image named {s.name} (it has: {listed}"
            f"{', …' if len(dataset.images) > 5 else ''}). Open the image the file "
            "was made for, or import the file made for this one."
        )
    image = candidates[0]
    if (image.get("height"), image.get("width")) != (h, w):
        raise WorkbenchError(
            f"{file_label}: {image.get('file_name')} is {image.get('width')}x"
            f"{image.get('height')} but the open image is {w}x{h}; the masks would not "
            "line up. Open the image the file was made for."
        )
    return image


def _write_rgb_png(path: Path, rgb: np.ndarray) -> Path:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
