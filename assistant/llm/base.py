"""The one LLM contract every backend implements."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, Union

from core.errors import LLMError

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
    # One model and one KV cache in this machine's memory, which concurrent turns contend for: a turn
    # must bound how long it waits for it. Without batches_across_calls a call takes it whole, so turns
    # queue for it (assistant.model_turns.ModelTurns) instead of interleaving calls; servers batch
    # concurrent calls themselves (False).
    one_call_at_a_time: bool
    # Optional: True when a greedy generation of the same prompt writes the same text again (a
    # local model), so what it wrote may be remembered and served again (assistant/llm/memo.py).
    # greedy_repeats: bool

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


class BatchingLLM(LLM, Protocol):
    """A local model whose greedy stream/stream_many calls from several threads share forward passes
    (continuous batching), so turns need not take it whole. Ask `getattr(llm, "batches_across_calls",
    False)`: backends without the attribute do not batch. Other calls (label_logprobs, sampled or
    JSON-schema streams) still take the model whole, for a moment."""

    batches_across_calls: bool

    def reserve(self, budget_s: float, *, sequences: int = 5, least: int = 1, peers: int = 0):
        """Context manager: model time for one turn, up to `sequences` generations written within
        `budget_s` seconds. Yields a ReservedLLM to make the turn's calls with (`granted` <= sequences
        of them fit), or None when not even `least` would fit: the turn answers without the model.
        An idle model always grants `least` (refusing would not make it faster). `peers`: other
        turns of the caller that will ask soon; the model's time is shared with them too."""
        ...


class ModelBusy(LLMError):
    """The local model cannot take this work in time (its queue is full, or a turn's time budget
    would pass first): answer without it now rather than wait."""


class ReservedLLM:
    """The LLM a turn gets from `reserve()`: the same model, its generations counted against the
    reservation and admitted by its deadline (ModelBusy after it). `granted` says how many
    generations fit the budget: ask the model for that many and take the rest from the evidence.
    `deadline` (time.monotonic() in this process) is when the budget ends: stop reading then. None
    when an idle model granted it to a turn with no peers: that turn shares the model with nobody,
    so it is not cut short (a slower machine or a bigger model still writes its reasons)."""

    def __init__(self, llm, reservation, granted: int, deadline: float | None):
        self._llm = llm
        self.reservation = reservation
        self.granted = granted
        self.deadline = deadline

    def __getattr__(self, name):
        return getattr(self._llm, name)

    def stream(self, prompt: Prompt, **kwargs) -> Iterator[str]:
        return self._llm._stream(prompt, reservation=self.reservation, **kwargs)

    def stream_many(self, prompts: Sequence[Prompt], **kwargs) -> Iterator[tuple[int, str | None]]:
        return self._llm._stream_many(prompts, reservation=self.reservation, **kwargs)


def complete(llm: LLM, prompt: Prompt, **kwargs) -> str:
    """The whole generated text at once."""
    return "".join(llm.stream(prompt, **kwargs))
