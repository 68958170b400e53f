"""What the browser canvas draws: label layers and their patches, image crops, table, actions
(annotator.app.canvas_frames)."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from annotator.annotations import render
from annotator.annotations.classes import ClassList
from annotator.annotations.document import AnnotationDocument
from annotator.app import canvas_frames as cd

H, W = 90, 120


def rect(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


class Browser:
    """What the canvas JS keeps: one id array per layer, patched by each frame."""

    def __init__(self):
        self.layers = []

    def apply(self, msg):
        if msg is None:
            return
        vh, vw = msg["view_height"], msg["view_width"]
        if msg["reset"]:
            self.layers = []
        while len(self.layers) < max(msg["count"], max((p["layer"] + 1 for p in msg["patches"]), default=0)):
            self.layers.append(np.zeros((vh, vw), np.uint32))
        for p in msg["patches"]:
            ids = cd.rgb_to_ids(cd.decode_data_url(p["src"]))
            assert ids.shape == (p["h"], p["w"])
            self.layers[p["layer"]][p["y"] : p["y"] + p["h"], p["x"] : p["x"] + p["w"]] = ids
        del self.layers[msg["count"] :]

    def topmost(self):
        out = np.zeros_like(self.layers[0]) if self.layers else None
        for lab in self.layers:  # layer 0 first, the last on top
            out = np.where(lab != 0, lab, out)
        return out


def expected_topmost(doc, view_hw):
    anns = doc.annotations
    lab = render.label_map_from_rles([a.rle for a in anns], doc.size)
    ids = np.array([0] + [a.id for a in anns], np.uint32)[lab]
    return cd.to_view(ids, view_hw)


def test_layers_keep_every_mask_whole_and_upper_masks_in_lower_layers():
    doc = AnnotationDocument(H, W)
    big = doc.add(rect(10, 10, 100, 80))
    inner = doc.add(rect(30, 30, 60, 60))
    side = doc.add(rect(105, 0, 120, 20))
    under = doc.add(rect(0, 0, 20, 20))
    doc.move(under, 0)  # bottom of the z-order, overlapping `big`
    layers = cd.stack_layers(doc.annotations, doc.size)
    where = {}
    for k, lab in enumerate(layers):
        for a in doc.annotations:
            n = int((lab == a.id).sum())
            if n:
                assert n == a.area, f"mask {a.id} is split across layers"
                where[a.id] = k
    assert set(where) == {big, inner, side, under}
    assert where[inner] > where[big] > where[under]  # drawn last = on top
    assert where[side] == 0


def test_patches_rebuild_exactly_what_a_fresh_render_shows_after_every_edit():
    doc = AnnotationDocument(H, W)
    sent, browser = cd.Sent(), Browser()
    view_hw = cd.view_size(doc.size)
    edits = [
        lambda: doc.add(rect(10, 10, 50, 50)),
        lambda: doc.add(rect(30, 30, 90, 70)),
        lambda: doc.add(rect(35, 35, 40, 40)),
        lambda: doc.bring_to_front(doc.ids[0]),
        lambda: doc.paint(doc.ids[-1], [{"points": [[5, 80], [110, 80]], "radius": 3}]),
        lambda: doc.delete(doc.ids[1]),
        lambda: doc.undo(),
        lambda: doc.delete(list(doc.ids)),
    ]
    for k, edit in enumerate([lambda: None] + edits):
        edit()
        msg = cd.layers_message(doc.annotations, doc.size, sent)
        browser.apply(msg)
        if len(doc):
            assert np.array_equal(browser.topmost(), expected_topmost(doc, view_hw)), f"after edit {k}"
        else:
            assert all(not lab.any() for lab in browser.layers)


def test_an_added_mask_sends_only_its_rectangle_and_no_change_sends_nothing():
    doc = AnnotationDocument(H, W)
    doc.add(rect(0, 0, 120, 90))
    sent = cd.Sent()
    first = cd.layers_message(doc.annotations, doc.size, sent)
    assert first["reset"] and first["patches"][0]["w"] == W
    assert cd.layers_message(doc.annotations, doc.size, sent) is None
    doc.add(rect(40, 30, 50, 45))
    msg = cd.layers_message(doc.annotations, doc.size, sent)
    assert not msg["reset"]
    for p in msg["patches"]:
        assert (p["x"], p["y"]) == (39, 29) and (p["w"], p["h"]) == (12, 17)
    doc.relabel(doc.ids, "person")  # labels and selection are table data, not pixels
    doc.select(doc.ids[:1])
    assert cd.layers_message(doc.annotations, doc.size, sent) is None


def test_each_layer_gets_a_patch_only_where_its_own_masks_changed():
    doc = AnnotationDocument(H, W)
    doc.add(rect(10, 10, 60, 60))
    doc.add(rect(20, 20, 40, 40))  # over the first: layer 1
    sent = cd.Sent()
    first = cd.layers_message(doc.annotations, doc.size, sent)
    # a new browser gets each layer around its own masks only
    assert [(p["layer"], p["x"], p["y"], p["w"], p["h"]) for p in first["patches"]] == [
        (0, 9, 9, 52, 52),
        (1, 19, 19, 22, 22),
    ]
    doc.add(rect(80, 10, 100, 30))  # beside them: layer 0, nothing above changes
    msg = cd.layers_message(doc.annotations, doc.size, sent)
    assert [(p["layer"], p["x"], p["y"], p["w"], p["h"]) for p in msg["patches"]] == [(0, 79, 9, 22, 22)]
    doc.delete(doc.ids[1])  # the upper one goes: layer 1 is dropped by the count, no patch
    msg = cd.layers_message(doc.annotations, doc.size, sent)
    assert msg["count"] == 1 and msg["patches"] == []


def test_each_preview_paints_only_the_new_masks_and_shows_the_same_as_a_fresh_render(monkeypatch):
    from annotator.annotations import rle as rle_utils

    masks = [rect(10, 10, 60, 60), rect(30, 30, 100, 80), rect(0, 0, 20, 20), rect(50, 5, 70, 85)]
    preview = [(1000 + k, rle_utils.encode(m)) for k, m in enumerate(masks)]
    sent, painted = cd.Sent(), []
    real = render.label_map_from_rles
    monkeypatch.setattr(
        render, "label_map_from_rles", lambda rles, shape: painted.append(len(rles)) or real(rles, shape)
    )
    shown = [cd.preview_message(sent, preview[:n], (H, W)) for n in (2, 4)]
    assert painted == [2, 2]  # the second preview painted the two new masks only
    for n, msg in zip((2, 4), shown, strict=True):
        ids = cd.rgb_to_ids(cd.decode_data_url(msg["src"]))
        lut = np.array([0, *(i for i, _ in preview[:n])], np.uint32)
        assert np.array_equal(ids, lut[real([r for _, r in preview[:n]], (H, W))]), f"{n} masks"
    cd.forget(sent)  # a new run (or a reloaded page) starts from an empty layer
    ids = cd.rgb_to_ids(cd.decode_data_url(cd.preview_message(sent, preview[2:3], (H, W))["src"]))
    assert set(np.unique(ids)) == {0, 1002}


def test_large_images_get_view_scale_layers_and_the_mask_stays_in_place():
    h, w = 3000, 4000
    doc = AnnotationDocument(h, w)
    doc.add(rect(1000, 600, 1400, 900, h, w))
    msg = cd.layers_message(doc.annotations, doc.size, cd.Sent())
    assert (msg["view_width"], msg["view_height"]) == (2048, 1536)
    patch = msg["patches"][0]
    ids = cd.rgb_to_ids(cd.decode_data_url(patch["src"]))
    ys, xs = np.nonzero(ids)
    xs, ys = xs + patch["x"], ys + patch["y"]  # the patch covers the mask, not the whole view
    assert abs(xs.min() - 1000 * 2048 / 4000) <= 1 and abs(xs.max() + 1 - 1400 * 2048 / 4000) <= 1
    assert abs(ys.min() - 600 * 1536 / 3000) <= 1 and abs(ys.max() + 1 - 900 * 1536 / 3000) <= 1


def test_the_candidate_is_sent_at_the_screens_scale_and_placed_over_the_whole_image():
    h, w = 3000, 4000
    assert cd.prompt_size((h, w), None) == (1536, 2048)  # no scale reported: the view size
    assert cd.prompt_size((h, w), 0.2) == (600, 800)
    assert cd.prompt_size((h, w), 3.0) == (1536, 2048)  # never above the view size
    mask = np.zeros((600, 800), bool)
    mask[150:300, 400:600] = True  # image pixels [2000, 3000) x [750, 1500)
    m = cd.mask_message(mask, (h, w))
    assert (m["fw"], m["fh"]) == (800, 600) and (m["x"], m["y"], m["w"], m["h"]) == (400, 150, 200, 150)
    png = cd.decode_data_url(m["src"])
    assert png.shape[:2] == (150, 200)  # the 200x150 box only, not a view-size picture
    full = np.zeros((h, w), bool)
    full[750:1500, 2000:3000] = True  # the same mask at the image's size: sampled to the view
    m = cd.mask_message(full, (h, w))
    assert (m["fw"], m["fh"]) == (2048, 1536)
    assert abs(m["x"] / m["fw"] - 0.5) < 1e-3 and abs(m["w"] / m["fw"] - 0.25) < 1e-3


def test_ids_survive_the_png_round_trip():
    ids = np.array([[0, 1, 255], [256, 65535, 70000]], np.uint32)
    assert np.array_equal(cd.rgb_to_ids(cd.decode_data_url(cd.ids_png_url(ids))), ids)


def test_full_resolution_crop_of_a_large_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    image[1000:1010, 2000:2010] = (255, 0, 0)
    crop = cd.crop_jpeg(image, 1990.4, 995, 2030, 1020.2)
    assert (crop["x"], crop["y"], crop["w"], crop["h"]) == (1990, 995, 40, 26)
    pixels = cd.decode_data_url(crop["src"])
    assert pixels.shape == (26, 40, 3)
    red = pixels[5:15, 10:20].astype(int)
    assert (red[2:-2, 2:-2, 0] > 200).all() and (red[2:-2, 2:-2, 1] < 80).all()
    small = cd.crop_jpeg(image, 0, 0, 4000, 3000, max_pixels=1_000_000)
    assert cd.decode_data_url(small["src"]).shape[0] * cd.decode_data_url(small["src"]).shape[1] <= 1_000_000
    with pytest.raises(ValueError, match="outside"):
        cd.crop_jpeg(image, 5000, 0, 6000, 10)


def test_image_message_downscales_only_large_images():
    small = cd.image_message(np.zeros((90, 120, 3), np.uint8), "k")
    assert (small["view_width"], small["width"]) == (120, 120)
    big = cd.image_message(np.zeros((1000, 5000, 3), np.uint8), "k")
    assert (big["view_width"], big["view_height"], big["width"]) == (2048, 410, 5000)
    assert cd.decode_data_url(big["src"]).shape == (410, 2048, 3)


def test_table_and_legend_use_class_colours_and_count_masks():
    classes = ClassList().add("person", color="#ff0000").add("car", color="#00ff00")
    doc = AnnotationDocument(H, W)
    a = doc.add(rect(0, 0, 10, 10), label="person")
    b = doc.add(rect(20, 0, 30, 10), label="person")
    c = doc.add(rect(40, 0, 50, 10), label="tree")
    d = doc.add(rect(60, 0, 70, 10))
    doc.select([b])
    rows = {r["id"]: r for r in cd.table_message(doc.annotations, doc.selection, classes)}
    assert rows[a]["color"] == rows[b]["color"] == "#ff0000" and rows[a]["class_id"] == 1
    assert rows[c]["color"] != rows[d]["color"] and rows[c]["class_id"] is None
    assert rows[b]["selected"] and not rows[a]["selected"]
    assert [(r["name"], r["count"]) for r in cd.legend(doc.annotations, classes)] == [
        ("person", 2),
        ("car", 0),
        ("tree", 1),
        ("(no class)", 1),
    ]


def test_candidate_mask_message_is_its_bounding_box():
    m = rect(30, 20, 61, 41)
    m[25:30, 40:45] = False  # a hole
    msg = cd.mask_message(m, color="#1e90ff")
    assert (msg["x"], msg["y"], msg["w"], msg["h"]) == (30, 20, 31, 21)
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(msg["src"].split(",", 1)[1]))).convert("RGBA"))
    assert rgba.shape == (21, 31, 4)
    assert np.array_equal(rgba[..., 3] == 255, m[20:41, 30:61])  # opaque exactly on the mask
    assert (rgba[m[20:41, 30:61]][:, :3] == (0x1E, 0x90, 0xFF)).all()  # in the prompt's colour
    assert cd.mask_message(np.zeros((H, W), bool)) is None
    thin = np.zeros((3000, 4000), bool)
    thin[1500, 100:3000] = True  # one pixel high: thinner than a view pixel row
    assert cd.mask_message(thin)["h"] >= 1


@pytest.mark.parametrize("shape", [(1, 1), (2, 8), (5, 9), (7, 17)])
def test_tinted_png_is_exact_at_any_width(shape):
    """One bit a pixel, rows padded to whole bytes: every width decodes to the mask."""
    mask = np.random.default_rng(sum(shape)).random(shape) > 0.5
    mask.flat[0] = True
    rgba = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(cd.tinted_png_url(mask, "#102030").split(",", 1)[1]))).convert("RGBA")
    )
    assert np.array_equal(rgba[..., 3] == 255, mask) and (rgba[..., 3][~mask] == 0).all()
    assert (rgba[mask][:, :3] == (0x10, 0x20, 0x30)).all()


def test_new_actions_skips_applied_ones_and_checks_input():
    sent = cd.Sent(image_key="img", last_action=2)
    msg = {
        "kind": "actions",
        "have": {"image": "img", "frame": 3},
        "actions": [
            {"seq": 2, "type": "point", "x": 1, "y": 2},
            {"seq": 4, "type": "box", "box": [9, 9, 1, 1]},
            {"seq": 3, "type": "point", "x": "5", "y": 6, "mode": "negative"},
        ],
    }
    got = cd.new_actions(msg, sent)
    assert [(a["seq"], a["type"]) for a in got] == [(3, "point"), (4, "box")]
    assert got[0]["mode"] == "negative" and got[0]["x"] == 5.0 and got[1]["box"] == [1.0, 1.0, 9.0, 9.0]
    assert sent.image_key == "img"
    assert cd.new_actions({"kind": "frame"}, sent) == []
    with pytest.raises(ValueError, match="unknown canvas action"):
        cd.new_actions({"kind": "actions", "actions": [{"seq": 9, "type": "rm -rf"}]}, sent)
    with pytest.raises(ValueError, match="finite"):
        cd.parse_action({"seq": 9, "type": "point", "x": float("nan"), "y": 1})
    with pytest.raises(ValueError, match="a point is one of"):
        cd.parse_action({"seq": 9, "type": "point", "x": 1, "y": 1, "mode": "select"})
    with pytest.raises(ValueError, match="a mode is one of"):
        cd.parse_action({"seq": 9, "type": "mode", "mode": "brush"})
    with pytest.raises(ValueError, match="strokes"):
        cd.parse_action({"seq": 9, "type": "paint", "id": 1, "strokes": "x"})
    cd.new_actions({"kind": "actions", "have": {"image": "img", "frame": 0}, "actions": []}, sent)
    assert sent.image_key is None  # a reloaded page gets everything again
    sent.image_key = "img"
    cd.new_actions(
        {"kind": "actions", "have": {"image": "img", "frame": 5}, "actions": [{"seq": 10, "type": "resync"}]}, sent
    )
    assert sent.image_key is None  # a browser that missed a frame asks for everything


def test_frame_sends_the_image_once_and_reports_acknowledged_actions():
    doc = AnnotationDocument(H, W)
    doc.add(rect(0, 0, 10, 10))
    sent = cd.Sent()
    image = np.zeros((H, W, 3), np.uint8)
    f1 = cd.frame(sent, image=image, image_key="a", doc=doc)
    assert f1["image"]["key"] == "a" and f1["layers"]["reset"] and f1["full"]
    sent.last_action = 7
    f2 = cd.frame(sent, image=image, image_key="a", doc=doc)
    assert "image" not in f2 and "layers" not in f2 and f2["ack"] == 7 and f2["frame"] == 2
    assert not f2["full"]
    f3 = cd.frame(sent, image=image, image_key="b", doc=doc)
    assert f3["image"]["key"] == "b" and f3["layers"]["reset"]
    assert cd.frame(sent, image=None, image_key=None)["image"] is None


def test_an_image_without_masks_sends_its_empty_layers_once():
    sent, image = cd.Sent(), np.zeros((H, W, 3), np.uint8)
    first = cd.frame(sent, image=image, image_key="a", doc=AnnotationDocument(H, W))
    assert first["layers"]["reset"] and first["layers"]["count"] == 0
    assert "layers" not in cd.frame(sent, image=image, image_key="a", doc=AnnotationDocument(H, W))


def test_view_options_are_checked_and_clamped():
    assert cd.parse_view({"alpha": 1.7, "outlines": 1, "only_selected": 0}) == {
        "alpha": 1.0,
        "outlines": True,
        "only_selected": False,
        "coverage": False,
    }
    assert cd.reported_view({"kind": "actions", "view": {"alpha": 0.2}})["alpha"] == 0.2
    assert cd.reported_view({"kind": "actions"}) is None
    with pytest.raises(ValueError, match="alpha"):
        cd.parse_view({"alpha": "lots"})


def test_a_candidate_given_at_the_view_size_is_placed_like_the_full_one():
    h, w = 3000, 4000
    full = rect(1000, 600, 1400, 900, h, w)
    view_hw = cd.view_size((h, w))
    small = cd.to_view(full, view_hw)
    a, b = cd.mask_message(full), cd.mask_message(small, (h, w))
    assert (a["x"], a["y"], a["w"], a["h"]) == (b["x"], b["y"], b["w"], b["h"])
