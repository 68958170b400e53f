"""annotator: image annotation with Segment Anything.

The package follows the data's way, one folder per stage:

- ``models``: SAM variants, checkpoints, loading, the predictor (``SamSegmenter``);
- ``amg``: segment everything (``MaskGenerator``), batch pre-labelling, Ray;
- ``annotations``: masks as RLE, the per-image ``AnnotationDocument``, rendering, metrics;
- ``formats``: reading images, COCO and label PNGs in and out, figures;
- ``projects``: many images in one SQLite file (``Project``);
- ``app``: the ``Workbench`` (the app's logic, one session per browser tab) and ``app.ui``,
  the Gradio layout and wiring.

The names below are the public surface. They are imported on first use, so that
``import annotator.formats.coco`` (``annotator convert``/``eval``) does not pay for torch
or Gradio.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SamSegmenter": "annotator.models.predictor",
    "Prediction": "annotator.models.predictor",
    "load_segmenter": "annotator.models.loading",
    "MaskGenerator": "annotator.amg.generator",
    "AnnotationDocument": "annotator.annotations.document",
    "CocoDataset": "annotator.formats.coco",
    "load_coco": ("annotator.formats.coco", "load"),
    "save_coco": ("annotator.formats.coco", "save"),
    "coco_from_documents": ("annotator.formats.coco", "from_documents"),
    "Project": "annotator.projects.store",
    "Workbench": "annotator.app.workbench",
    "build_app": "annotator.app.ui",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        target = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'annotator' has no attribute {name!r}") from None
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
