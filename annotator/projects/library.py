"""What the app needs around ``annotator.projects.store``: where project files live, which server
folders images may be added from, and a background prefetch of the next image's embedding.

``ProjectLibrary`` maps a project *name* (what a user types) to one file in the operator's
projects folder; a name can never point outside it. It keeps one ``Project`` per file open
for the server's life (a ``Project`` is thread-safe), so all sessions share one connection.

``FolderPolicy`` answers "may the app read images from this server folder?": only below
folders the operator allowed (``annotator serve --allow-folder DIR``), after resolving
symlinks and ``..``; none by default.

``Prefetcher`` runs one job at a time on a daemon thread: load the next image and embed it
into the segmenter's cache while the user looks at the current one. Its encoder call takes
the ``ModelLock`` only when no user call holds or waits for it, so a user's click waits at
most one encoder call; a newer request replaces a pending one, and ``cancel`` drops
whatever has not started its encoder call yet.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Callable, Iterable

from annotator.projects.store import PROJECT_SUFFIX, Project, ProjectError

PROJECTS_DIR_ENV = "ANNOTATOR_PROJECTS_DIR"
ALLOW_FOLDER_ENV = "ANNOTATOR_ALLOW_FOLDERS"  # os.pathsep-separated, like PATH
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
            "'.', '-' or '_', starting with a letter or digit (no '/', no '..').")
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
        return sorted(p.name[: -len(PROJECT_SUFFIX)] for p in self.root.glob("*" + PROJECT_SUFFIX)
                      if p.is_file() and _NAME.fullmatch(p.name[: -len(PROJECT_SUFFIX)]))

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


class FolderPolicy:
    """Server folders the app may add images from: only below ``allowed`` (none by default)."""

    def __init__(self, allowed: Iterable[str | os.PathLike] = ()):
        self.allowed = tuple(dict.fromkeys(Path(a).expanduser().resolve() for a in allowed))

    @classmethod
    def from_env(cls, extra: Iterable[str | os.PathLike] = ()) -> "FolderPolicy":
        env = [p for p in os.environ.get(ALLOW_FOLDER_ENV, "").split(os.pathsep) if p.strip()]
        return cls([*env, *extra])

    def __bool__(self) -> bool:
        return bool(self.allowed)

    def check(self, folder: str | os.PathLike) -> Path:
        """The folder, resolved (symlinks and ``..`` followed), if it lies below an allowed
        folder; otherwise ``PermissionError`` with a message for the user."""
        if not self.allowed:
            raise PermissionError("Adding server folders is off; the operator can allow folders "
                                  "with `annotator serve --allow-folder DIR`. Upload the images instead.")
        text = str(folder or "").strip()
        if not text or "\0" in text:
            raise PermissionError("Type the path of a folder on the server.")
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.allowed[0] / path  # relative to the first allowed folder
        resolved = path.resolve()
        if not any(resolved == root or root in resolved.parents for root in self.allowed):
            raise PermissionError(f"{text} is not inside a folder the operator allowed ("
                                  + ", ".join(str(a) for a in self.allowed) + ").")
        if not resolved.is_dir():
            raise PermissionError(f"{text} is not a folder on the server.")
        return resolved


class ModelLock:
    """One model, one call at a time; user calls (``with lock:``) go before background work
    (``with lock.background():``), which waits until no user call holds or waits for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._users = 0  # user calls holding or waiting for the lock

    def __enter__(self) -> "ModelLock":
        with self._cond:
            self._users += 1
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
        with self._cond:
            self._users -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def background(self):
        with self._cond:
            self._cond.wait_for(lambda: self._users == 0)
        with self._lock:
            yield

    def users_waiting(self) -> int:
        """User calls holding or waiting for the model now."""
        with self._cond:
            return self._users


class Prefetcher:
    """Embeds one image at a time in the background (see the module docstring).

    ``request(key, load)``: ``load()`` returns the image (H, W, 3) to embed; ``key`` names the
    job (e.g. project path and image id). ``embed(image)`` runs under ``lock.background()``."""

    def __init__(self, embed: Callable, lock: ModelLock):
        self._embed = embed
        self._model_lock = lock
        self._cond = threading.Condition()
        self._pending: tuple[object, Callable] | None = None
        self._running: object | None = None
        self._generation = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.done: list[object] = []  # keys embedded, most recent last (a few, for tests and status)
        self.errors: dict[object, str] = {}

    def request(self, key, load: Callable) -> None:
        with self._cond:
            if self._closed:
                return
            self._generation += 1
            self._pending = (key, load)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="annotator-prefetch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self) -> None:
        """Drop the pending job, and the running one unless its encoder call has started."""
        with self._cond:
            self._generation += 1
            self._pending = None
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._generation += 1
            self._pending = None
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is pending or running (for tests); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and self._running is None, timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                (key, load), self._pending = self._pending, None
                self._running, generation = key, self._generation
            try:
                self._run(key, load, generation)
            except Exception as e:  # a prefetch failing only means the user waits later
                self.errors[key] = str(e)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _current(self, generation: int) -> bool:
        with self._cond:
            return generation == self._generation and not self._closed

    def _run(self, key, load: Callable, generation: int) -> None:
        if not self._current(generation):
            return
        image = load()
        with self._model_lock.background():
            if not self._current(generation):  # cancelled or superseded while we waited
                return
            self._embed(image)
        self.done = (self.done + [key])[-8:]
