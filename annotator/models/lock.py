"""One model, one call at a time, users first.

Every encoder and decoder call of the app holds the ``ModelLock``: clicks, uploads,
segment everything call by call, and the background prefetch, which yields to users.
"""

from __future__ import annotations

import contextlib
import threading


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
