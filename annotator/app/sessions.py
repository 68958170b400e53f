"""Per-browser-session state, owned by the app object (never module globals).

Keyed by Gradio's session hash, bounded (least recently used sessions are dropped first,
since API clients never send an unload), and freed when the browser tab closes. Sessions
idle longer than ``idle_seconds`` are dropped by ``sweep()`` (the owner calls it
periodically: an idle session gets no request that could drop it). Every dropped session
goes to ``on_evict``, so its owner can release what it holds outside the store.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SessionStore(Generic[T]):
    def __init__(
        self,
        factory: Callable[[], T],
        max_sessions: int = 64,
        idle_seconds: float | None = 3600,
        *,
        on_evict: Callable[[str, T], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.factory = factory
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.on_evict = on_evict
        self.clock = clock
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        # why recently dropped keys went ("full" or "idle"), so a tab that comes back can be
        # told; bounded like the sessions themselves
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> T:
        """The session for ``key``, created on first use."""
        with self._lock:
            now = self.clock()
            item = self._items.pop(key, None)
            if item is None:
                value = self.factory()
                self._gone.pop(key, None)  # (a new session: ``dropped_because`` was asked already)
            else:
                value = item[1]
            self._items[key] = (now, value)
            dropped = self._evict(now)
        self._release(dropped)
        return value

    def sweep(self) -> list[str]:
        """Drop the sessions idle longer than ``idle_seconds``; returns their keys."""
        with self._lock:
            dropped = self._evict(self.clock())
        self._release(dropped)
        return [key for key, _ in dropped]

    def _release(self, dropped: list[tuple[str, T]]) -> None:
        # outside the lock: the callback may take the session's own lock
        if self.on_evict is not None:
            for key, value in dropped:
                self.on_evict(key, value)

    def touch(self, key: str) -> bool:
        """Count ``key`` as just used, without creating it; False if it is gone."""
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._items[key] = (self.clock(), item[1])
            return item is not None

    def dropped_because(self, key: str) -> str | None:
        """Why the session of ``key`` was dropped ("full": the store held ``max_sessions``;
        "idle": unused for ``idle_seconds``), if it was and ``key`` has no session now;
        answered once."""
        with self._lock:
            return None if key in self._items else self._gone.pop(key, None)

    def free(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def _evict(self, now: float) -> list[tuple[str, T]]:
        dropped = []
        while len(self._items) > self.max_sessions:
            key, (_, value) = self._items.popitem(last=False)
            dropped.append((key, value))
            self._note_gone(key, "full")
        if self.idle_seconds is not None:
            while self._items:
                key, (last, value) = next(iter(self._items.items()))
                if now - last <= self.idle_seconds:
                    break
                del self._items[key]
                dropped.append((key, value))
                self._note_gone(key, "idle")
        return dropped

    def _note_gone(self, key: str, why: str) -> None:
        self._gone[key] = why
        while len(self._gone) > 4 * max(1, self.max_sessions):
            self._gone.popitem(last=False)

    def peek(self, key: str) -> T | None:
        """The session for ``key`` if it exists, without creating it or refreshing its age."""
        with self._lock:
            item = self._items.get(key)
            return item[1] if item else None

    def keys(self) -> list[str]:
        """Session keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
