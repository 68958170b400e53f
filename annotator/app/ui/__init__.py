"""The Gradio app: layout and event wiring over ``annotator.app.workbench``."""

from annotator.app.ui.app import build_app, launch_kwargs

__all__ = ["build_app", "launch_kwargs"]
