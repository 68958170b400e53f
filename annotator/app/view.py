"""From a session to what the page shows: the masks shown, the table, the status line, the
canvas, and the ``View`` every action returns.

The canvas and table are sent only when something they show changed since the session's
last View (``None`` then tells the UI to leave the component alone). The masks layer is
re-rendered only when the document, view options, filter or review cursor changed.
"""

from __future__ import annotations

import functools
from dataclasses import astuple

import numpy as np

from annotator.annotations import markers, render
from annotator.app import canvas_link, projects
from annotator.app.context import Context
from annotator.app.state import PREVIEW_COLOR_BASE, Session, View, ViewOptions, WorkbenchError
from annotator.app.text import fmt, plural


def shown(s: Session) -> list:
    """Annotations the filter keeps, in z-order (bottom first)."""
    return [a for a in s.doc.annotations if s.filter.keeps(a)] if s.doc is not None else []


def table_order(s: Session) -> list:
    return s.filter.sort(shown(s))


def table(s: Session) -> list[list]:
    sel = s.doc.selection if s.doc is not None else frozenset()
    rows = []
    for a in table_order(s):
        mark = (
            ("▶" if a.id == s.cursor else "") + ("●" if a.id in sel else "") + ("" if a.visible else " hidden")
        ).strip()
        rows.append(
            [mark, a.id, a.label or "", a.source, fmt(a.predicted_iou), fmt(a.stability_score), a.area, a.review]
        )
    return rows


def status(ctx: Context, s: Session) -> str:
    parts = [ctx.info.status]
    if s.project is not None:
        parts.append(projects.status_part(s))
    if s.image is None:
        parts.append("no image")
        return " · ".join(parts)
    h, w = s.image.shape[:2]
    parts.append(f"{s.name} {w}x{h}")
    if s.embedding is None:
        parts.append("embedding: not computed")
    else:
        parts.append(
            "embedding cached"
            if embedding_cached(ctx, s)
            else "embedding held by this session (evicted from the cache)"
        )
    if s.doc is not None:
        anns = s.doc.annotations
        counts = {r: sum(a.review == r for a in anns) for r in ("accepted", "pending", "rejected")}
        parts.append(
            f"{plural(len(anns), 'mask')} ({counts['accepted']} accepted, "
            f"{counts['pending']} pending, {counts['rejected']} rejected), "
            f"{len(s.doc.selection)} selected"
        )
    return " · ".join(parts)


def embedding_cached(ctx: Context, s: Session) -> bool:
    cache = getattr(ctx.segmenter, "cache", None)
    if cache is not None and hasattr(s.embedding, "key"):
        return s.embedding.key in cache
    return ctx.segmenter.is_cached(s.image)


def canvas(ctx: Context, s: Session) -> np.ndarray | None:
    """The canvas as it looks now (display pixels)."""
    if s.image is None:
        return None
    base = layer(ctx, s)
    p = s.prompt
    if p.prediction is None and not p.points and p.box is None and p.corner is None:
        return base
    return markers.draw_prompt(base, p, s.scale, s.view.alpha)


def _layer_key(s: Session) -> tuple:
    return (s.doc.version, astuple(s.view), astuple(s.filter), s.cursor, len(s.preview))


def _prompt_key(s: Session) -> tuple:
    p = s.prompt
    return (tuple(p.points), tuple(p.labels), p.box, p.corner, p.pick, id(p.prediction))


def layer(ctx: Context, s: Session) -> np.ndarray:
    """The masks layer (display pixels), re-rendered only when something it shows changed."""
    key = _layer_key(s)
    if key == s.layer_key and s.layer is not None:
        return s.layer
    if s.view.coverage:
        accepted = [a.rle for a in s.doc.annotations if a.review == "accepted"]
        covered = (
            render.label_map_from_rles(accepted, s.image.shape[:2]) != 0
            if accepted
            else np.zeros(s.image.shape[:2], bool)
        )
        full = markers.coverage_map(s.image, covered)
    else:
        full = _overlay(ctx, s)
    s.layer = markers.to_display(full, s.scale)
    s.layer_key = key
    return s.layer


def _overlay(ctx: Context, s: Session) -> np.ndarray:
    anns = shown(s)
    sel = set(s.doc.selection) | ({s.cursor} if s.cursor is not None else set())
    if s.view.only_selected:
        anns = [a for a in anns if a.id in sel]
    rles = [a.rle for a in anns] + list(s.preview)
    ids = [a.id for a in anns] + [PREVIEW_COLOR_BASE + k for k in range(len(s.preview))]
    return render.overlay(
        s.image,
        rles,
        alpha=s.view.alpha,
        colors=render.palette(ids),
        outlines=s.view.outlines,
        selected=[k for k, a in enumerate(anns) if a.id in sel],
        hidden=[k for k, a in enumerate(anns) if not a.visible],
        rejected=[k for k, a in enumerate(anns) if a.review == "rejected"],
        outline_width=max(1, round(1 / s.scale)),
        cache=ctx.renderer.cache,
    )


def coverage_text(s: Session) -> str:
    accepted = [a.rle for a in s.doc.annotations if a.review == "accepted"]
    if not accepted:
        return "Coverage: no accepted masks yet; everything is uncovered (magenta)."
    covered = render.label_map_from_rles(accepted, s.image.shape[:2]) != 0
    return f"Coverage: accepted masks cover {covered.mean():.1%} of the image; magenta is uncovered."


def set_options(
    s: Session,
    alpha: float | None = None,
    outlines: bool | None = None,
    only_selected: bool | None = None,
    coverage: bool | None = None,
) -> str:
    """Change the view options given (None: leave as is); says the coverage when it is on."""
    v = s.view
    if alpha is not None:
        if not 0.0 <= float(alpha) <= 1.0:
            raise WorkbenchError("alpha must be between 0 and 1")
        v.alpha = float(alpha)
    for name, value in (("outlines", outlines), ("only_selected", only_selected), ("coverage", coverage)):
        if value is not None:
            setattr(v, name, bool(value))
    return coverage_text(s) if v.coverage and s.doc is not None else ""


def make_view(ctx: Context, s: Session, message: str) -> View:
    """The View after an action: in a project the change is saved first, before anything
    reports success."""
    projects.save(s)
    if s.notice:
        message, s.notice = f"{s.notice} {message}".strip(), ""
    canvas_now = frame = None
    if ctx.browser_canvas:  # the browser draws: it gets what changed, nothing is rendered here
        frame = functools.partial(canvas_link.frame, s, message)
    elif s.image is not None:
        key = (_layer_key(s), _prompt_key(s))
        if key != s.sent_canvas_key:
            canvas_now = canvas(ctx, s)
            s.sent_canvas_key = key
    rows = None
    if s.doc is not None:
        key = (s.doc.version, astuple(s.filter), s.cursor)
        if key != s.sent_table_key:
            rows = table(s)
            s.sent_table_key = key
    cands = [
        (f"{pos + 1}: " + (f"IoU {score:.2f}" if score is not None else "no score") + f" · {area:,} px", pos)
        for pos, score, area in s.prompt.candidates()
    ]
    progress = projects.progress_if_changed(s)  # (first: it updates the status line's project part)
    return View(
        canvas=canvas_now,
        status=status(ctx, s),
        message=message,
        candidates=cands,
        candidate=s.prompt.choice if cands else None,
        table=rows,
        mode=s.mode,
        progress=progress,
        has_image=s.image is not None,
        frame=frame,
        options=ViewOptions(**vars(s.view)),
    )


def frame_after(s: Session, message: str):
    """After the canvas's direct call (``Workbench.canvas_direct``): the change saved first, as
    in ``make_view``, then only the canvas's frame (a callable taking the session lock). The
    status, table and progress are left to the page's event after it: still unsent, so that
    event's View carries them."""
    projects.save(s)
    return functools.partial(canvas_link.frame, s, message)


def forget_sent(s: Session) -> None:
    """The next View is complete (nothing left out as unchanged), e.g. for a reloaded page."""
    s.sent_canvas_key = s.sent_table_key = None
    canvas_link.forget(s)
    if s.project is not None:
        s.project.rows_key = None
