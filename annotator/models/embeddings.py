"""Image embeddings and a memory-bounded LRU cache of them, keyed by image content."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch


def image_key(image: np.ndarray) -> str:
    """A content hash of the pixels (and shape), so the same picture uploaded twice,
    under any file name, maps to the same cache entry."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, str(image.dtype))).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


@dataclass(frozen=True)
class ImageEmbedding:
    """The encoder output for one image plus the sizes needed to map prompts and masks."""

    key: str
    features: torch.Tensor  # (1, C, 64, 64) float32
    original_size: tuple[int, int]  # (H, W) of the image
    input_size: tuple[int, int]  # (H, W) after resizing the longest side to the encoder size

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


class EmbeddingCache:
    """LRU cache of ``ImageEmbedding`` bounded by total tensor bytes. Thread-safe."""

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ImageEmbedding | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def get_or_compute(self, key: str, compute, lock):
        """The entry for ``key``, computed once under ``lock`` when missing (two sessions
        opening one image compute it once) and kept."""
        hit = self.get(key)
        if hit is not None:
            return hit
        with lock:
            hit = self.get(key)
            if hit is not None:
                return hit
            value = compute()
            self.put(value)
            return value

    def put(self, embedding: ImageEmbedding) -> None:
        with self._lock:
            old = self._items.pop(embedding.key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if embedding.nbytes > self.max_bytes:
                return
            self._items[embedding.key] = embedding
            self._bytes += embedding.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
