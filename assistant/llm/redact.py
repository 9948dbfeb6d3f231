"""Masks e-mail addresses and phone numbers in prompts before they leave for a hosted LLM."""

from __future__ import annotations

import re
from typing import Iterator, Sequence

from assistant.llm.base import Prompt

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# 7+ digits, optionally with a leading +, spaces, dots, dashes or parentheses between groups.
_PHONE = re.compile(r"(?<![\w])\+?\(?\d[\d\s().-]{5,}\d(?![\w])")


def redact(text: str) -> str:
    """'mail me at jo@x.org or +44 20 7946 0958' -> 'mail me at [email] or [phone]'."""
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(lambda m: "[phone]" if sum(ch.isdigit() for ch in m.group()) >= 7 else m.group(), text)


def redact_prompt(prompt: Prompt) -> Prompt:
    if isinstance(prompt, str):
        return redact(prompt)
    return [{**message, "content": redact(message.get("content", ""))} for message in prompt]


class RedactingLLM:
    """Wraps any LLM; every prompt is redacted first. Capabilities pass through unchanged."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream(self, prompt: Prompt, **kwargs) -> Iterator[str]:
        return self.inner.stream(redact_prompt(prompt), **kwargs)

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        return self.inner.label_logprobs(redact_prompt(prompt), labels)
