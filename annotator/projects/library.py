"""Where project files live: project names to files in the operator's projects folder.

``ProjectLibrary`` maps a project *name* (what a user types) to one file in the operator's
projects folder; a name can never point outside it. It keeps one ``Project`` per file open
for the server's life (a ``Project`` is thread-safe), so all sessions share one connection.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from annotator.projects.store import PROJECT_SUFFIX, Project, ProjectError

PROJECTS_DIR_ENV = "ANNOTATOR_PROJECTS_DIR"
# letters, digits, space, dot, dash, underscore; starts with a letter or digit; no "..":
# such a name is one plain file name on every OS, never a path
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


class ProjectNameError(ValueError):
    """A project name that is not allowed; the message says what is."""


def default_projects_dir() -> Path:
    """``$ANNOTATOR_PROJECTS_DIR``, else ``$XDG_DATA_HOME/annotator/projects`` (default
    ``~/.local/share/annotator/projects``)."""
    env = os.environ.get(PROJECTS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "annotator" / "projects"


def check_project_name(name: str) -> str:
    """The name, stripped, if it is a valid project name; otherwise ``ProjectNameError``."""
    name = str(name or "").strip()
    if name.endswith(PROJECT_SUFFIX):
        name = name[: -len(PROJECT_SUFFIX)]
    if not name:
        raise ProjectNameError("Type a project name (letters, digits, space, '.', '-', '_').")
    if not _NAME.fullmatch(name) or ".." in name or name.endswith((".", " ")):
        raise ProjectNameError(
            f"{name[:80]!r} is not a valid project name: use up to 64 letters, digits, spaces, "
            "'.', '-' or '_', starting with a letter or digit (no '/', no '..')."
        )
    return name


class ProjectLibrary:
    """The project files of one folder, by name; opened projects stay open and are shared."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_projects_dir()
        self._open: dict[str, Project] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        name = check_project_name(name)
        root = self.root.resolve()
        path = (root / (name + PROJECT_SUFFIX)).resolve()
        if path.parent != root:  # belt and braces: the pattern already rules this out
            raise ProjectNameError(f"{name!r} would leave the projects folder")
        return path

    def names(self) -> list[str]:
        """Existing projects, by name."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name[: -len(PROJECT_SUFFIX)]
            for p in self.root.glob("*" + PROJECT_SUFFIX)
            if p.is_file() and _NAME.fullmatch(p.name[: -len(PROJECT_SUFFIX)])
        )

    def open(self, name: str, *, create: bool = True) -> Project:
        """The project called ``name`` (created, with the projects folder, when missing and
        ``create``)."""
        name = check_project_name(name)
        path = self.path(name)
        with self._lock:
            project = self._open.get(name)
            if project is not None:
                return project
            if not path.is_file():
                if not create:
                    raise ProjectError(f"there is no project called {name!r}")
                try:
                    self.root.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise ProjectError(f"cannot create the projects folder {self.root}: {e}") from None
            project = Project(path, create=create)
            self._open[name] = project
            return project

    def close(self) -> None:
        with self._lock:
            for project in self._open.values():
                project.close()
            self._open.clear()
