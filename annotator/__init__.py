"""annotator: image annotation with Segment Anything.

The package holds all logic (models, automatic mask generation, mask store, rendering,
COCO I/O, metrics, sessions); the Gradio UI in ``annotator.ui`` only wires it.
"""

__version__ = "0.1.0"
