"""Hugging Face Spaces entry point: the same as ``annotator serve``.

Spaces set GRADIO_SERVER_NAME/PORT; model flags come from ANNOTATOR_MODEL,
ANNOTATOR_CHECKPOINT and ANNOTATOR_DEVICE.
"""

from annotator.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve"]))
