"""File names made from untrusted names (uploads, API calls, imported files).

A name a user sent may hold ``../``, an absolute path, a NUL, control characters or
thousands of bytes; written as is it could escape its folder or fail to write. ``safe_name``
keeps what makes a name recognisable (its last component, unicode, the extension) and
nothing that could name another place.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = 180  # under every common file system's 255-byte limit, with room for suffixes
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')  # control characters, and what Windows forbids


def safe_name(name, default: str = "image", max_bytes: int = MAX_NAME_BYTES) -> str:
    """A single path component: the last part of ``name`` (``/`` and ``\\`` both separate),
    without control or reserved characters or leading dots, at most ``max_bytes`` of UTF-8
    (the extension kept); ``default`` when nothing is left."""
    text = unicodedata.normalize("NFC", str(name))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _UNSAFE.sub("_", text).strip().lstrip(".").strip()
    if not text.strip("_ "):
        return default
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = text, ""
    budget = max_bytes - (len(ext.encode()) + 1 if ext else 0)
    stem = _truncate(stem, budget).rstrip(". ") or default
    return f"{stem}.{ext}" if ext else stem


def safe_stem(name, default: str = "image", max_bytes: int = MAX_NAME_BYTES) -> str:
    """``safe_name`` without its extension: the stem exported files are named after."""
    text = safe_name(name, default, max_bytes)
    stem, dot, _ = text.rpartition(".")
    return stem if dot and stem else text


def _truncate(text: str, max_bytes: int) -> str:
    data = text.encode()[: max(max_bytes, 1)]
    return data.decode("utf-8", errors="ignore")  # never half a character
