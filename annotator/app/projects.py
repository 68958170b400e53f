"""A session's open project: its images, saving every edit, history, progress, prefetch.

A session may open a project (``annotator.projects.store.Project``): a list of images
whose documents live in the project file. ``view.make_view`` calls ``save`` whenever the
shown image's document changed, before the View reports anything, so every edit the UI
shows is on disk; undo/redo then walk the project's persistent history instead of the
document's.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import astuple
from pathlib import Path

from annotator.annotations.document import AnnotationDocument
from annotator.app import images
from annotator.app.classes import forget as forget_classes
from annotator.app.context import Context
from annotator.app.state import COMPUTING, OpenProject, Session, ViewOptions, WorkbenchError
from annotator.app.text import plural
from annotator.formats.images import ImageError
from annotator.projects.library import ProjectNameError
from annotator.projects.store import ConflictError, ProjectError


def in_project(s: Session) -> bool:
    p = s.project
    return p is not None and p.doc is not None and s.doc is p.doc


def need_project(s: Session) -> OpenProject:
    if s.project is None:
        raise WorkbenchError("Open or create a project first (Project tab).")
    return s.project


def status_part(s: Session) -> str:
    return s.project.summary or f"project {s.project.name}"


def resume_state(s: Session | None) -> dict | None:
    """What the browser keeps to reopen this session's place after a reload/restart."""
    p = None if s is None else s.project
    return None if p is None else {"project": p.name, "image": p.image_id}


# -- opening and moving ------------------------------------------------------------------
def open_store(ctx: Context, name: str, create: bool):
    try:
        return ctx.projects.open(name, create=create)
    except (ProjectNameError, ProjectError) as e:
        raise WorkbenchError(str(e)) from None


def enter(ctx: Context, s: Session, name: str, store, image_id: int | None) -> int | None:
    """Make ``store`` the session's project with its saved view options; the image to show
    (``image_id``, else where it was left, else the first), or None for an empty project."""
    s.cancel.set()
    s.find_cancel.set()
    s.project = OpenProject(name=ctx.projects.path(name).stem, store=store)
    forget_classes(s)  # the project's own class list
    saved = store.get_state("view")
    if isinstance(saved, dict):
        with contextlib.suppress(TypeError, ValueError):
            s.view = ViewOptions(
                **{
                    k: type(getattr(ViewOptions(), k))(v)
                    for k, v in saved.items()
                    if k in ViewOptions.__dataclass_fields__
                }
            )
    s.project.saved_view = astuple(s.view)
    ids = [i.id for i in store.images()]
    target = next((i for i in (image_id, store.get_state("current_image")) if i in ids), ids[0] if ids else None)
    if target is None:
        images.clear_image(s)
    return target


def empty_message(s: Session) -> str:
    return f"Project {s.project.name} is empty: add images (upload several at once, or a server folder)."


def show_failed(s: Session, target: int, error: WorkbenchError) -> str:
    """The project stays open when its image cannot be shown (e.g. a server file moved)."""
    images.clear_image(s)
    s.project.image_id = target  # (no document: nothing is saved) next/previous go on from here
    return f"Opened project {s.project.name}, but: {error} Pick another image in the list."


def close(s: Session) -> str:
    """Back to single images (the project's work is all saved already)."""
    if s.project is None:
        raise WorkbenchError("No project is open.")
    name = s.project.name
    s.cancel.set()
    s.find_cancel.set()
    s.project = None
    forget_classes(s)
    images.clear_image(s)
    return f"Closed project {name}; everything in it was saved."


def show(ctx: Context, s: Session, image_id: int, encode: bool) -> str:
    """Show one image of the project with its saved masks (the embedding comes after)."""
    p = need_project(s)
    info = None
    try:
        info = p.store.image(int(image_id))
        image = p.store.load_pixels(info.id, max_pixels=ctx.limits.max_pixels)
        doc = p.store.load_document(info.id)
    except KeyError:
        raise WorkbenchError(f"Project {p.name} has no image {image_id}.") from None
    except (ImageError, ProjectError, OSError) as e:
        what = info.name if info is not None else f"image {image_id}"
        raise WorkbenchError(f"Cannot open {what}: {str(e).rstrip('.')}.") from None
    s.cancel.set()
    images.show_image(ctx, s, image, info.name, doc)
    p.image_id, p.doc, p.saved_version, p.rev = info.id, doc, doc.version, info.rev
    p.rows_key = None
    with contextlib.suppress(ProjectError, sqlite3.Error):
        p.store.set_state("current_image", info.id)  # where a restarted server resumes
    return f"{info.name} ({info.status}): {plural(len(doc), 'saved mask')}. " + ("" if encode else COMPUTING)


def step_target(s: Session, delta: int) -> int:
    """The next (``delta`` > 0) or previous image of the project, wrapping around."""
    p = need_project(s)
    ids = [i.id for i in p.store.images()]
    if not ids:
        raise WorkbenchError(f"Project {p.name} has no images yet: add some.")
    k = ids.index(p.image_id) + (1 if delta > 0 else -1) if p.image_id in ids else 0
    return ids[k % len(ids)]


def position_target(s: Session, position: int) -> int:
    """The image at ``position`` (0-based) in the progress list (a click on its row)."""
    ids = [i.id for i in need_project(s).store.images()]
    if not 0 <= int(position) < len(ids):
        raise WorkbenchError(f"There is no image {int(position) + 1} in this project.")
    return ids[int(position)]


def prefetch_next(ctx: Context, sid: str, s: Session | None) -> None:
    """Start embedding the image after the shown one (see ``Prefetcher``)."""
    p = s.project if s is not None else None
    if ctx.prefetcher is None or p is None:
        return
    ids = [i.id for i in p.store.images()]
    if len(ids) < 2 or p.image_id not in ids:
        return
    nxt = ids[(ids.index(p.image_id) + 1) % len(ids)]
    store = p.store
    ctx.prefetcher.request((str(store.path), nxt), lambda: store.load_pixels(nxt), owner=sid)


# -- adding images -------------------------------------------------------------------------
def read_uploads(paths, names=None) -> tuple[list, list, dict]:
    """The uploaded files' bytes and names; unreadable ones are named with the reason."""
    paths = [Path(p) for p in (paths or [])]
    if not paths:
        raise WorkbenchError("Choose one or more image files to add.")
    sources, labels, unread = [], [], {}
    for k, path in enumerate(paths):
        try:
            sources.append(path.read_bytes())
            labels.append(Path(names[k]).name if names else path.name)
        except OSError as e:
            unread[path.name] = str(e)
    return sources, labels, unread


def folder_images(ctx: Context, folder: str, recursive: bool) -> list[str]:
    """The images of a server folder, if the operator allowed it."""
    from annotator.amg.batch import find_images

    try:
        path = ctx.folders.check(folder)
        return [str(f) for f in find_images([path], recursive=recursive)]
    except (PermissionError, ImageError) as e:
        raise WorkbenchError(str(e)) from None


def add(s: Session, sources: list, names: list | None, unread: dict) -> tuple[str, list]:
    """Add images to the project; the message and the images added."""
    p = need_project(s)
    errors: dict = {}
    try:
        infos = p.store.add_images(sources, names=names, errors=errors)
    except (ProjectError, sqlite3.Error) as e:
        raise WorkbenchError(f"Could not add images to {p.name}: {e}") from None
    for source, why in errors.items():
        unread[names[sources.index(source)] if names else Path(source).name] = why
    skipped = "".join(f" Skipped {k}: {v}." for k, v in unread.items())
    p.rows_key = None
    if not infos:
        raise WorkbenchError("No image was added." + skipped)
    return (
        f"Added {plural(len(infos), 'image')} to project {p.name} ({len(p.store.images())} in all).{skipped}"
    ), infos


# -- status, export, progress -----------------------------------------------------------------
def set_done(s: Session, done: bool = True) -> str:
    """Mark the shown image done (or pending again)."""
    p = need_project(s)
    if p.doc is None:
        raise WorkbenchError("Open an image of the project first.")
    status = "done" if done else "pending"
    try:
        p.store.set_status(p.image_id, status)
    except (ProjectError, sqlite3.Error) as e:
        raise WorkbenchError(f"Could not save the status: {e}") from None
    p.rows_key = None
    return f"{s.name} marked {status}."


def is_done(s: Session | None) -> bool:
    p = None if s is None else s.project
    return p is not None and p.image_id is not None and p.store.image(p.image_id).status == "done"


def export(
    ctx: Context,
    s: Session,
    folder: Path,
    include_rejected: bool = False,
    fmt: str = "coco-rle",
    tolerance: float = 0.0,
) -> Path:
    """The whole project in ``folder``: one COCO file, or (YOLO, labelme, VOC) one zip with
    the images; read back and checked (``Project.export``). Class ids are the project's."""
    from annotator.formats.convert import FORMATS, ExportCheckError

    p = need_project(s)
    if fmt not in FORMATS:
        raise WorkbenchError(f"export format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    path = folder / (
        f"{p.name}_coco.json"
        if fmt == "coco-rle"
        else f"{p.name}_{fmt}.json"
        if fmt.startswith("coco")
        else f"{p.name}_{fmt}.zip"
    )
    try:
        p.store.export(path, fmt, tolerance=tolerance, include_rejected=include_rejected, model=ctx.info.model_tag)
    except (ProjectError, ExportCheckError, sqlite3.Error, OSError, ValueError, KeyError) as e:
        raise WorkbenchError(f"Could not export {p.name}: {e}") from None
    return path


def progress_rows(s: Session) -> list[list]:
    """The project's images: marker (▶ shown), number, name, status, masks, accepted."""
    p = s.project
    if p is None:
        return []
    infos = p.store.images()
    done = sum(i.status == "done" for i in infos)
    where = next(
        (f"image {k + 1}/{len(infos)} ({i.status})" for k, i in enumerate(infos) if i.id == p.image_id),
        plural(len(infos), "image"),
    )
    p.summary = f"project {p.name}: {where}, {done} done"
    return [
        ["▶" if i.id == p.image_id else "", k + 1, i.name, i.status, i.n_annotations, i.n_accepted]
        for k, i in enumerate(infos)
    ]


def progress_if_changed(s: Session) -> list[list] | None:
    """The progress list when it may have changed (image shown, saved revision), else None."""
    p = s.project
    if p is None:
        return None
    key = (p.image_id, p.rev)
    if key == p.rows_key:
        return None
    rows = progress_rows(s)
    p.rows_key = key
    return rows


# -- saving and history ----------------------------------------------------------------------
def save(s: Session) -> None:
    """Commit the shown image's document (and view options) if they changed since saved."""
    p = s.project
    if p is None:
        return
    view = astuple(s.view)
    if view != p.saved_view:
        with contextlib.suppress(ProjectError, sqlite3.Error):  # a preference, not work
            p.store.set_state("view", {k: getattr(s.view, k) for k in ViewOptions.__dataclass_fields__})
        p.saved_view = view
    if not in_project(s) or s.doc.version == p.saved_version:
        return
    try:
        p.rev = p.store.save(p.image_id, s.doc, base_rev=p.rev)
    except ConflictError as e:
        raise conflict(s, e, "please redo your last change.") from None
    except (ProjectError, sqlite3.Error, OSError, ValueError) as e:
        raise WorkbenchError(
            f"Could not save to project {p.name}: {e}. The last change is NOT saved; undo it or try again."
        ) from None
    p.saved_version = s.doc.version


def conflict(s: Session, e: ConflictError, then: str) -> WorkbenchError:
    """Another session saved this image since this one loaded it: show what is saved."""
    reload_document(s)
    return WorkbenchError(f"{e}. Showing the saved masks now; {then}")


def reload_document(s: Session, records: list | None = None) -> None:
    """Replace the shown document by the project's records (after undo/redo or a conflict),
    keeping the selection that still exists."""
    p = s.project
    old = s.doc
    if records is None:
        records = p.store.records(p.image_id)
    doc = AnnotationDocument.from_records(*old.size, records, image_id=p.image_id)
    keep = [i for i in old.selection if i in doc]
    if keep:
        doc.select(keep, "replace")
    doc.version = old.version + 1  # a new version: the canvas and table caches are stale
    s.doc = p.doc = doc
    p.saved_version, p.rev = doc.version, p.store.undo_state(p.image_id).rev
    if s.cursor is not None and s.cursor not in doc:
        s.cursor = None


def history_step(s: Session, forward: bool) -> str:
    """Undo (or redo) the shown image's last saved edit, from the project's history."""
    p = s.project
    state = p.store.undo_state(p.image_id)
    action = state.redo_action if forward else state.undo_action
    try:  # only from the revision this session shows: never over another session's edit
        records = (p.store.redo if forward else p.store.undo)(p.image_id, base_rev=p.rev)
    except ConflictError as e:
        raise conflict(s, e, f"{'redo' if forward else 'undo'} again if you still want to.") from None
    except (ProjectError, sqlite3.Error) as e:
        raise WorkbenchError(f"Could not {'redo' if forward else 'undo'}: {e}") from None
    if records is None:
        return "Nothing to redo." if forward else "Nothing to undo."
    reload_document(s, records)
    return f"{'Redid' if forward else 'Undid'}: {action} (saved)."
