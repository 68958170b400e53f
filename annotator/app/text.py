"""Small pieces of wording the app's messages share."""

from __future__ import annotations

from annotator.models.prompt import Prompt


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def ids_text(ids) -> str:
    ids = list(ids)
    if len(ids) == 1:
        return f"mask {ids[0]}"
    return "masks " + ", ".join(str(i) for i in ids)


def score_text(p: Prompt) -> str:
    """The current candidate's predicted IoU, for the message after a click."""
    if p.prediction is None:
        return ""
    score = p.score
    return f" · predicted IoU {score:.2f}" if score is not None else " · (no score: not SAM)"
