"""Batch "segment everything": pre-label many images into a project, resumably.

Each image's masks and the mark "pre-labelled with these settings" are committed together,
one transaction per image, so a run stopped at any moment (Ctrl-C, a crash, a killed job)
resumes where it stopped and never adds an image's masks twice. The generator is anything
with ``generate(image) -> list of SAM records`` in ``coco_rle`` output mode
(``annotator.amg.generator.MaskGenerator``, or SAM's own ``SamAutomaticMaskGenerator``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from annotator.formats.images import ImageError
from annotator.projects.store import Project

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ACTION = "segment everything"

# SAM's ``SamAutomaticMaskGenerator`` scalar parameters: name -> (default, what it does).


def sidecar_path(output: str | Path) -> Path:
    """Where ``annotator auto -o OUT.json`` keeps its progress: a project file beside it."""
    output = Path(output)
    return (
        output.with_name(output.name + ".annotator") if output.suffix != ".json" else output.with_suffix(".annotator")
    )


def find_images(inputs: Iterable[str | Path], *, recursive: bool = False) -> list[Path]:
    """The image files named by ``inputs`` (files, or folders searched for image files by
    extension, sorted by name), each once, in order."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise ImageError(f"no such file or folder: {item}")
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def store_prelabels(project: Project, image_id: int, sam_records: Sequence[Mapping], settings: Mapping) -> int:
    """Add SAM's records to the image's annotations (as pending ``auto`` masks on top of what
    is there) and mark the image pre-labelled, in one transaction. Returns the masks added."""
    doc = project.load_document(image_id)
    doc.add_many(sam_records, source="auto", action=ACTION)
    project.save(image_id, doc, action=ACTION, prelabel=settings)
    return len(sam_records)


@dataclass
class BatchResult:
    processed: list[int] = field(default_factory=list)  # image ids pre-labelled by this run
    skipped: list[int] = field(default_factory=list)  # already pre-labelled or marked done
    failed: dict[int, str] = field(default_factory=dict)  # image id -> why
    n_masks: int = 0


def recorded_settings(infos: Iterable) -> dict | None:
    """The settings all these images were pre-labelled with, when they share one set."""
    seen = {json.dumps({k: v for k, v in i.prelabel.items() if k != "at"}, sort_keys=True) for i in infos if i.prelabel}
    return json.loads(seen.pop()) if len(seen) == 1 else None


def needs_prelabel(info) -> bool:
    return info.prelabel is None and info.status != "done"


def _progress_kwargs(generator, bar, name: str) -> dict:
    """``progress=`` for generators that report it (ours: point batches done of total)."""
    if bar.disable or "progress" not in inspect.signature(generator.generate).parameters:
        return {}
    return {"progress": lambda p: bar.set_postfix_str(f"{name} {p.done}/{p.total}")}


def prelabel(
    project: Project, generator, image_ids: Sequence[int], settings: Mapping, *, progress: bool = True
) -> BatchResult:
    """Segment everything on each image not yet pre-labelled (nor marked done), committing
    each image's masks as soon as they are made. An image that cannot be read is reported
    in ``failed`` and the run goes on."""
    result = BatchResult()
    for image_id, info, pixels, bar in _images_to_label(project, image_ids, result, ACTION, progress):
        records = generator.generate(pixels, **_progress_kwargs(generator, bar, info.name))
        result.n_masks += store_prelabels(project, image_id, records, settings)
        result.processed.append(image_id)
    return result


def _images_to_label(
    project: Project, image_ids: Sequence[int], result: BatchResult, desc: str, progress: bool, needs=needs_prelabel
):
    """``(image_id, info, pixels, progress bar)`` for each image that ``needs`` it (default:
    not yet pre-labelled nor marked done); the others go to ``result.skipped``, and an image
    that cannot be read to ``result.failed`` (the run goes on)."""
    from tqdm.auto import tqdm

    todo = []
    for image_id in image_ids:
        (todo if needs(project.image(image_id)) else result.skipped).append(image_id)
    bar = tqdm(todo, desc=desc, unit="image", disable=not progress, dynamic_ncols=True)
    try:
        for image_id in bar:
            info = project.image(image_id)
            bar.set_postfix_str(info.name, refresh=False)
            try:
                pixels = project.load_pixels(image_id)
            except ImageError as e:
                result.failed[image_id] = str(e)
                log.warning("skipping %s: %s", info.name, e)
                continue
            yield image_id, info, pixels, bar
    finally:
        bar.close()


CONCEPT_ACTION = "find all"


def concepts_key(image_id: int) -> str:
    """The project state key listing the texts an image was searched for (find all)."""
    return f"find all/{int(image_id)}"


def concepts_searched(project: Project, image_id: int) -> list[str]:
    """The texts "find all" already searched this image for (whatever it found)."""
    return list(project.get_state(concepts_key(image_id), []))


def needs_concepts(project: Project, texts: Sequence[str]):
    """``needs(info)`` for ``find_concepts``: an image not marked done and not yet searched for
    every one of ``texts``."""
    wanted = set(texts)
    return lambda info: info.status != "done" and not wanted <= set(concepts_searched(project, info.id))


def concept_records(instances: Sequence, text: str, model: str | None) -> list[dict]:
    """``Instance``s of ``text`` (best first) as document records: the mask, and the model,
    score and concept in ``meta``. Empty masks are left out."""
    return [
        {"segmentation": i.mask, "meta": {"model": model, "score": round(i.score, 4), "concept": text}}
        for i in instances
        if i.mask.any()
    ]


def store_concepts(
    project: Project,
    image_id: int,
    found: Mapping[str, Sequence[Mapping]],
    *,
    prelabel: Mapping | None = None,
    max_masks: int | None = None,
) -> int:
    """Add each text's records (``concept_records``; the segmentation a mask or an RLE) to
    the image as pending masks labelled with the text, and mark the image searched for
    those texts (and pre-labelled with ``prelabel`` when given), in one transaction. Masks
    already there, accepted or not, are kept as they are; ``max_masks`` caps the image's
    masks (the first records, the best, are kept). An edit another session saves meanwhile
    is never overwritten: the image is reloaded and the records added to what it holds
    then. Returns the masks added."""
    from annotator.projects.store import ConflictError

    for attempt in range(3):
        rev = project.image(image_id).rev
        doc = project.load_document(image_id)
        room = None if max_masks is None else max(0, max_masks - len(doc))
        added = 0
        for text, records in found.items():
            records = list(records)
            if room is not None:
                records = records[:room]
                room -= len(records)
            if records:
                doc.add_many(records, source="concept", label=text, action=f"{CONCEPT_ACTION} '{text}'")
                added += len(records)
        searched = sorted(set(concepts_searched(project, image_id)) | set(found))
        try:
            project.save(
                image_id,
                doc,
                action=CONCEPT_ACTION,
                base_rev=rev,
                prelabel=prelabel,
                state={concepts_key(image_id): searched},
            )
            return added
        except ConflictError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def find_concepts(
    project: Project,
    finder,
    image_ids: Sequence[int],
    texts: Sequence[str],
    *,
    threshold: float = 0.5,
    model: str | None = None,
    prelabel: Mapping | None = None,
    needs=needs_prelabel,
    model_lock=None,
    max_masks: int | None = None,
    result: BatchResult | None = None,
    progress: bool = True,
):
    """SAM 3 "find all" for each text on each image that ``needs`` it, committing each image
    (``store_concepts``) before yielding ``(image_id, masks added)``: a caller that stops
    iterating stops between images, with every image so far saved. ``finder``: a
    ``ConceptFinder``; it keeps each text's embedding, so a text is encoded once per run.
    ``model_lock``: a reusable context held for each image's model calls. Unreadable images
    go to ``result.failed``, skipped ones to ``result.skipped``."""
    result = result if result is not None else BatchResult()
    lock = model_lock if model_lock is not None else contextlib.nullcontext()
    walk = _images_to_label(project, image_ids, result, CONCEPT_ACTION, progress, needs)
    try:
        for image_id, _info, pixels, _bar in walk:
            with lock:
                embedding = finder.embed(pixels)  # once per image, whatever the number of texts
                found = {text: finder.find_all(embedding, text, threshold=threshold) for text in texts}
            records = {text: concept_records(found[text], text, model) for text in texts}
            added = store_concepts(project, image_id, records, prelabel=prelabel, max_masks=max_masks)
            result.n_masks += added
            result.processed.append(image_id)
            yield image_id, added
    finally:
        walk.close()


def find_all_into(
    project: Project,
    finder,
    image_ids: Sequence[int],
    texts: Sequence[str],
    settings: Mapping,
    *,
    threshold: float = 0.5,
    progress: bool = True,
) -> BatchResult:
    """SAM 3 "find all" for each text on each image not yet pre-labelled (nor marked done),
    committing each image's instances (pending, labelled with the text, best score first) and
    the pre-labelled mark together, like ``prelabel`` (``find_concepts``)."""
    result = BatchResult()
    steps = find_concepts(
        project,
        finder,
        image_ids,
        texts,
        threshold=threshold,
        model=settings.get("model"),
        prelabel=settings,
        result=result,
        progress=progress,
    )
    for _ in steps:
        pass
    return result
