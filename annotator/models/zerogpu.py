"""Hugging Face ZeroGPU support without depending on it.

``gpu`` is ``spaces.GPU`` when the ``spaces`` package is importable (it is on Spaces) and a
no-op decorator otherwise; ``spaces`` itself is a no-op off ZeroGPU hardware. On ZeroGPU a
decorated call runs in a worker that holds the GPU for its duration, with its arguments and
results pickled, so only pure functions that take what they need and return results are
decorated (the image encoder and the automatic generator), never methods that change
session state.
"""

from __future__ import annotations


def gpu(fn=None, **kwargs):
    """``@gpu`` or ``@gpu(duration=120)``."""
    try:
        import spaces
    except ImportError:
        spaces = None

    def wrap(f):
        if spaces is None:
            return f
        return spaces.GPU(**kwargs)(f) if kwargs else spaces.GPU(f)

    return wrap(fn) if fn is not None else wrap
