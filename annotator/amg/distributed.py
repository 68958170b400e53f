"""Segment everything on many GPUs and machines with Ray Data (optional extra: ``annotator[ray]``).

The driver adds the images to a project and sends the paths of those not yet pre-labelled
through ``map_batches`` to GPU actors (``SegmentEverything``: each loads SAM once and
segments batches of paths into SAM's RLE records; with texts, ``FindConcepts``: each loads
SAM 3 and embeds the texts once, then finds every instance of each text in each image); results stream back to the driver, which
commits each image into the project as it arrives (``store_prelabels``: the same step a
local run takes), so a stopped job resumes like a local one. ``Project.export_coco`` merges
everything into one COCO file. See docs/distributed.md.

Ray is imported only by ``connect`` and ``run``; everything else runs without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from annotator.amg.batch import (
    ACTION,
    CONCEPT_ACTION,
    BatchResult,
    concept_records,
    needs_prelabel,
    store_concepts,
    store_prelabels,
)
from annotator.annotations.rle import encode as encode_rle
from annotator.annotations.rle import to_json as rle_json
from annotator.formats.coco import json_value
from annotator.formats.images import ImageError, load_image
from annotator.projects.store import Project

log = logging.getLogger(__name__)
CPUS_PER_ACTOR = 1.0  # what each actor reserves besides its GPUs (reading and encoding images)


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the part we need)
    except ImportError:
        raise ImportError(
            "distributed runs need Ray Data: pip install 'annotator[ray]' (or pip install 'ray[data]')"
        ) from None
    return ray


def connect():
    """Ray, connected to the cluster ``ray.init()`` finds (``RAY_ADDRESS``, a ``ray start`` on
    this machine), else to a local one it starts."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init()
    return ray


def gpus_per_actor(cluster: Mapping[str, float], concurrency: int, requested: float | None) -> float:
    """GPUs each of ``concurrency`` actors reserves on a cluster with ``cluster`` resources
    (``ray.cluster_resources()``): ``requested`` when the cluster can hold that many actors,
    by default one GPU each, shared evenly when there are fewer GPUs than actors, none on a
    cluster without GPUs. A request the cluster cannot hold raises ValueError naming the flag
    (Ray would otherwise wait for GPUs that never come)."""
    gpus, cpus = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    if concurrency < 1:
        raise ValueError(f"--ray {concurrency}: give the number of actors, at least 1")
    if requested is None:
        num_gpus = min(1.0, gpus / concurrency)
    elif requested < 0:
        raise ValueError(f"--gpus-per-actor {requested:g}: give 0 or more")
    elif requested * concurrency > gpus + 1e-9:
        hint = (
            "--gpus-per-actor 0 to run on CPUs"
            if gpus == 0
            else f"--gpus-per-actor {gpus / concurrency:g} to share them, or fewer actors with --ray"
        )
        raise ValueError(
            f"--gpus-per-actor {requested:g} with --ray {concurrency} needs "
            f"{requested * concurrency:g} GPUs and the Ray cluster has {gpus:g}: "
            f"use {hint}"
        )
    else:
        num_gpus = float(requested)
    if concurrency * CPUS_PER_ACTOR > cpus + 1e-9:
        raise ValueError(
            f"--ray {concurrency} actors need {concurrency * CPUS_PER_ACTOR:g} CPUs and the "
            f"Ray cluster has {cpus:g}: use --ray {int(cpus // CPUS_PER_ACTOR) or 1} or fewer"
        )
    return num_gpus


def segment_batch(generator, batch: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """Segment everything on each image of a batch of ``{"image_id": [...], "path": [...]}``
    (and optionally ``"sha256"``: the file must still have that content).

    Returns the batch with ``records`` (SAM's records as JSON text) and ``error`` (empty when
    the image was segmented, otherwise why not) columns, one row per input row: an unreadable
    image is reported, not fatal, so one bad file never loses a batch of finished work.
    """
    return _each_image(batch, lambda image: json.dumps(generator.generate(image), default=json_value), "[]")


def find_concepts_batch(finder, batch: Mapping[str, Sequence], texts: Sequence[str], threshold: float, model: str):
    """SAM 3 "find all" for each text on each image of a batch, like ``segment_batch``: the
    ``records`` column holds, per image, ``{text: [records]}`` as JSON text (masks as RLE)."""

    def find(image: np.ndarray) -> str:
        embedding = finder.embed(image)  # once per image, whatever the number of texts
        found = {}
        for text in texts:
            found[text] = [
                {**r, "segmentation": rle_json(encode_rle(r["segmentation"]))}
                for r in concept_records(finder.find_all(embedding, text, threshold=threshold), text, model)
            ]
        return json.dumps(found, default=json_value)

    return _each_image(batch, find, "{}")


def _each_image(batch: Mapping[str, Sequence], work, empty: str) -> dict[str, np.ndarray]:
    """``work(image)`` (records as JSON text) for each image of a batch, as the batch's
    ``records`` and ``error`` columns; an unreadable image gets ``empty`` records and its
    reason, so one bad file never loses a batch of finished work."""
    records, errors = [], []
    digests = batch.get("sha256", [None] * len(batch["path"]))
    for path, digest in zip(batch["path"], digests):
        try:
            image = _read_checked(str(path), digest)
        except ImageError as e:
            records.append(empty)
            errors.append(str(e))
            continue
        records.append(work(image))
        errors.append("")
    return {
        "image_id": np.asarray(batch["image_id"], dtype=np.int64),
        "path": np.asarray([str(p) for p in batch["path"]], dtype=object),
        "records": np.asarray(records, dtype=object),
        "error": np.asarray(errors, dtype=object),
    }


def _read_checked(path: str, sha256: str | None) -> np.ndarray:
    """The image at ``path``, refused when it is not the file the project holds."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path} on this node: {e.strerror}") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ImageError(f"{path} differs from the file added to the project")
    return load_image(data)


class SegmentEverything:
    """The Ray Data actor: loads SAM once per actor, then segments batches of image paths.

    Constructor arguments are those of ``load_segmenter`` plus SAM's generator parameters.
    """

    def __init__(
        self,
        model: str | None = None,
        checkpoint: str | None = None,
        *,
        device: str | None = None,
        precision: str | None = None,
        download: bool = False,
        generator_params: Mapping | None = None,
    ):
        from annotator.amg.generator import MaskGenerator
        from annotator.models.loading import load_segmenter

        segmenter, info = load_segmenter(
            model, checkpoint, device=device, precision=precision, download=download, fallback=False
        )
        log.info("actor ready: %s", info.status)
        self.generator = MaskGenerator(segmenter, output_mode="coco_rle", **dict(generator_params or {}))

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
        return segment_batch(self.generator, batch)


class FindConcepts:
    """The Ray Data actor for ``--text``: loads SAM 3's concept finder once per actor; each
    text is embedded once per actor (the finder keeps text embeddings), then batches of image
    paths become each text's instances (``find_concepts_batch``)."""

    def __init__(
        self,
        texts: Sequence[str],
        *,
        checkpoint: str | None = None,
        device: str | None = None,
        download: bool = False,
        threshold: float = 0.5,
        model: str | None = None,
    ):
        from annotator.models.device import pick_device
        from annotator.models.hub import get_hub_model, resolve_hub_checkpoint
        from annotator.models.loading import load_concept_finder

        resolved = resolve_hub_checkpoint(get_hub_model("sam3"), checkpoint, download=download, progress=False)
        self.finder = load_concept_finder(resolved.path, device=pick_device(device))
        self.texts, self.threshold, self.model = list(texts), float(threshold), model
        for text in self.texts:  # embedded now, once: every batch of this actor reuses them
            self.finder.text_features(text)
        log.info("actor ready: SAM 3 from %s, texts %s", resolved.path, ", ".join(self.texts))

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
        return find_concepts_batch(self.finder, batch, self.texts, self.threshold, self.model)


def merge_rows(
    project: Project,
    rows: Iterable[Mapping],
    settings: Mapping,
    result: BatchResult | None = None,
    *,
    progress: bool = True,
    total: int | None = None,
) -> BatchResult:
    """Commit the actors' output rows into the project, one image per transaction (settings
    with ``texts``: rows of ``FindConcepts``)."""
    from tqdm.auto import tqdm

    result = result or BatchResult()
    concepts = bool(settings.get("texts"))  # rows of FindConcepts: {text: records} per image
    desc = CONCEPT_ACTION if concepts else ACTION
    for row in tqdm(rows, desc=desc, unit="image", total=total, disable=not progress):
        image_id = int(row["image_id"])
        if row["error"]:
            result.failed[image_id] = str(row["error"])
            log.warning("failed on %s: %s", row["path"], row["error"])
            continue
        records = json.loads(row["records"])
        if concepts:
            result.n_masks += store_concepts(project, image_id, records, prelabel=settings)
        else:
            result.n_masks += store_prelabels(project, image_id, records, settings)
        result.processed.append(image_id)
    return result


def run(
    project: Project,
    image_ids: Sequence[int],
    settings: Mapping,
    *,
    concurrency: int,
    num_gpus: float | None = None,
    batch_size: int = 4,
    model: str | None = None,
    checkpoint: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    generator_params: Mapping | None = None,
    progress: bool = True,
) -> BatchResult:
    """Pre-label ``image_ids`` of ``project`` on ``concurrency`` Ray actors with ``num_gpus``
    each (default: what ``gpus_per_actor`` picks for the cluster; connects to the cluster
    ``ray.init()`` finds, or starts a local one). Image paths must be readable on every node
    (a shared file system); the checkpoint too. Raises ValueError, before any work, when the
    cluster cannot hold ``concurrency`` such actors. Settings with ``texts`` (and
    ``threshold``, ``model``: what ``annotator auto --text`` records): SAM 3 finds every
    instance of each text (``FindConcepts``) instead of segmenting everything."""
    require_ray()
    result = BatchResult()
    todo = []
    for image_id in image_ids:
        info = project.image(image_id)
        if not needs_prelabel(info):
            result.skipped.append(image_id)
        elif info.path is None:
            result.failed[image_id] = "uploaded images are not sent to a cluster; run locally"
        else:
            todo.append({"image_id": image_id, "path": info.path, "sha256": info.sha256})
    if not todo:
        return result
    ray = connect()
    num_gpus = gpus_per_actor(ray.cluster_resources(), concurrency, num_gpus)
    if checkpoint is not None:
        checkpoint = str(Path(checkpoint).resolve())
    if settings.get("texts"):
        actor, kwargs = (
            FindConcepts,
            {
                "texts": list(settings["texts"]),
                "checkpoint": checkpoint,
                "device": device,
                "threshold": float(settings.get("threshold", 0.5)),
                "model": settings.get("model"),
            },
        )
    else:
        actor, kwargs = (
            SegmentEverything,
            {
                "model": model,
                "checkpoint": checkpoint,
                "device": device,
                "precision": precision,
                "generator_params": dict(generator_params or {}),
            },
        )
    ds = ray.data.from_items(todo).map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=CPUS_PER_ACTOR,
        num_gpus=num_gpus,
    )
    return merge_rows(project, ds.iter_rows(), settings, result, progress=progress, total=len(todo))
