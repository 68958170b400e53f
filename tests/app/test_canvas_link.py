"""The browser canvas through the Workbench (no browser): its actions as the app's own calls,
and the frames that answer them (annotator.app.canvas_link)."""

import base64
import io

import numpy as np
import pytest
from conftest import IMAGES
from PIL import Image

from annotator.app import canvas_frames as cf
from annotator.app import canvas_link
from annotator.app.workbench import Workbench, WorkbenchError
from annotator.models.loading import load_segmenter

DOG = IMAGES / "dog.jpg"


@pytest.fixture(scope="module")
def wb(tiny_checkpoint):
    segmenter, info = load_segmenter("tiny", str(tiny_checkpoint), device="cpu")
    wb = Workbench(segmenter, info)
    wb.browser_canvas = True  # as build_app sets it: Views carry frames, no image is rendered
    return wb


class Browser:
    """What the page's canvas keeps and sends: numbered actions, re-sent until acknowledged."""

    def __init__(self, wb, sid):
        self.wb, self.sid, self.seq, self.pending, self.key, self.frame = wb, sid, 0, [], None, 0
        self.view = {"alpha": 0.5, "outlines": True, "only_selected": False, "coverage": False}

    def show(self, view) -> dict:
        f = view.frame()
        if f.get("image"):
            self.key = f["image"]["key"]
        self.frame = f["frame"]
        self.pending = [a for a in self.pending if a["seq"] > f["ack"]]
        return f

    def send(self, *actions, label="object", scale=None) -> tuple:
        for a in actions:
            self.seq += 1
            self.pending.append({**a, "seq": self.seq})
        message = {
            "kind": "actions",
            "have": {"image": self.key, "frame": self.frame},
            "view": self.view,
            "actions": list(self.pending),
        }
        if scale is not None:
            message["scale"] = scale
        view = self.wb.canvas_actions(self.sid, message, label)
        return view, self.show(view)


def opened(wb, sid) -> Browser:
    b = Browser(wb, sid)
    f = b.show(wb.open_image(sid, DOG))
    assert f["image"]["width"] == 800 and f["layers"]["reset"] and f["mode"] == "positive"
    assert wb.session(sid).sent_canvas_key is None  # nothing rendered on the server
    return b


def test_a_point_then_accept_gives_a_mask_in_the_layers_and_a_class(wb, sid):
    b = opened(wb, sid)
    view, f = b.send({"type": "point", "x": 300, "y": 300, "mode": "positive"})
    assert "positive point added" in view.message and f["ack"] == 1
    assert f["prompt"]["points"] == [[300.0, 300.0, 1]]
    s = wb.session(sid)
    cand = s.prompt.mask
    m = f["prompt"]["mask"]  # the candidate's bounding box (view = image pixels here)
    ys, xs = np.nonzero(cand)
    assert (m["x"], m["y"], m["w"], m["h"]) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)
    assert "layers" not in f  # no mask changed: no layer is sent again
    view, f = b.send({"type": "accept", "class_id": None}, label="dog")
    assert "Added mask 1 (dog)" in view.message
    (row,) = f["table"]
    assert row["label"] == "dog" and row["class_id"] == 1 and f["legend"][0]["count"] == 1
    assert [c["name"] for c in f["classes"]] == ["dog"]  # a typed label adds a class
    ids = cf.rgb_to_ids(cf.decode_data_url(f["layers"]["patches"][0]["src"]))
    p = f["layers"]["patches"][0]
    full = np.zeros((534, 800), np.uint32)
    full[p["y"] : p["y"] + p["h"], p["x"] : p["x"] + p["w"]] = ids
    assert np.array_equal(full == 1, s.doc[1].mask())  # the layer holds the accepted mask exactly
    assert f["prompt"]["points"] == [] and f["prompt"]["mask"] is None


def test_right_click_box_drag_and_removing_a_point(wb, sid):
    b = opened(wb, sid)
    b.send({"type": "point", "x": 300, "y": 300, "mode": "positive"})
    view, f = b.send({"type": "point", "x": 420, "y": 200, "mode": "negative"})
    assert "negative point added" in view.message and f["prompt"]["points"][1] == [420.0, 200.0, 0]
    view, f = b.send({"type": "box", "box": [480, 130, 670, 270]})
    assert "box set" in view.message and f["prompt"]["box"] == [480.0, 130.0, 670.0, 270.0]
    assert wb.session(sid).mode == "positive"  # a drag is a box in any point mode; the mode stays
    view, f = b.send({"type": "remove_point", "index": 0})
    assert "Removed point 1" in view.message and f["prompt"]["points"] == [[420.0, 200.0, 0]]
    assert f["prompt"]["box"] == [480.0, 130.0, 670.0, 270.0]


def test_the_candidate_comes_at_the_reported_scale_and_again_sharper_without_the_model(wb, sid):
    b = opened(wb, sid)  # dog.jpg: 800x534
    view, f = b.send({"type": "point", "x": 300, "y": 300, "mode": "positive"}, scale=0.25)
    m = f["prompt"]["mask"]
    assert (m["fw"], m["fh"]) == (200, 134)  # the screen shows a quarter of the image's pixels
    s = wb.session(sid)
    prediction = s.prompt.prediction
    full = s.prompt.mask_at(None)
    view, f = b.send({"type": "scale"}, scale=1.0)  # zoomed in: the same candidate, sharper
    m = f["prompt"]["mask"]
    assert (m["fw"], m["fh"]) == (800, 534) and s.prompt.prediction is prediction
    shown = np.zeros((534, 800), bool)
    png = Image.open(io.BytesIO(base64.b64decode(m["src"].split(",", 1)[1]))).convert("RGBA")
    shown[m["y"] : m["y"] + m["h"], m["x"] : m["x"] + m["w"]] = np.asarray(png)[..., 3] > 0
    assert np.array_equal(shown, full)  # at the image's scale it is the full-resolution mask
    view, f = b.send({"type": "select", "x": 5, "y": 5}, scale=1.0)
    assert "prompt" not in f  # nothing changed about it: not sent again


def test_box_mode_clicks_show_the_first_corner(wb, sid):
    b = opened(wb, sid)
    view, f = b.send({"type": "mode", "mode": "box"}, {"type": "point", "x": 100, "y": 120, "mode": "box"})
    assert f["prompt"]["corner"] == [100.0, 120.0] and f["mode"] == "box"
    view, f = b.send({"type": "point", "x": 300, "y": 320, "mode": "box"})
    assert f["prompt"]["corner"] is None and f["prompt"]["box"] == [100.0, 120.0, 300.0, 320.0]


def test_brush_and_eraser_strokes_are_one_undoable_edit_each(wb, sid):
    b = opened(wb, sid)
    s = wb.session(sid)
    mask = np.zeros((534, 800), bool)
    mask[200:300, 200:300] = True
    ann = s.doc.add(mask)
    b.send({"type": "select", "x": 250, "y": 250})
    assert s.doc.selection == {ann}
    stroke = {"points": [[300, 250], [400, 250]], "radius": 5, "erase": False}
    view, f = b.send({"type": "paint", "id": ann, "strokes": [stroke]})
    grown = s.doc[ann].area - 100 * 100
    drawn = 100 * 10 + np.pi * 25 / 2  # the stroke beyond the square: a band 10 px wide, a round end
    assert "Painted mask" in view.message and abs(grown - drawn) / drawn < 0.12
    assert f["layers"]["patches"] and not f["layers"]["reset"]
    erase = {"points": [[250, 190], [250, 310]], "radius": 5, "erase": True}
    b.send({"type": "paint", "id": ann, "strokes": [erase]})
    assert s.doc[ann].area < 100 * 100 + grown - 800  # a band 10 px wide across the square
    b.send({"type": "undo"}, {"type": "undo"})
    assert s.doc[ann].area == 100 * 100
    with pytest.raises(WorkbenchError, match="empty"):  # erasing everything: delete instead
        wb.paint(sid, ann, [{"points": [[250, 250]], "radius": 200, "erase": True}])
    assert s.doc[ann].area == 100 * 100


def test_view_options_ride_along_and_are_not_echoed(wb, sid):
    b = opened(wb, sid)
    s = wb.session(sid)
    b.view = {"alpha": 0.2, "outlines": False, "only_selected": True, "coverage": False}
    view, f = b.send({"type": "clear_prompt"})
    assert (s.view.alpha, s.view.outlines, s.view.only_selected) == (0.2, False, True)
    assert "view" not in f  # the browser has them already
    wb.set_view(sid, alpha=0.7)  # changed elsewhere (an API client, a project's own): sent
    f = wb.resend(sid).frame()
    assert f["view"]["alpha"] == 0.7


def test_accept_after_a_negative_mode_says_positive_and_refusals_keep_the_rest(wb, sid):
    b = opened(wb, sid)
    # a right click in negative mode adds a positive point; the mode stays negative
    view, f = b.send({"type": "mode", "mode": "negative"}, {"type": "point", "x": 300, "y": 300, "mode": "positive"})
    assert f["mode"] == "negative" and wb.session(sid).mode == "negative" and f["prompt"]["points"][0][2] == 1
    # a refused action (no candidate to cycle is fine; a point outside the image is refused)
    view, f = b.send({"type": "point", "x": 5000, "y": 10, "mode": "positive"}, {"type": "accept", "class_id": None})
    assert "outside the image" in view.message and "Added mask" in view.message
    assert f["ack"] == b.seq and f["mode"] == "positive"
    with pytest.raises(WorkbenchError, match="cannot read"):
        wb.canvas_actions(sid, {"kind": "actions", "have": {}, "actions": [{"seq": 99, "type": "format c:"}]})
    assert wb.session(sid).canvas.sent.last_action == b.seq  # nothing of it was applied


def test_the_crop_key_finds_only_a_live_sessions_image(wb, sid):
    b = opened(wb, sid)
    assert wb.canvas_image(b.key) is wb.session(sid).image
    assert wb.canvas_image("guess") is None
    wb.free(sid)
    assert wb.canvas_image(b.key) is None


def test_the_canvas_script_reaches_its_own_session_by_the_channel_its_frames_carry(wb, sid):
    """The direct path (``canvas_direct``, a server function outside Gradio's queue): the
    channel of a session's frames finds that session and no other; an unknown one finds none."""
    b = opened(wb, sid)
    other = opened(wb, sid + "-other")
    channel = b.show(wb.resend(sid))["channel"]
    assert channel and channel != other.show(wb.resend(sid + "-other"))["channel"]
    b.seq += 1
    point = {"type": "point", "x": 300, "y": 300, "mode": "positive", "seq": b.seq}
    message = {"kind": "actions", "have": {"image": b.key, "frame": b.frame}, "view": b.view, "actions": [point]}
    f = wb.canvas_direct({**message, "channel": channel, "label": "dog"})
    assert f["kind"] == "frame" and f["ack"] == b.seq and f["prompt"]["points"] == [[300.0, 300.0, 1]]
    assert "positive point added" in f["message"]
    assert wb.session(sid + "-other").prompt.empty  # the other session is untouched
    for wrong in ("guess", "", None, 7):
        assert wb.canvas_direct({**message, "channel": wrong}) is None
    assert wb.canvas_direct("not a message") is None
    # the page's sync afterwards: the same (acknowledged) actions change nothing and the page
    # shows what they said
    view = wb.canvas_actions(sid, message)
    assert "positive point added" in view.message and len(wb.session(sid).prompt.points) == 1
    # the label rides in the message: accepting through the direct path labels the mask
    b.seq += 1
    accept = {**message, "actions": [{"type": "accept", "class_id": None, "seq": b.seq}]}
    f = wb.canvas_direct({**accept, "channel": channel, "label": "dog"})
    assert "Added mask 1 (dog)" in f["message"] and f["table"][0]["label"] == "dog"
    # the page's event after it brings the rest of the page: the mask list has the new mask
    view = wb.canvas_actions(sid, accept)
    assert "Added mask 1 (dog)" in view.message and len(view.table) == 1 and "dog" in view.table[0]
    wb.free(sid)
    assert wb.canvas_direct({**message, "channel": channel}) is None  # a freed session: none


def test_a_session_freed_while_its_direct_call_starts_is_not_made_again(wb, sid, monkeypatch):
    """Freed between the channel's lookup and the call's work (the tab closed meanwhile):
    the call answers None and leaves no empty session behind under that id."""
    b = opened(wb, sid)
    channel = b.show(wb.resend(sid))["channel"]
    found = canvas_link.sid_for_channel

    def found_then_freed(sessions, ch):
        key = found(sessions, ch)
        wb.free(key)
        return key

    monkeypatch.setattr(canvas_link, "sid_for_channel", found_then_freed)
    b.seq += 1
    point = {"type": "point", "x": 300, "y": 300, "mode": "positive", "seq": b.seq}
    message = {"kind": "actions", "have": {"image": b.key, "frame": b.frame}, "view": b.view, "actions": [point]}
    assert wb.canvas_direct({**message, "channel": channel}) is None
    assert sid not in wb.sessions.keys()
