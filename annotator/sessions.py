"""Per-browser-session state, owned by the app object (never module globals).

Keyed by Gradio's session hash, bounded (least recently used sessions are dropped first,
since API clients never send an unload), and freed when the browser tab closes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class SessionStore(Generic[T]):
    def __init__(self, factory: Callable[[], T], max_sessions: int = 64, idle_seconds: float | None = 3600):
        self.factory = factory
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> T:
        """The session for ``key``, created on first use."""
        now = time.monotonic()
        with self._lock:
            item = self._items.pop(key, None)
            value = item[1] if item else self.factory()
            self._items[key] = (now, value)
            self._evict(now)
            return value

    def free(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def _evict(self, now: float) -> None:
        while len(self._items) > self.max_sessions:
            self._items.popitem(last=False)
        if self.idle_seconds is not None:
            while self._items:
                key, (last, _) = next(iter(self._items.items()))
                if now - last <= self.idle_seconds:
                    break
                del self._items[key]

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
