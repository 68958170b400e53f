"""What every format writer needs from a dataset: its class list, file stems, image files.

The class list is the dataset's categories in id order. A project gives its categories ids
once and never reuses them, so a class keeps its place in every export: its COCO id, its YOLO
index (the position in the list) and its VOC value (position + 1, 0 being background).
Masks without a class go to ``object``, which is added once, after the others.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from annotator.formats.coco import DEFAULT_CATEGORY, CocoDataset, CocoError
from annotator.formats.filenames import safe_name, safe_stem

# Where an image's file is: its path, its bytes, or None when it is not at hand.
ImageSource = Callable[[Mapping], "Path | bytes | None"]


def _id_key(cat_id):
    return (0, cat_id, "") if isinstance(cat_id, (int, float)) else (1, 0, str(cat_id))


def with_classes(dataset: CocoDataset) -> CocoDataset:
    """The dataset with categories in id order and a category on every annotation (``object``
    for masks without one: the existing ``object`` category, else a new id after the last)."""
    cats = sorted((dict(c) for c in dataset.categories), key=lambda c: _id_key(c["id"]))
    anns = dataset.annotations
    if any(a.get("category_id") is None for a in anns):
        default = next((c["id"] for c in cats if c["name"] == DEFAULT_CATEGORY), None)
        if default is None:
            default = max((c["id"] for c in cats if isinstance(c["id"], int)), default=0) + 1
            cats.append({"id": default, "name": DEFAULT_CATEGORY, "supercategory": ""})
        anns = [a if a.get("category_id") is not None else {**a, "category_id": default} for a in anns]
    return dataclasses.replace(dataset, annotations=anns, categories=cats)


def class_names(dataset: CocoDataset) -> list[str]:
    """The class list (names in category-id order) of a dataset from ``with_classes``; names
    must be unique and one line each, as YOLO, VOC and labelme list them."""
    names = [str(c["name"]) for c in dataset.categories]
    seen = set()
    for n in names:
        if n in seen:
            raise CocoError(f"two categories are named {n!r}; class names must be unique")
        if not n.strip() or "\n" in n or "\r" in n:
            raise CocoError(f"category name {n!r} cannot be a class name (empty or several lines)")
        seen.add(n)
    return names


def class_index(dataset: CocoDataset) -> dict:
    """Category id -> position in the class list."""
    return {c["id"]: k for k, c in enumerate(dataset.categories)}


def image_stems(images: Sequence[Mapping]) -> dict:
    """Image id -> a file stem for that image's files, unique in the export (``_2``, ``_3``
    appended when two images would share one)."""
    out, used = {}, set()
    for img in images:
        base = safe_stem(img.get("file_name") or str(img["id"]))
        stem, k = base, 1
        while stem.lower() in used:
            k += 1
            stem = f"{base}_{k}"
        used.add(stem.lower())
        out[img["id"]] = stem
    return out


def image_suffix(img: Mapping) -> str:
    suffix = Path(safe_name(img.get("file_name") or "")).suffix
    return suffix if suffix else ".jpg"


def folder_images(root: str | os.PathLike) -> ImageSource:
    """Images found by their ``file_name`` under ``root`` (as COCO and labelme files name
    them, relative to the annotation file), or in ``root/images``."""
    root = Path(root)

    def find(img: Mapping):
        name = str(img.get("file_name") or "")
        if not name:
            return None
        folders = (root, root / "images", root / "JPEGImages")
        candidates = [root / name] + [d / Path(name).name for d in folders]
        if not Path(name).suffix:  # VOC names images by stem
            candidates += [
                p for d in folders if d.is_dir() for p in sorted(d.glob(f"{Path(name).name}.*")) if is_image(p)
            ]
        for candidate in candidates:
            try:
                if candidate.is_file():
                    return candidate
            except OSError:
                continue
        return None

    return find


def copy_image(source, dest: Path) -> None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        dest.write_bytes(bytes(source))
    else:
        shutil.copyfile(source, dest)


def oriented_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as viewers show it (EXIF orientation applied), from
    its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CocoError(f"{path}: not an image that can be read ({e})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def annotation(ann_id, image_id, category_id, rle: dict, **extra) -> dict:
    """An annotation record as ``coco.load`` makes them (area and bbox from the mask)."""
    from annotator.annotations import rle as rle_utils

    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "area": int(rle_utils.areas([rle])[0]),
        "bbox": [float(v) for v in rle_utils.bboxes([rle])[0]],
        "iscrowd": 0,
        **extra,
    }


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dng", ".mpo", ".pfm", ".heic")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


@dataclasses.dataclass
class Written:
    """One mask as a writer wrote it: the class, the mask its file should give back when read
    (None: the format left it out) and that mask's IoU against the original."""

    image_id: object
    ann_id: object
    name: str
    expected: dict | None
    iou: float


@dataclasses.dataclass
class WriteResult:
    """What a writer wrote: every mask (in the order its reader gives them back, per image),
    the file stem of each image, and what the user should know."""

    masks: list
    stems: dict  # image id -> stem (COCO: the image id itself)
    notes: list = dataclasses.field(default_factory=list)
    holes: int = 0  # holes in the written masks
    exact_fallbacks: int = 0  # masks the tolerance would have erased, written exactly


def write_image_files(
    dataset: CocoDataset, folder: Path, stems: Mapping, images: ImageSource | None, notes: list
) -> dict:
    """Copy the images that can be found into ``folder``; image id -> file name written."""
    written, missing = {}, 0
    if images is None:
        return written
    folder.mkdir(parents=True, exist_ok=True)
    for img in dataset.images:
        source = images(img)
        if source is None:
            missing += 1
            continue
        suffix = Path(source).suffix if isinstance(source, (str, os.PathLike)) else ""
        name = stems[img["id"]] + (suffix or image_suffix(img))
        copy_image(source, folder / name)
        written[img["id"]] = name
    if missing:
        notes.append(f"{missing} of {len(dataset.images)} images not found, so not copied")
    return written
