"""The session's class list: what a mask can be labelled as, with its colour and key.

In a project the list is the project's categories (ids are the COCO category ids of every
export); outside one it is the labels used in this session. A label typed for a mask that
no class has yet adds a class (free text still works).
"""

from __future__ import annotations

from annotator.annotations.classes import ClassList
from annotator.app.state import Session


def class_list(s: Session) -> ClassList:
    """The session's classes (read from the open project the first time)."""
    if s.classes is None:
        s.classes = s.project.store.classes() if s.project is not None else ClassList()
    return s.classes


def note_label(s: Session, label: str | None) -> None:
    """``label`` was given to a mask: make it a class if none has that name."""
    label = (label or "").strip()
    if not label or label in class_list(s):
        return
    if s.project is None:
        s.classes = s.classes.ensure(label)
        return
    # the stored list first: another session (or a save of labels) may have added classes
    stored = s.project.store.classes()
    if label not in stored:
        s.project.store.save_classes(stored.add(label))
        stored = s.project.store.classes()
    s.classes = stored


def forget(s: Session) -> None:
    """A project was opened or closed: the list is read again when next needed."""
    s.classes = None
