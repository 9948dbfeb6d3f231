"""recassist: a conversational recommendation assistant."""

__version__ = "0.1.0"
