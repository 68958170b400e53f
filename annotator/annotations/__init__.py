"""Annotations: masks, classes and what is drawn from them. Imports no torch and no gradio."""
