"""Clicks of many sessions on one model: decoded together, holding the model only to decode.

``DecodeBatcher.predict`` is ``segmenter.predict_candidates`` for one prompt. Prompts that
arrive while the model is busy queue up; whoever finds the model free takes every queued
prompt (up to ``max_batch``) and decodes them in one ``segmenter.predict_many`` call under the
model lock, then hands each caller its candidates. Nobody waits for a timer: alone, a click
is decoded at once; under load, a click waits for at most the batch in progress and then
rides in the next one instead of queueing behind every other click one by one. The masks
are upscaled by each caller afterwards, outside the lock (``LazyPrediction``).

``BatchedSegmenter`` wraps a segmenter so code written against ``predict_candidates`` (the
prompting module) goes through the batcher unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from annotator.models.predictor import PromptSpec


@dataclass
class _Request:
    spec: PromptSpec
    done: bool = False
    result: object = None
    error: BaseException | None = None


class DecodeBatcher:
    def __init__(self, segmenter, lock: contextlib.AbstractContextManager | None = None, max_batch: int = 16):
        """``segmenter``: has ``predict_many(list[PromptSpec])``; ``lock``: held around each
        decoder call (the app's model lock)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.segmenter = segmenter
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = False
        self.batch_sizes: list[int] = []  # sizes of the batches decoded (for tests and benchmarks)

    def predict(self, spec: PromptSpec):
        """``segmenter.predict_candidates`` for ``spec``, decoded with whatever else is queued.
        A bad prompt raises its own ``ValueError``; it never fails the others."""
        req = _Request(spec)
        with self._cond:
            self._queue.append(req)
        while True:
            with self._cond:
                while not req.done and self._busy:
                    self._cond.wait()
                if req.done:
                    return self._result(req)
                self._busy = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._busy = False
                    for r in batch:
                        r.done = True
                    self._cond.notify_all()

    def _run(self, batch: list[_Request]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            with self.lock:
                results = self.segmenter.predict_many([r.spec for r in batch])
            for r, res in zip(batch, results):
                r.result = res
        except Exception:  # noqa: BLE001 - retried one by one, so each caller gets its own error
            for r in batch:
                try:
                    with self.lock:
                        r.result = self.segmenter.predict_many([r.spec])[0]
                except Exception as e:  # noqa: BLE001 - handed to that prompt's caller
                    r.error = e

    @staticmethod
    def _result(req: _Request):
        if req.error is not None:
            raise req.error
        return req.result


class BatchedSegmenter:
    """``segmenter`` with ``predict_candidates`` (and ``predict``) going through a
    ``DecodeBatcher``; everything else is the segmenter's."""

    def __init__(self, segmenter, batcher: DecodeBatcher):
        self._segmenter = segmenter
        self.batcher = batcher

    def predict_candidates(
        self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True, *, embedding=None
    ):
        emb = embedding or self._segmenter.embedding
        if emb is None:
            raise RuntimeError("set an image first (set_image or embed)")
        return self.batcher.predict(PromptSpec(emb, point_coords, point_labels, box, mask_input, multimask_output))

    def predict(self, *args, **kwargs):
        lazy = self.predict_candidates(*args, **kwargs)
        from annotator.models.predictor import Prediction

        return Prediction(masks=lazy.masks, scores=lazy.scores, low_res_logits=lazy.low_res_logits)

    def __getattr__(self, name):
        return getattr(self._segmenter, name)
