"""The app's limits in one place: defaults, ``annotator serve`` flags and ``ANNOTATOR_*`` variables.

A public server gets every kind of input and many users at once. Each limit bounds one way
a request can use memory, disk or time; the message a user gets at a limit names it, and
the operator raises it with the flag (``--max-pixels``) or the variable
(``ANNOTATOR_MAX_PIXELS``); a flag wins over the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

ENV_PREFIX = "ANNOTATOR_"
MB = 2**20


class LimitsError(ValueError):
    """A limit was set to something that is not a positive number."""


def _limit(default, what: str):
    return field(default=default, metadata={"help": what})


@dataclass(frozen=True)
class Limits:
    max_upload_mb: float = _limit(100.0, "largest uploaded file, MB (Gradio's max_file_size)")
    max_pixels: int = _limit(50_000_000, "largest image, pixels (width x height), checked before decoding")
    max_masks: int = _limit(2000, "masks per image (accept, segment everything and import stop there)")
    max_queue: int = _limit(64, "events waiting in the queue; more are refused with 'queue is full'")
    model_workers: int = _limit(
        8, "clicks and uploads of different sessions handled at once (the model still runs one call at a time)"
    )
    max_session_mb: float = _limit(
        512.0, "memory per session, MB: image, embedding, masks (older images' masks are dropped first)"
    )
    max_sessions: int = _limit(64, "sessions held at once; the least recently used is freed first")
    idle_minutes: float = _limit(60.0, "a session idle this long is freed")
    max_json_mb: float = _limit(64.0, "largest imported JSON file, MB, checked before parsing")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise LimitsError(f"{f.name} must be a positive number; got {value!r}")

    # -- in the units the code uses ----------------------------------------------------------
    @property
    def upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def session_bytes(self) -> int:
        return int(self.max_session_mb * MB)

    @property
    def json_bytes(self) -> int:
        return int(self.max_json_mb * MB)

    @property
    def idle_seconds(self) -> float:
        return self.idle_minutes * 60.0

    # -- where they come from --------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Limits:
        """Defaults, then ``ANNOTATOR_*`` variables, then ``overrides`` (None = not given)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is not None and raw.strip():
                values[f.name] = _parse(f, raw.strip(), env_name(f.name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Limits:
        return cls.from_env(environ, **{f.name: getattr(args, f.name, None) for f in fields(cls)})


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse(f, raw: str, source: str):
    kind = int if f.type in (int, "int") else float
    try:
        value = kind(float(raw)) if kind is int and float(raw).is_integer() else kind(raw)
    except ValueError:
        raise LimitsError(f"{source} must be a positive {'whole ' if kind is int else ''}number; got {raw!r}") from None
    if not value > 0:
        raise LimitsError(f"{source} must be a positive number; got {raw!r}")
    return value


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    """One flag per limit (``--max-pixels`` ...); unset flags fall back to the environment."""
    group = parser.add_argument_group("limits (each also an ANNOTATOR_* variable; see README)")
    for f in fields(Limits):
        kind = int if f.type in (int, "int") else float

        def positive(raw: str, f=f) -> int | float:
            try:
                return _parse(f, raw, flag_name(f.name))
            except LimitsError as e:
                raise argparse.ArgumentTypeError(str(e)) from None

        group.add_argument(
            flag_name(f.name),
            dest=f.name,
            type=positive,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{f.metadata['help']} (default: {_show(f.default)}; ${env_name(f.name)})",
        )


def describe() -> list[tuple[str, str, str, str]]:
    """(flag, variable, default, meaning) per limit: the README's table is checked against it."""
    return [(flag_name(f.name), env_name(f.name), _show(f.default), f.metadata["help"]) for f in fields(Limits)]


def _show(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def human_bytes(n: float) -> str:
    """``1.5 MB``, ``640 KB``, ``12 bytes``: sizes in messages."""
    for unit, size in (("GB", 2**30), ("MB", MB), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"
