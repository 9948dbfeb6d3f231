"""The Gradio web UI (a thin adapter over the engine); gradio is imported only when it is built."""
