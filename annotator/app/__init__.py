"""The app: the workbench facade, sessions and the Gradio UI."""
