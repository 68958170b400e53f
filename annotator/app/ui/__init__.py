"""The Gradio UI: layout and event wiring; the only package that imports gradio."""
