"""Embedding the next image of a project in the background.

``Prefetcher`` runs one job at a time on a daemon thread: load the next image and embed it
into the segmenter's cache while the user looks at the current one. Its encoder call takes
the model lock (``annotator.models.lock.ModelLock``) only when no user call holds or waits
for it, so a user's click waits at most one encoder call; a newer request replaces a pending
one, and ``cancel`` drops whatever has not started its encoder call yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Prefetcher:
    """Embeds one image at a time in the background (see the module docstring).

    ``request(key, load)``: ``load()`` returns the image (H, W, 3) to embed; ``key`` names the
    job (e.g. project path and image id). ``embed(image)`` runs under ``lock.background()``."""

    def __init__(self, embed: Callable, lock):
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
