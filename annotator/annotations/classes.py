"""The project's class list: what a mask can be labelled as, its colour and its key.

A class has a stable integer id (the COCO ``category_id`` every export uses, so ids never
change when classes are renamed, recoloured or others are removed), a unique name, a colour
(``#rrggbb``) and optionally a shortcut key 1-9. A ``ClassList`` is immutable: every change
returns a new list, so a session can hold one and hand it to the browser without copies
going stale. Free-text labels still work: ``ensure(name)`` adds a class for a new name.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

SHORTCUTS = tuple(range(1, 10))
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def default_color(class_id: int) -> str:
    """A distinct, stable colour per id (hues a golden angle apart), as ``#rrggbb``."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` as an (r, g, b) tuple of ints."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@dataclass(frozen=True)
class ObjectClass:
    id: int
    name: str
    color: str
    shortcut: int | None = None

    def to_record(self) -> dict:
        return {"id": self.id, "name": self.name, "color": self.color, "shortcut": self.shortcut}


def _name(name) -> str:
    text = str(name).strip() if name is not None else ""
    if not text:
        raise ValueError("a class needs a name")
    return text


def _color(color) -> str:
    if not isinstance(color, str) or not _HEX.match(color):
        raise ValueError(f"a class colour is #rrggbb, got {color!r}")
    return color.lower()


def _shortcut(key) -> int | None:
    if key is None:
        return None
    try:
        k = int(key)
    except (TypeError, ValueError):
        raise ValueError(f"a shortcut is a key 1-9, got {key!r}") from None
    if k not in SHORTCUTS or str(k) != str(key).strip():
        raise ValueError(f"a shortcut is a key 1-9, got {key!r}")
    return k


class ClassList:
    """An ordered, immutable list of classes with unique ids, names and shortcuts."""

    def __init__(self, classes: Iterable[ObjectClass] = ()):
        items = tuple(classes)
        ids, names, keys = set(), set(), set()
        for c in items:
            if c.id in ids:
                raise ValueError(f"class id {c.id} appears twice")
            if c.name in names:
                raise ValueError(f"class name {c.name!r} appears twice")
            if c.shortcut is not None and c.shortcut in keys:
                raise ValueError(f"shortcut {c.shortcut} is used twice")
            ids.add(c.id), names.add(c.name), keys.add(c.shortcut)
        self._items = items

    # -- reading ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[ObjectClass]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other) -> bool:
        return isinstance(other, ClassList) and self._items == other._items

    def __repr__(self) -> str:
        return f"ClassList({list(self._items)!r})"

    def __contains__(self, name) -> bool:
        return self.by_name(name) is not None

    def by_name(self, name) -> ObjectClass | None:
        name = str(name).strip() if name is not None else ""
        return next((c for c in self._items if c.name == name), None)

    def by_id(self, class_id: int) -> ObjectClass | None:
        return next((c for c in self._items if c.id == class_id), None)

    def by_shortcut(self, key: int) -> ObjectClass | None:
        return next((c for c in self._items if c.shortcut == key), None)

    def color_of(self, label) -> str | None:
        """The colour of the class named ``label`` (None: no such class)."""
        c = self.by_name(label) if label is not None else None
        return c.color if c else None

    def _next_id(self) -> int:
        return max((c.id for c in self._items), default=0) + 1

    def _free_shortcut(self) -> int | None:
        used = {c.shortcut for c in self._items}
        return next((k for k in SHORTCUTS if k not in used), None)

    # -- changes (each returns a new list) --------------------------------------------------
    def add(
        self, name, *, color: str | None = None, shortcut: int | None | str = "auto", class_id: int | None = None
    ) -> ClassList:
        """A list with one more class; ``shortcut="auto"`` takes the first free key 1-9."""
        name = _name(name)
        if self.by_name(name):
            raise ValueError(f"there is already a class named {name!r}")
        cid = self._next_id() if class_id is None else int(class_id)
        if self.by_id(cid):
            raise ValueError(f"class id {cid} is taken")
        key = self._free_shortcut() if shortcut == "auto" else _shortcut(shortcut)
        if key is not None and self.by_shortcut(key):
            raise ValueError(f"shortcut {key} is taken by {self.by_shortcut(key).name!r}")
        color = default_color(cid) if color is None else _color(color)
        return ClassList((*self._items, ObjectClass(cid, name, color, key)))

    def ensure(self, name) -> ClassList:
        """This list if it has a class ``name``, else one with it added (a free-text label)."""
        return self if self.by_name(name) else self.add(name)

    def _replace(self, class_id: int, **changes) -> ClassList:
        old = self.by_id(class_id)
        if old is None:
            raise KeyError(f"no class with id {class_id}")
        new = replace(old, **changes)
        return ClassList(new if c.id == class_id else c for c in self._items)

    def rename(self, class_id: int, name) -> ClassList:
        name = _name(name)
        other = self.by_name(name)
        if other and other.id != class_id:
            raise ValueError(f"there is already a class named {name!r}")
        return self._replace(class_id, name=name)

    def recolor(self, class_id: int, color: str) -> ClassList:
        return self._replace(class_id, color=_color(color))

    def set_shortcut(self, class_id: int, key) -> ClassList:
        """Give a class key ``key`` (None: no key); a class that had that key loses it."""
        key = _shortcut(key)
        items = [
            replace(c, shortcut=None) if key is not None and c.shortcut == key and c.id != class_id else c
            for c in self._items
        ]
        return ClassList(items)._replace(class_id, shortcut=key)

    def remove(self, class_id: int) -> ClassList:
        if self.by_id(class_id) is None:
            raise KeyError(f"no class with id {class_id}")
        return ClassList(c for c in self._items if c.id != class_id)

    # -- records ---------------------------------------------------------------------------
    def to_records(self) -> list[dict]:
        return [c.to_record() for c in self._items]

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> ClassList:
        """From ``to_records()`` output (missing colours get the id's default)."""
        items = []
        for r in records:
            cid = int(r["id"])
            color = r.get("color")
            items.append(
                ObjectClass(
                    cid,
                    _name(r["name"]),
                    default_color(cid) if not color else _color(color),
                    _shortcut(r.get("shortcut")),
                )
            )
        return cls(items)

    def coco_categories(self) -> list[dict]:
        """COCO ``categories``: the class ids and names."""
        return [{"id": c.id, "name": c.name, "supercategory": ""} for c in self._items]
