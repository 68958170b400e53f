"""What every session shares: the model, its lock, the limits, projects, export folders.

One ``Context`` per ``Workbench`` (per server). The concern modules take it with a
``Session``; nothing here belongs to one browser tab.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotator.amg.generator import MaskGenerator
from annotator.annotations import markers, render
from annotator.limits import Limits
from annotator.models.batching import BatchedSegmenter, DecodeBatcher
from annotator.models.loading import BackendInfo
from annotator.models.lock import ModelLock
from annotator.models.zerogpu import gpu
from annotator.projects.folders import FolderPolicy
from annotator.projects.library import ProjectLibrary
from annotator.projects.prefetch import Prefetcher


@dataclass
class Context:
    segmenter: object
    info: BackendInfo
    limits: Limits
    max_display_side: int
    renderer: render.Renderer
    export_root: Path  # every export folder lives below it; removed with the workbench
    # one model call at a time, whoever makes it: every encoder and decoder call holds this
    # lock (clicks, uploads, segment everything call by call, and the background prefetch,
    # which yields to users)
    model_lock: ModelLock
    projects: ProjectLibrary
    folders: FolderPolicy
    prefetcher: Prefetcher | None
    # what clicks decode with: a batcher where the model can decode many prompts at once, so
    # clicks arriving together from any sessions are one batch (it takes the model lock for
    # the decoder call itself); else the segmenter, under the model lock
    prompt_segmenter: object = None
    # True: the page's canvas draws in the browser (View.frame); no canvas image is rendered
    browser_canvas: bool = False

    def __post_init__(self):
        if self.prompt_segmenter is None:
            self.prompt_segmenter = self.segmenter
            if hasattr(self.segmenter, "predict_many"):
                self.prompt_segmenter = BatchedSegmenter(self.segmenter, DecodeBatcher(self.segmenter, self.model_lock))

    def prompt_lock(self):
        """The model lock around a click, unless the batcher takes it for the decoder call."""
        if isinstance(self.prompt_segmenter, BatchedSegmenter):
            return contextlib.nullcontext()
        return self.model_lock

    @classmethod
    def create(
        cls,
        segmenter,
        info: BackendInfo,
        *,
        limits: Limits | None = None,
        max_display_side: int = markers.DISPLAY_MAX_SIDE,
        projects: ProjectLibrary | None = None,
        folders: FolderPolicy | None = None,
        prefetch: bool = True,
    ) -> Context:
        export_root = Path(tempfile.mkdtemp(prefix="annotator-exports-"))
        model_lock = ModelLock()
        # (partial, not a lambda over the context: finalizers must not keep it alive)
        prefetcher = Prefetcher(functools.partial(embed, segmenter), model_lock) if prefetch else None
        ctx = cls(
            segmenter=segmenter,
            info=info,
            limits=limits or Limits(),
            max_display_side=max_display_side,
            renderer=render.Renderer(),
            export_root=export_root,
            model_lock=model_lock,
            projects=projects if projects is not None else ProjectLibrary(),
            folders=folders if folders is not None else FolderPolicy(),
            prefetcher=prefetcher,
        )
        return ctx

    def finalize_with(self, owner) -> None:
        """Release what the context holds outside Python when ``owner`` is collected."""
        weakref.finalize(owner, shutil.rmtree, str(self.export_root), True)
        weakref.finalize(owner, self.projects.close)
        if self.prefetcher is not None:
            weakref.finalize(owner, self.prefetcher.close)


@gpu
def embed(segmenter, image: np.ndarray):
    """The image encoder (on ZeroGPU, the one step that needs the GPU per image)."""
    return segmenter.embed(image)


@gpu(duration=120)
def generate(segmenter, image: np.ndarray, params: dict, cancel, model_lock=None):
    """SAM's automatic generator as a stream of updates (see ``MaskGenerator.iter_generate``)."""
    generator = MaskGenerator(segmenter, output_mode="coco_rle", model_lock=model_lock, **params)
    yield from generator.iter_generate(image, cancel=cancel)
