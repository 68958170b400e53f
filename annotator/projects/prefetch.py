"""Embedding the next image of a project in the background.

``Prefetcher`` runs one job at a time on a daemon thread: load the next image and embed it
into the segmenter's cache while the user looks at the current one. Its encoder call takes
the model lock (``annotator.models.lock.ModelLock``) only when no user call holds or waits
for it, so a user's click waits at most one encoder call. Jobs are per session: a session's
newer request replaces its own pending one (never another session's), a bounded number wait
in all, and ``cancel(owner)`` drops what of that session's has not started its encoder call
yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Job:
    __slots__ = ("owner", "key", "load", "dropped")

    def __init__(self, owner, key, load: Callable):
        self.owner, self.key, self.load, self.dropped = owner, key, load, False


class Prefetcher:
    """Embeds images in the background, one at a time (see the module docstring).

    ``request(key, load, owner=sid)``: ``load()`` returns the image (H, W, 3) to embed; ``key``
    names the job (e.g. project path and image id); ``owner`` is whose it is (a session).
    Each owner has at most one job waiting: its newer request replaces its older one, never
    another owner's. At most ``max_pending`` owners wait at once (the oldest request is
    dropped beyond that), and ``cancel(owner)`` drops an owner's job (when it opens its own
    image, or its session is freed). Jobs run in request order; ``embed(image)`` runs under
    ``lock.background()``."""

    def __init__(self, embed: Callable, lock, *, max_pending: int = 8):
        self._embed = embed
        self._model_lock = lock
        self.max_pending = max(1, int(max_pending))
        self._cond = threading.Condition()
        self._pending: dict[object, _Job] = {}  # owner -> its job, oldest request first
        self._running: _Job | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.done: list[object] = []  # keys embedded, most recent last (a few, for tests and status)
        self.errors: dict[object, str] = {}  # the last few failures, by key

    def request(self, key, load: Callable, owner=None) -> None:
        with self._cond:
            if self._closed:
                return
            self._drop(owner)
            self._pending[owner] = _Job(owner, key, load)
            while len(self._pending) > self.max_pending:
                self._pending.pop(next(iter(self._pending))).dropped = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="annotator-prefetch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self, owner=None) -> None:
        """Drop the owner's pending job, and its running one unless its encoder call has started."""
        with self._cond:
            self._drop(owner)
            self._cond.notify_all()

    def pending(self) -> list[object]:
        """The keys of the jobs waiting, in the order they will run."""
        with self._cond:
            return [job.key for job in self._pending.values()]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._pending.values():
                job.dropped = True
            self._pending.clear()
            if self._running is not None:
                self._running.dropped = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is pending or running (for tests); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._running is None, timeout)

    def _drop(self, owner) -> None:
        job = self._pending.pop(owner, None)
        if job is not None:
            job.dropped = True
        if self._running is not None and self._running.owner == owner:
            self._running.dropped = True

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                job = self._pending.pop(next(iter(self._pending)))
                self._running = job
            try:
                self._run(job)
            except Exception as e:  # a prefetch failing only means the user waits later
                with self._cond:
                    self.errors[job.key] = str(e)
                    while len(self.errors) > 8:
                        self.errors.pop(next(iter(self.errors)))
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _current(self, job: _Job) -> bool:
        with self._cond:
            return not job.dropped

    def _run(self, job: _Job) -> None:
        if not self._current(job):
            return
        image = job.load()
        with self._model_lock.background():
            if not self._current(job):  # cancelled or superseded while we waited
                return
            self._embed(image)
        with self._cond:
            self.done = (self.done + [job.key])[-8:]
