"""Pascal VOC segmentation PNGs, in the layout CVAT reads ("Segmentation mask 1.1").

``SegmentationClass/<stem>.png``: a palette PNG whose value is the class (0 background, then
the class list in order, VOC's colours); ``SegmentationObject/<stem>.png``: the instance
number (1, 2, ... in z-order, bottom first), a palette PNG for up to 254 masks, a 16-bit PNG
beyond (VOC has no room for more); ``labelmap.txt``: the classes with their colours;
``ImageSets/Segmentation/default.txt``: the image stems; ``JPEGImages/``: the images.

A label map holds one value per pixel, so where masks overlap the topmost wins: VOC is exact
for masks that do not overlap; a mask entirely under others is not in the file at all.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from annotator.annotations import rle as rle_utils
from annotator.annotations.render import label_map_from_rles
from annotator.formats.coco import CocoDataset, CocoError
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

VOID = 255  # VOC marks object borders 255 in 8-bit maps: neither background nor a class
MAX_PALETTE_INSTANCES = 254
BACKGROUND_NAMES = ("background", "_background_")


def colormap(n: int = 256) -> np.ndarray:
    """VOC's colours: the bits of the index spread over r, g, b from the high bit down."""
    idx = np.arange(n)
    cmap = np.zeros((n, 3), np.uint8)
    for bit in range(8):
        for channel in range(3):
            cmap[:, channel] |= (((idx >> (3 * bit + channel)) & 1) << (7 - bit)).astype(np.uint8)
    return cmap


def _save_palette_png(path: Path, values: np.ndarray) -> None:
    from PIL import Image

    img = Image.fromarray(values.astype(np.uint8, copy=False), mode="L")
    img.putpalette(colormap().reshape(-1).tolist())
    img.save(path, compress_level=1)


def _save_png16(path: Path, values: np.ndarray) -> None:
    if not cv2.imwrite(str(path), values.astype(np.uint16, copy=False)):
        raise OSError(f"could not write {path}")


def write(dataset: CocoDataset, folder, *, tolerance: float = 0.0, images: ImageSource | None = None) -> WriteResult:
    """``tolerance`` is unused: VOC stores pixels."""
    folder = Path(folder)
    dataset = with_classes(dataset)
    names = class_names(dataset)
    if len(names) > 254:
        raise CocoError(f"VOC class PNGs hold at most 254 classes; this dataset has {len(names)}")
    bad = [n for n in names if ":" in n]
    if bad:
        raise CocoError(f"class {bad[0]!r}: VOC's labelmap.txt cannot hold a ':' in a class name")
    index = class_index(dataset)
    stems = image_stems(dataset.images)
    result = WriteResult([], stems)
    for sub in ("SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    write_image_files(dataset, folder / "JPEGImages", stems, images, result.notes)
    by_image: dict = {}
    for a in dataset.annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    hidden = 0
    for img in dataset.images:
        anns = by_image.get(img["id"], [])
        if len(anns) > 65535:
            raise CocoError(f"image {img.get('file_name')}: {len(anns)} masks; a 16-bit PNG holds 65535")
        h, w = img["height"], img["width"]
        rles = [a["segmentation"] for a in anns]
        instances = label_map_from_rles(rles, (h, w))  # 1 + index of the topmost mask
        lut = np.array([0] + [index[a["category_id"]] + 1 for a in anns], np.uint8)
        stem = stems[img["id"]]
        _save_palette_png(folder / "SegmentationClass" / f"{stem}.png", lut[instances])
        if len(anns) <= MAX_PALETTE_INSTANCES:
            _save_palette_png(folder / "SegmentationObject" / f"{stem}.png", instances)
        else:
            _save_png16(folder / "SegmentationObject" / f"{stem}.png", instances)
        # what is left of each mask is what the instance PNG holds: read it off the map in one
        # pass (the read-back check compares the PNG with it, mask by mask)
        left = rle_utils.from_label_map(instances)
        del instances
        empty = rle_utils.from_counts([h * w], (h, w))
        visible = [left.get(k + 1, empty) for k in range(len(anns))]
        areas = rle_utils.areas(visible) if visible else np.zeros(0)
        original_areas = rle_utils.areas(rles) if rles else np.zeros(0)
        originals = rle_utils.iou_pairs(visible, rles) if visible else np.zeros(0)
        for a, vis, area, full, iou in zip(anns, visible, areas, original_areas, originals, strict=True):
            name = names[index[a["category_id"]]]
            if area == 0:
                hidden += int(full > 0)
                result.masks.append(Written(img["id"], a["id"], name, None, 0.0 if full else 1.0))
            else:
                result.masks.append(Written(img["id"], a["id"], name, vis, float(iou)))
    if hidden:
        result.notes.append(f"{hidden} mask{'s' * (hidden != 1)} entirely under others, so not in the PNGs")
    colours = colormap()
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{n}:{','.join(str(int(v)) for v in colours[k + 1])}::" for k, n in enumerate(names)]
    (folder / "labelmap.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "ImageSets" / "Segmentation" / "default.txt").write_text(
        "".join(stems[i["id"]] + "\n" for i in dataset.images), encoding="utf-8"
    )
    return result


# -- reading ------------------------------------------------------------------------------------
def is_voc(path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "SegmentationObject").is_dir() or (path / "SegmentationClass").is_dir())


def read_classes(folder: Path) -> tuple[list[str], list]:
    """(class names, their RGB colours or None) from ``labelmap.txt`` (CVAT), else
    ``class_names.txt`` / ``labels.txt`` (one name a line); background not included."""
    for name in ("labelmap.txt", "class_names.txt", "labels.txt"):
        path = folder / name
        if not path.is_file():
            continue
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            label, _, rest = line.partition(":")
            colour = None
            if rest:
                try:
                    colour = tuple(int(v) for v in rest.split(":")[0].split(","))
                except ValueError:
                    colour = None
            entries.append((label, colour))
        if entries and (entries[0][0].lower() in BACKGROUND_NAMES or entries[0][1] == (0, 0, 0)):
            entries = entries[1:]
        return [e[0] for e in entries], [e[1] for e in entries]
    raise CocoError(f"{folder}: no labelmap.txt (or class_names.txt) naming the classes")


def _read_map(path: Path, colours: dict | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.asarray(img)
    except (OSError, SyntaxError) as e:
        raise CocoError(f"{path.name}: not a PNG that can be read ({e})") from None
    if mode in ("P", "L", "I;16", "I;16B", "I"):
        return arr.astype(np.int32) if mode == "I" else arr
    if mode in ("RGB", "RGBA") and colours is not None:
        rgb = arr[..., :3].astype(np.int32)
        key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        out = np.full(key.shape, -1, np.int32)
        for colour, value in colours.items():
            out[key == ((colour[0] << 16) | (colour[1] << 8) | colour[2])] = value
        if (out < 0).any():
            raise CocoError(f"{path.name}: colours that are not in labelmap.txt")
        return out.astype(np.uint16)
    raise CocoError(f"{path.name}: a label PNG must be palette, grayscale or 16-bit, got {mode}")


def read(path, *, notes: list | None = None) -> CocoDataset:
    folder = Path(path)
    notes = [] if notes is None else notes
    if not is_voc(folder):
        raise CocoError(f"{folder}: not a VOC folder (no SegmentationObject or SegmentationClass)")
    names, colours = read_classes(folder)
    class_colours = {(0, 0, 0): 0, **{c: k + 1 for k, c in enumerate(colours) if c is not None}}
    instance_colours = {tuple(int(v) for v in c): k for k, c in enumerate(colormap())}
    objects, classes = folder / "SegmentationObject", folder / "SegmentationClass"
    stems = sorted({p.stem for d in (objects, classes) if d.is_dir() for p in d.glob("*.png")})
    if not stems:
        raise CocoError(f"{folder}: no PNGs in SegmentationObject or SegmentationClass")
    images, annotations = [], []
    disagree = 0
    for image_id, stem in enumerate(stems, start=1):
        cls_path, obj_path = classes / f"{stem}.png", objects / f"{stem}.png"
        if not cls_path.is_file():
            raise CocoError(f"{stem}: SegmentationObject has it but SegmentationClass does not")
        cls_map = _read_map(cls_path, class_colours)
        h, w = cls_map.shape[:2]
        images.append({"id": image_id, "file_name": stem, "height": h, "width": w})
        if obj_path.is_file():
            obj_map = _read_map(obj_path, instance_colours)
            if obj_map.shape != cls_map.shape:
                raise CocoError(f"{stem}: the object and class PNGs differ in size")
            if obj_map.dtype == np.uint8:
                obj_map = np.where(obj_map == VOID, 0, obj_map)
            per_instance = rle_utils.from_label_map(obj_map)
            lut = np.zeros(int(obj_map.max()) + 1, np.int64)
            for value, rle in per_instance.items():
                lut[value] = _first_pixel_value(rle, cls_map)
            expected = lut[obj_map]
            disagree += int(((obj_map != 0) & (cls_map != VOID) & (cls_map != expected)).sum())
            items = sorted(per_instance.items())
        else:
            notes.append(f"{stem}: no instance PNG, so one mask per class")
            items = sorted(rle_utils.from_label_map(np.where(cls_map == VOID, 0, cls_map)).items())
            lut = None
        for value, rle in items:
            cls = int(lut[value]) if lut is not None else value
            if cls == VOID or cls == 0 or cls > len(names):
                raise CocoError(
                    f"{stem}: instance {value} has class value {cls}, which labelmap.txt "
                    f"does not name ({len(names)} classes)"
                )
            annotations.append(annotation(len(annotations) + 1, image_id, cls, rle, voc_instance=value))
    if disagree:
        notes.append(f"{disagree} pixels whose class disagrees with their instance's class")
    categories = [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(names)]
    return CocoDataset(images, annotations, categories, {"description": f"VOC segmentation from {folder.name}"})


def _first_pixel_value(rle: dict, values: np.ndarray) -> int:
    h = rle_utils.size_of(rle)[0]
    starts, lengths = rle_utils.foreground_runs(rle)
    p = int(starts[np.flatnonzero(lengths > 0)[0]])
    return int(values[p % h, p // h])
