"""What an action needs before it runs; each failed check is a ``WorkbenchError`` that says
what to do, raised before anything changes."""

from __future__ import annotations

from annotator.app.state import Session, WorkbenchError


def need_image(s: Session) -> None:
    if s.image is None:
        raise WorkbenchError("Upload an image first (or pick an example).")


def need_embedding(s: Session) -> None:
    if s.embedding is None:
        raise WorkbenchError("The image embedding is still being computed; try again in a moment.")


def need_selection(s: Session, n: int, what: str) -> list[int]:
    need_image(s)
    ids = s.doc.selected()
    if len(ids) < n:
        need = "at least two masks" if n == 2 else "a mask"
        raise WorkbenchError(f"Select {need} to {what} (Select mode: click masks, or click their rows in the table).")
    return ids


def targets(s: Session, what: str) -> list[int]:
    """The selection, or the mask under review when nothing is selected."""
    need_image(s)
    ids = s.doc.selected()
    if ids:
        return ids
    if s.cursor is not None and s.cursor in s.doc:
        return [s.cursor]
    raise WorkbenchError(f"Select masks to {what} first.")


def check_mode(mode: str, modes: tuple[str, ...]) -> None:
    if mode not in modes:
        raise WorkbenchError(f"mode must be one of {', '.join(modes)}; got {mode!r}")
