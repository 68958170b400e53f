"""What a project stores, as Python values: image and category rows, undo states, and the
encoding of an annotation's record into a row (RLE counts apart, the rest as canonical JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImageInfo:
    """One image of the project with its progress."""

    id: int
    name: str
    path: str | None  # the server file, or None when the project holds the bytes
    sha256: str
    width: int
    height: int
    status: str  # "pending" or "done"
    position: int
    rev: int  # head of the undo log; pass back to ``save(base_rev=...)``
    n_annotations: int = 0
    n_accepted: int = 0
    prelabel: Any = None  # the batch run's settings, or None when not pre-labelled

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str | None = None
    color: str | None = None
    shortcut: int | None = None  # the class's key 1-9 in the app


@dataclass(frozen=True)
class Revision:
    rev: int
    action: str
    created_at: float


@dataclass(frozen=True)
class UndoState:
    """What the Undo / Redo buttons of one image should say (None: nothing to undo/redo)."""

    rev: int
    undo_action: str | None
    redo_action: str | None


@dataclass(frozen=True)
class SavedRows:
    """An image's stored annotation rows as of ``rev``, and the immutable ``Annotation``
    objects they were encoded from, so the next save re-encodes only what changed."""

    data_version: int
    rev: int
    rows: dict  # ann_id -> (counts, record JSON)
    objects: dict  # ann_id -> Annotation
    order: list


def canonical_json(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def annotations_of(records: Iterable[Mapping]) -> list:
    """``Annotation`` records (validated as the document validates them), in z-order."""
    from annotator.annotations.document import Annotation

    records = list(records)
    if any("z" in r for r in records):
        records.sort(key=lambda r: r.get("z", 0))
    out = []
    for k, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ValueError(f"annotation {k}: a record is a dict, got {type(rec).__name__}")
        try:
            out.append(Annotation.from_record(rec))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"annotation {rec.get('id', k)}: {e}") from None
    return out


def encode_row(ann, size: tuple[int, int]) -> tuple[str, str]:
    """(counts, every other field as canonical JSON) of one ``Annotation`` for this image."""
    if tuple(ann.size) != tuple(size):
        raise ValueError(
            f"annotation {ann.id} is {ann.size[0]}x{ann.size[1]} (h x w) but the image is {size[0]}x{size[1]}"
        )
    rec = ann.to_record()
    counts = rec.pop("counts")
    try:
        return counts, canonical_json(rec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"annotation {ann.id} cannot be stored as JSON: {e}") from None


def full_record(value: tuple[str, str] | None) -> str | None:
    """A stored (counts, record JSON) pair as one JSON record for the undo log."""
    if value is None:
        return None
    return canonical_json({**json.loads(value[1]), "counts": value[0]})


def split_full_record(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    rec = json.loads(text)
    counts = rec.pop("counts")
    return counts, canonical_json(rec)
