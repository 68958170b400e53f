import numpy as np
import pytest

from annotator.models.checkpoints import load_sam
from annotator.models.predictor import SamSegmenter
from annotator.models.prompt import Prompt, click, remove_point, undo_last
from annotator.testing import TINY


@pytest.fixture(scope="module")
def seg_and_emb(tiny_checkpoint, truck):
    seg = SamSegmenter(load_sam(TINY, tiny_checkpoint), device="cpu")
    return seg, seg.embed(truck)


def test_first_point_offers_three_candidates_largest_first(seg_and_emb):
    seg, emb = seg_and_emb
    p = Prompt()
    click(p, seg, emb, "positive", 900, 600)
    cands = p.candidates()
    assert len(cands) == 3
    areas = [a for _, _, a in cands]
    assert areas == sorted(areas, reverse=True)
    # it starts on SAM's best-rated candidate
    assert p.score == pytest.approx(float(p.prediction.scores.max()))
    assert p.mask.shape == (1200, 1800)


def test_a_click_counts_the_candidates_sizes_only_when_asked(seg_and_emb, monkeypatch):
    """Showing SAM's best candidate needs no sizes; cycling and listing rank them by size."""
    seg, emb = seg_and_emb
    p = Prompt()
    click(p, seg, emb, "positive", 900, 600)
    counted = []
    real = type(p.prediction).areas
    monkeypatch.setattr(type(p.prediction), "areas", property(lambda self: counted.append(1) or real.fget(self)))
    best = int(np.argmax(p.prediction.scores))
    assert p.pick == best and p.mask is not None and p.score == pytest.approx(float(p.prediction.scores[best]))
    assert counted == []
    areas = p.prediction.areas
    counted.clear()
    assert p.order == [int(i) for i in np.argsort(-areas, kind="stable")]
    assert p.order[p.choice] == best and len(counted) == 1
    p.choose(2)
    assert p.pick == p.order[2] and np.array_equal(p.mask, p.prediction.mask(p.order[2]))
    assert len(counted) == 1  # counted once


def test_same_pixel_again_cycles_candidates(seg_and_emb):
    seg, emb = seg_and_emb
    p = Prompt()
    click(p, seg, emb, "positive", 900, 600)
    seen = [p.choice]
    for _ in range(3):
        msg = click(p, seg, emb, "positive", 901, 601)
        assert msg.startswith("candidate")
        seen.append(p.choice)
    assert len(p.points) == 1  # no duplicate points were added
    assert sorted(set(seen)) == [0, 1, 2] and seen[3] == seen[0]


def test_more_points_refine_with_previous_logits(seg_and_emb):
    seg, emb = seg_and_emb
    p = Prompt()
    click(p, seg, emb, "positive", 900, 600)
    chosen_logits = p.prediction.low_res_logits[p.order[p.choice]].copy()
    calls = []
    real = seg.predict_candidates  # what prompting calls (candidates upscaled when shown)

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)

    seg.predict_candidates = spy
    try:
        click(p, seg, emb, "negative", 1300, 800)
    finally:
        del seg.predict_candidates
    assert np.array_equal(calls[0]["mask_input"][0], chosen_logits)
    assert calls[0]["multimask_output"] is False
    assert p.labels == [1, 0] and len(p.candidates()) == 1


def test_two_click_box_combines_with_points(seg_and_emb):
    seg, emb = seg_and_emb
    p = Prompt()
    assert "first corner" in click(p, seg, emb, "box", 700, 875)
    assert p.prediction is None
    click(p, seg, emb, "box", 425, 600)
    assert p.box == (425, 600, 700, 875)
    click(p, seg, emb, "positive", 575, 750)
    assert p.record() == {"points": [[575.0, 750.0]], "labels": [1], "box": [425, 600, 700, 875]}
    assert p.mask is not None
    undo_last(p, seg, emb)
    assert p.points == [] and p.box is not None and p.mask is not None
    undo_last(p, seg, emb)
    assert p.empty and p.mask is None


def test_degenerate_box_is_refused_politely(seg_and_emb):
    seg, emb = seg_and_emb
    p = Prompt()
    click(p, seg, emb, "box", 100, 100)
    assert "must differ" in click(p, seg, emb, "box", 100.5, 300)
    assert p.box is None and p.corner is None


def test_removing_a_middle_point_re_predicts_from_the_others(seg_and_emb):
    seg, emb = seg_and_emb
    p = Prompt()
    for x, y, mode in ((900, 600, "positive"), (1300, 800, "negative"), (500, 700, "positive")):
        click(p, seg, emb, mode, x, y)
    remove_point(p, seg, emb, 1)
    assert p.points == [(900.0, 600.0), (500.0, 700.0)] and p.labels == [1, 1]
    # the same as predicting from scratch with the two points left (no stale logits)
    fresh = seg.predict(np.array(p.points), np.array(p.labels), multimask_output=False, embedding=emb)
    m = fresh.masks[0]
    assert (p.mask & m).sum() / max((p.mask | m).sum(), 1) > 0.99
    with pytest.raises(ValueError, match="no point 3"):
        remove_point(p, seg, emb, 2)
    remove_point(p, seg, emb, 0)
    remove_point(p, seg, emb, 0)
    assert p.empty and p.mask is None
