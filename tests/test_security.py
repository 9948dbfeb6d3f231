"""Security: PII redaction before hosted LLM calls, sandboxed prompt templates."""

import pytest

from assistant.engine import Engine
from assistant.llm.fake import FakeLLM
from assistant.llm.redact import RedactingLLM, redact
from assistant.settings import Settings


@pytest.mark.parametrize(
    "text,expected",
    [
        ("write to jo.smith+books@example.co.uk today", "write to [email] today"),
        ("call +44 20 7946 0958 now", "call [phone] now"),
        ("call (555) 123-4567", "call [phone]"),
        ("published 1813, 432 pages", "published 1813, 432 pages"),  # years and counts survive
        ("no pii here", "no pii here"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def test_wrapper_redacts_prompts_and_keeps_capabilities():
    inner = FakeLLM(["ok"], prompt_style="chat")
    llm = RedactingLLM(inner)
    assert llm.prompt_style == "chat" and llm.supports_logprobs
    list(llm.stream([{"role": "user", "content": "I am ann@example.com"}], max_tokens=5))
    assert inner.prompts[0][0]["content"] == "I am [email]"


def test_engine_wraps_only_hosted_backends(tmp_path, monkeypatch):
    import assistant.llm.factory as factory

    hosted = FakeLLM()
    hosted.backend = "openai"
    monkeypatch.setattr(factory, "create_llm", lambda settings: hosted)
    engine = Engine(Settings.load(env={}, data_dir=tmp_path, llm_backend="openai"))
    assert isinstance(engine.llm, RedactingLLM)
    engine = Engine(Settings.load(env={}, data_dir=tmp_path, llm_backend="openai", redact_pii=False))
    assert engine.llm is hosted


def test_prompt_templates_are_sandboxed():
    from assistant.errors import PromptError
    from prompts import parse_template

    evil = """name: rank
description: tries to escape
style: completion
variables:
  - name: request
    type: str
    description: x
    example: hi
output:
  type: text
  description: x
template: "{{ request.__class__.__mro__[1].__subclasses__() }}"
"""
    template = parse_template(evil, "<test>")
    with pytest.raises(PromptError, match="unsafe"):
        template.render(request="hi")
