"""Which server folders the app may read images from.

``FolderPolicy`` answers "may the app read images from this server folder?": only below
folders the operator allowed (``annotator serve --allow-folder DIR``), after resolving
symlinks and ``..``; none by default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ALLOW_FOLDER_ENV = "ANNOTATOR_ALLOW_FOLDERS"  # os.pathsep-separated, like PATH


class FolderPolicy:
    """Server folders the app may add images from: only below ``allowed`` (none by default)."""

    def __init__(self, allowed: Iterable[str | os.PathLike] = ()):
        self.allowed = tuple(dict.fromkeys(Path(a).expanduser().resolve() for a in allowed))

    @classmethod
    def from_env(cls, extra: Iterable[str | os.PathLike] = ()) -> FolderPolicy:
        env = [p for p in os.environ.get(ALLOW_FOLDER_ENV, "").split(os.pathsep) if p.strip()]
        return cls([*env, *extra])

    def __bool__(self) -> bool:
        return bool(self.allowed)

    def check(self, folder: str | os.PathLike) -> Path:
        """The folder, resolved (symlinks and ``..`` followed), if it lies below an allowed
        folder; otherwise ``PermissionError`` with a message for the user."""
        if not self.allowed:
            raise PermissionError(
                "Adding server folders is off; the operator can allow folders "
                "with `annotator serve --allow-folder DIR`. Upload the images instead."
            )
        text = str(folder or "").strip()
        if not text or "\0" in text:
            raise PermissionError("Type the path of a folder on the server.")
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.allowed[0] / path  # relative to the first allowed folder
        resolved = path.resolve()
        if not any(resolved == root or root in resolved.parents for root in self.allowed):
            raise PermissionError(
                f"{text} is not inside a folder the operator allowed (" + ", ".join(str(a) for a in self.allowed) + ")."
            )
        if not resolved.is_dir():
            raise PermissionError(f"{text} is not a folder on the server.")
        return resolved
