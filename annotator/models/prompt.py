"""The interactive prompt: points, a two-click box, SAM's candidates, refinement, cycling.

One ``Prompt`` per image being annotated. Clicks come in as image pixels; each changes the
prompt and re-runs the segmenter on the cached embedding:

- the first point alone is ambiguous, so SAM returns 3 candidates (usually whole / part /
  sub-part), offered largest first; clicking the same pixel again cycles through them;
- further points and a box refine: the chosen candidate's low-res logits are fed back as
  ``mask_input`` and SAM returns its single best mask;
- a box takes two clicks (opposite corners); points and the box combine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from annotator.models.predictor import Prediction


def _areas(pred: Prediction) -> np.ndarray:
    """Pixel counts of the candidates (a lazy prediction counts them without upscaling)."""
    areas = getattr(pred, "areas", None)
    return areas if areas is not None else pred.masks.reshape(len(pred.masks), -1).sum(1)


SAME_PIXEL = 3.0  # clicks closer than this (image pixels) count as "the same pixel again"


@dataclass
class Prompt:
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    corner: tuple[float, float] | None = None  # first corner of a box being drawn
    prediction: Prediction | None = None
    pick: int = 0  # the candidate shown: an index into ``prediction``
    # ``order``, once counted
    _order: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def order(self) -> list[int]:
        """Candidate indices, largest mask first. Counted on first use, not at the click: a
        click shows SAM's best candidate, and only cycling or listing the candidates needs
        their sizes (counting them can cost as much as a third of the decoding)."""
        if self._order is None:
            areas = _areas(self.prediction) if self.prediction is not None else np.zeros(0)
            self._order = [int(i) for i in np.argsort(-areas, kind="stable")]
        return self._order

    @property
    def choice(self) -> int:
        """The shown candidate's position in ``order``."""
        return self.order.index(self.pick) if self.prediction is not None else 0

    @choice.setter
    def choice(self, position: int) -> None:
        self.pick = self.order[position]

    def copy(self) -> Prompt:
        """A copy to go back to (the prediction is shared: it is never changed in place)."""
        out = replace(self, points=list(self.points), labels=list(self.labels))
        out._order = self._order
        return out

    def forget(self) -> None:
        """Drop the prediction (the prompt changed; it is predicted again from scratch)."""
        self.prediction, self.pick, self._order = None, 0, None

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None

    @property
    def mask(self) -> np.ndarray | None:
        """The chosen candidate's full-resolution mask."""
        return self.mask_at(None)

    def mask_at(self, size_hw: tuple[int, int] | None) -> np.ndarray | None:
        """The chosen candidate's mask at ``size_hw`` (the canvas's; None: the image's). A
        lazy prediction upscales just this candidate, straight to that size."""
        if self.prediction is None:
            return None
        i = self.pick
        if hasattr(self.prediction, "mask"):
            return self.prediction.mask(i, size_hw)
        full = self.prediction.masks[i]
        if size_hw is None or full.shape == tuple(size_hw):
            return full
        h, w = size_hw
        return cv2.resize(full.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

    @property
    def score(self) -> float | None:
        if self.prediction is None:
            return None
        s = float(self.prediction.scores[self.pick])
        return s if np.isfinite(s) else None

    def candidates(self) -> list[tuple[int, float | None, int]]:
        """(position, predicted IoU or None, area) for each candidate, in offered order."""
        if self.prediction is None:
            return []
        out = []
        areas = _areas(self.prediction)
        for pos, i in enumerate(self.order):
            s = float(self.prediction.scores[i])
            out.append((pos, s if np.isfinite(s) else None, int(areas[i])))
        return out

    def choose(self, position: int) -> None:
        if not 0 <= position < len(self.order):
            raise ValueError(f"there are {len(self.order)} candidates; {position + 1} does not exist")
        self.choice = position

    def record(self) -> dict:
        """The prompts, as stored with an accepted mask."""
        rec = {"points": [list(p) for p in self.points], "labels": list(self.labels)}
        if self.box is not None:
            rec["box"] = list(self.box)
        return rec


def click(prompt: Prompt, segmenter, embedding, mode: str, x: float, y: float) -> str:
    """Apply one click in ``mode`` ("positive", "negative" or "box") and re-predict.
    Returns a short description of what happened, for the status line."""
    x, y = float(x), float(y)
    if mode == "box":
        if prompt.corner is None:
            prompt.corner = (x, y)
            return "box: first corner set, click the opposite corner"
        (x0, y0), prompt.corner = prompt.corner, None
        box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            return "box: the two corners must differ; click the first corner again"
        prompt.box = box
        _predict(prompt, segmenter, embedding, refine=False)
        return "box set"
    if mode not in ("positive", "negative"):
        raise ValueError(f"unknown prompt mode {mode!r}")
    label = 1 if mode == "positive" else 0
    if (
        prompt.prediction is not None
        and len(prompt.points) == 1
        and prompt.box is None
        and label == prompt.labels[0]
        and len(prompt.prediction.scores) > 1
        and np.hypot(x - prompt.points[0][0], y - prompt.points[0][1]) < SAME_PIXEL
    ):
        prompt.choice = (prompt.choice + 1) % len(prompt.order)
        return f"candidate {prompt.choice + 1} of {len(prompt.order)}"
    prompt.points.append((x, y))
    prompt.labels.append(label)
    _predict(prompt, segmenter, embedding, refine=prompt.prediction is not None)
    return f"{'positive' if label else 'negative'} point added"


def undo_last(prompt: Prompt, segmenter, embedding) -> None:
    """Remove the last point (or the box if no points); re-predict from scratch."""
    if prompt.corner is not None:
        prompt.corner = None
        return
    if prompt.points:
        prompt.points.pop()
        prompt.labels.pop()
    elif prompt.box is not None:
        prompt.box = None
    prompt.forget()
    if not prompt.empty:
        _predict(prompt, segmenter, embedding, refine=False)


def remove_point(prompt: Prompt, segmenter, embedding, index: int) -> None:
    """Remove point ``index`` (a click on it in the canvas); re-predict from scratch."""
    if not 0 <= index < len(prompt.points):
        raise ValueError(f"the prompt has {len(prompt.points)} points; there is no point {index + 1}")
    del prompt.points[index], prompt.labels[index]
    prompt.forget()
    if not prompt.empty:
        _predict(prompt, segmenter, embedding, refine=False)


def _predict(prompt: Prompt, segmenter, embedding, refine: bool) -> None:
    single_point = len(prompt.points) == 1 and prompt.box is None
    mask_input = None
    if refine and prompt.prediction is not None and prompt.prediction.low_res_logits is not None:
        mask_input = prompt.prediction.low_res_logits[prompt.pick][None]
    # candidates upscaled only when shown or accepted, where the segmenter offers it
    predict = getattr(segmenter, "predict_candidates", segmenter.predict)
    pred = predict(
        np.array(prompt.points) if prompt.points else None,
        np.array(prompt.labels) if prompt.points else None,
        box=np.array(prompt.box) if prompt.box is not None else None,
        mask_input=mask_input,
        multimask_output=single_point,
        embedding=embedding,
    )
    # start on the candidate SAM rates best; repeated clicks then cycle by size
    prompt.forget()
    prompt.prediction, prompt.pick = pred, int(pred.best())
