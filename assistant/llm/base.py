"""The one LLM contract every backend implements."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, Union

# A prompt is either plain completion text (base models) or chat messages [{"role", "content"}].
Prompt = Union[str, list[dict]]


class LLM(Protocol):
    """A language model backend. Capabilities are attributes callers ask about."""

    backend: str  # the registry name it was built for ("llama", "openai", ...), shown to users
    model: str  # model name or file, shown to users
    prompt_style: str  # "completion" (base models) or "chat"
    context_window: int  # tokens
    supports_logprobs: bool  # label_logprobs works
    supports_json_schema: bool  # stream(..., json_schema=...) constrains the output
    # Prompts leave this machine for a server: PII in them is masked first (redact_pii), and
    # start-up does not call it (a slow or absent server must not hold the start; the first turn asks).
    remote: bool
    # One model and one KV cache in this machine's memory: a chat turn takes it whole, so turns queue
    # for it (agent.ModelTurns) instead of interleaving calls; servers batch concurrent calls themselves.
    one_call_at_a_time: bool

    def stream(
        self,
        prompt: Prompt,
        *,
        max_tokens: int,
        stop: Sequence[str] | None = None,
        temperature: float = 0.0,
        json_schema: dict | None = None,
    ) -> Iterator[str]:
        """Yield the generated text in pieces as it is produced."""
        ...

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        """Log-probability of each label being the next token after the prompt (one forward pass)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model's own tokenizer."""
        ...


def complete(llm: LLM, prompt: Prompt, **kwargs) -> str:
    """The whole generated text at once."""
    return "".join(llm.stream(prompt, **kwargs))
