"""Clicks of several sessions decoded as one batch; segment everything yields to clicks."""

import threading
import time

import numpy as np
import pytest

from annotator.models.batching import BatchedSegmenter, DecodeBatcher
from annotator.models.lock import ModelLock
from annotator.models.predictor import PromptSpec, SamSegmenter
from annotator.testing import random_sam


class FakeSegmenter:
    """predict_many that records its batches; the first call blocks until released, so
    the test can queue prompts behind it."""

    def __init__(self):
        self.batches = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.in_lock = []

    def predict_many(self, specs):
        self.batches.append([s.point_coords for s in specs])
        self.entered.set()
        if len(self.batches) == 1:
            assert self.release.wait(10)
        if any(s.point_labels is not None and s.point_labels[0] == 7 for s in specs):
            raise ValueError("point labels must be 1 (object) or 0 (background)")
        return [("decoded", s.point_coords) for s in specs]


def spec(k, label=1):
    return PromptSpec(embedding=None, point_coords=k, point_labels=np.array([label]))


def start(fn, *args):
    out = {}

    def run():
        try:
            out["result"] = fn(*args)
        except Exception as e:  # noqa: BLE001 - checked by the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def wait_until(cond, timeout=10):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_clicks_arriving_while_the_model_is_busy_are_decoded_as_one_batch():
    seg = FakeSegmenter()
    batcher = DecodeBatcher(seg)
    first, out0 = start(batcher.predict, spec(0))
    assert seg.entered.wait(10)
    others = [start(batcher.predict, spec(k)) for k in (1, 2, 3)]
    wait_until(lambda: len(batcher._queue) == 3)
    seg.release.set()
    for t, _ in [(first, out0)] + others:
        t.join(10)
    assert seg.batches[0] == [0]
    assert sorted(seg.batches[1]) == [1, 2, 3]  # the three waiting clicks: one decoder call
    assert len(seg.batches) == 2
    assert out0["result"] == ("decoded", 0)
    assert [o["result"] for _, o in others] == [("decoded", k) for k in (1, 2, 3)]


def test_a_click_alone_is_decoded_at_once_and_max_batch_is_kept():
    seg = FakeSegmenter()
    seg.release.set()
    batcher = DecodeBatcher(seg, max_batch=2)
    assert batcher.predict(spec(5)) == ("decoded", 5)
    seg.release.clear()
    seg.batches.clear()
    first, _ = start(batcher.predict, spec(0))
    assert seg.entered.wait(10)
    others = [start(batcher.predict, spec(k)) for k in (1, 2, 3)]
    wait_until(lambda: len(batcher._queue) == 3)
    seg.release.set()
    for t, _ in [(first, None)] + others:
        t.join(10)
    assert [len(b) for b in seg.batches] == [1, 2, 1]
    assert all("result" in o for _, o in others)


def test_a_bad_click_fails_alone():
    seg = FakeSegmenter()
    batcher = DecodeBatcher(seg)
    first, _ = start(batcher.predict, spec(0))
    assert seg.entered.wait(10)
    good, out_good = start(batcher.predict, spec(1))
    bad, out_bad = start(batcher.predict, spec(2, label=7))
    wait_until(lambda: len(batcher._queue) == 2)
    seg.release.set()
    for t in (first, good, bad):
        t.join(10)
    assert out_good["result"] == ("decoded", 1)
    assert isinstance(out_bad["error"], ValueError) and "labels" in str(out_bad["error"])


def test_the_model_lock_is_held_for_the_decoder_call_only():
    lock = ModelLock()
    seg = FakeSegmenter()
    seg.release.set()
    held = []
    original = seg.predict_many
    seg.predict_many = lambda specs: held.append(lock.users_waiting()) or original(specs)
    batcher = DecodeBatcher(seg, lock)
    batcher.predict(spec(1))
    assert held == [1]  # inside the decoder call the lock is held (by this user call)
    assert lock.users_waiting() == 0  # and released after it


def test_batched_segmenter_gives_the_segmenters_candidates(truck, dog):
    seg = SamSegmenter(random_sam("tiny", seed=0), device="cpu")
    e_truck, e_dog = seg.embed(truck), seg.embed(dog)
    batched = BatchedSegmenter(seg, DecodeBatcher(seg, ModelLock()))
    for emb, pt in ((e_truck, [[900.0, 600]]), (e_dog, [[400.0, 260]])):
        ref = seg.predict(np.array(pt), np.array([1]), embedding=emb)
        got = batched.predict_candidates(np.array(pt), np.array([1]), embedding=emb)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
        assert (got.masks == ref.masks).mean() > 0.999
    assert batched.transform is seg.transform  # everything else is the segmenter's


def test_segment_everything_yields_to_a_waiting_click():
    """With ``ModelLock.yielding()``, the next model call of a long job waits while a user
    call holds or waits for the model."""
    lock = ModelLock()
    order = []
    job = lock.yielding()
    click_in = threading.Event()
    click_go = threading.Event()

    def click():
        with lock:
            click_in.set()
            assert click_go.wait(10)
            order.append("click")

    with job:
        order.append("batch 1")
        t = threading.Thread(target=click)
        t.start()
        wait_until(lambda: lock.users_waiting() == 1)
    assert click_in.wait(10)  # the click got the model between the job's calls

    def next_batch():
        with job:
            order.append("batch 2")

    t2 = threading.Thread(target=next_batch)
    t2.start()
    time.sleep(0.2)
    assert order == ["batch 1"]  # batch 2 waits for the click
    click_go.set()
    t.join(10)
    t2.join(10)
    assert order == ["batch 1", "click", "batch 2"]


@pytest.mark.parametrize("bad", [0, -1])
def test_max_batch_must_be_positive(bad):
    with pytest.raises(ValueError):
        DecodeBatcher(FakeSegmenter(), max_batch=bad)
