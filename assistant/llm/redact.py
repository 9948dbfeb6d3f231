"""Masks e-mail addresses and phone numbers in prompts before they leave for a hosted LLM.

Redaction errs on the side of privacy: any run of digit groups with 7 or more digits is a phone
number unless it reads as something else that prompts carry (a year or a range of years, a date,
a decimal number, an ISBN). A masked ISBN costs the model little; a leaked phone number cannot be
taken back.
"""

from __future__ import annotations

import re
from typing import Iterator, Sequence

from assistant.llm.base import Prompt

EMAIL_MASK, PHONE_MASK = "[email]", "[phone]"

# Both patterns start only at a word boundary and split a match one way: linear time on any input.
# ASCII look-arounds: Chinese text runs straight into numbers and addresses ("电话13800138000").
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[\w-]+(?:\.[\w-]+)+")
# Digits, one at a time, joined by up to three spaces, dots, dashes, slashes or parentheses.
_DIGITS = re.compile(r"(?<![A-Za-z_\d.+])\+?\(?\d(?:[ \t()./-]{0,3}\d)*(?![A-Za-z_\d])")
_ISBN10_X = re.compile(r"[- ]?[Xx](?!\w)")
_ISBN_BEFORE = re.compile(r"isbn(?:[- ]?1[03])?[\s:#-]*$", re.IGNORECASE)
_MIN_DIGITS = 7


def redact(text: str) -> str:
    """'mail me at jo@x.org or +44 20 7946 0958' -> 'mail me at [email] or [phone]'."""
    text = _EMAIL.sub(EMAIL_MASK, text)
    return _DIGITS.sub(lambda m: PHONE_MASK if _is_phone(m) else m.group(), text)


def _is_phone(match: re.Match) -> bool:
    text = match.group()
    groups = re.findall(r"\d+", text)
    digits = "".join(groups)
    if len(digits) < _MIN_DIGITS:
        return False
    if text.startswith("+") or (text.startswith("00") and len(groups) > 1):
        return True  # an international number: nothing else is written this way
    if _ISBN_BEFORE.search(match.string, max(0, match.start() - 16), match.start()) or _is_isbn(text, groups, digits):
        return False
    if len(digits) == 9 and _ISBN10_X.match(match.string, match.end()):
        return sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11 != 1  # "0-8044-2957-X"
    if len(groups) >= 2 and all(_is_year(g) for g in groups):
        return False  # "1999-2001", "1990 - 2005"
    separators = re.findall(r"\D+", text.strip("()+"))
    if len(groups) == 3 and _is_date(groups) and len(set(s.strip() for s in separators)) == 1:
        return False  # "2024-01-15", "15.01.2024", "01/15/2024"
    if len(groups) == 2 and separators == ["."]:
        return False  # a decimal number: "3.14159265"
    if len(groups) == 2 and all(not s.strip() for s in separators) and any(_is_year(g) for g in groups):
        return False  # "in 1813 432 copies": a year next to a count
    return True  # a phone number, or something as private (two numbers run together, a card number)


def _is_year(group: str) -> bool:
    return len(group) == 4 and 1000 <= int(group) <= 2099


def _is_date(groups: list[str]) -> bool:
    lengths = [len(g) for g in groups]
    if lengths[0] == 4 and max(lengths[1:]) <= 2:
        year, month, day = groups
    elif lengths[2] == 4 and max(lengths[:2]) <= 2:
        first, second, year = groups
        month, day = (first, second) if int(first) <= 12 else (second, first)
    else:
        return False
    return _is_year(year) and 1 <= int(month) <= 12 and 1 <= int(day) <= 31


def _is_isbn(text: str, groups: list[str], digits: str) -> bool:
    """An ISBN-13 (978/979, valid check digit) anywhere, or a hyphenated ISBN-10 (four parts)."""
    if len(digits) == 13 and digits[:3] in ("978", "979"):
        return sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits)) % 10 == 0
    if len(digits) == 10 and len(groups) == 4 and len(groups[-1]) == 1 and "-" in text:
        return sum(int(d) * (10 - i) for i, d in enumerate(digits)) % 11 == 0
    return False


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
