"""LLM backends behind one contract (see base.py); create_llm picks one from the settings."""

from assistant.llm.base import LLM, Prompt, complete

__all__ = ["LLM", "Prompt", "complete"]
