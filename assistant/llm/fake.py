"""A scripted LLM for unit tests: enqueue answers, then assert on the prompts it received."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Iterator, Sequence

from core.errors import LLMError
from assistant.llm.base import Prompt, ReservedLLM


class FakeLLM:
    """Answers from a queue; with an empty queue it answers `default` (an empty string by default)."""

    backend = "fake"

    def __init__(
        self,
        answers: Sequence[str | dict | Exception] = (),
        *,
        model: str = "fake-model",
        prompt_style: str = "completion",
        context_window: int = 4096,
        supports_logprobs: bool = True,
        supports_json_schema: bool = True,
        supports_batch: bool = False,
        remote: bool = False,
        one_call_at_a_time: bool = False,
        batches_across_calls: bool = False,
        greedy_repeats: bool = False,
        default: str = "",
    ):
        self.model = model
        self.prompt_style = prompt_style
        self.context_window = context_window
        self.supports_logprobs = supports_logprobs
        self.supports_json_schema = supports_json_schema
        self.supports_batch = supports_batch
        self.remote = remote  # True: plays a hosted model (its prompts are redacted, start-up skips it)
        self.one_call_at_a_time = one_call_at_a_time  # True: plays a local model that turns queue for
        self.batches_across_calls = batches_across_calls  # True: plays one whose turns reserve() model time
        self.greedy_repeats = greedy_repeats  # True: what it wrote for a prompt may be remembered (llm/memo.py)
        self.grant: int | None = None  # reserve() grants this many (None: all asked; 0: busy, yields None)
        self.reservations: list[dict] = []  # every reserve() asked
        self.default = default
        self._answers: deque = deque(answers)
        self.prompts: list[Prompt] = []  # every prompt received, in order
        self.calls: list[dict] = []  # the keyword arguments of every call

    def enqueue(self, *answers) -> "FakeLLM":
        """Queue answers: a str for stream(), a {label: logprob} dict for label_logprobs(), an
        exception to raise, or a callable that gets the prompt (and labels) and returns either."""
        self._answers.extend(answers)
        return self

    def _next(self):
        answer = self._answers.popleft() if self._answers else self.default
        if isinstance(answer, Exception):
            raise answer
        return answer

    def stream(self, prompt: Prompt, *, max_tokens: int, stop=None, temperature=0.0, json_schema=None) -> Iterator[str]:
        self.prompts.append(prompt)
        self.calls.append({"kind": "stream", "max_tokens": max_tokens, "stop": stop, "json_schema": json_schema})
        answer = self._next()
        if callable(answer):
            answer = answer(prompt)
        if not isinstance(answer, str):
            raise LLMError(f"FakeLLM.stream got a queued {type(answer).__name__}; enqueue a str")
        # Stream word by word so callers exercise their incremental paths.
        for i, word in enumerate(answer.split(" ")):
            yield word if i == 0 else " " + word

    def stream_many(self, prompts: Sequence[Prompt], *, max_tokens: int, stop=None, words=None) -> Iterator[tuple[int, str | None]]:
        """One queued answer per prompt, written a word of each at a time, as a batched decode
        interleaves them; (index, None) ends a prompt. A queued exception is raised when its
        prompt's turn comes, after the others have begun. `words` is recorded, not enforced."""
        if not self.supports_batch:
            raise LLMError("this fake model was built with supports_batch=False")
        self.calls.append({"kind": "stream_many", "n": len(prompts), "max_tokens": max_tokens, "stop": stop,
                           "words": words})
        answers = []
        for prompt in prompts:
            self.prompts.append(prompt)
            answer = self._answers.popleft() if self._answers else self.default
            answers.append(answer(prompt) if callable(answer) else answer)
        words = [a.split(" ") if isinstance(a, str) else a for a in answers]
        for step in range(max((len(w) if isinstance(w, list) else 2) for w in words)):
            for i, w in enumerate(words):
                if isinstance(w, Exception):
                    if step == 1 or len(words) == 1:
                        raise w
                    continue
                if step < len(w):
                    yield i, w[step] if step == 0 else " " + w[step]
                    if step == len(w) - 1:
                        yield i, None

    @contextlib.contextmanager
    def reserve(self, budget_s: float, *, sequences: int = 5, least: int = 1, peers: int = 0):
        """Model time for a turn, as `grant` says (base.BatchingLLM)."""
        self.reservations.append({"budget_s": budget_s, "sequences": sequences, "least": least, "peers": peers})
        granted = sequences if self.grant is None else min(self.grant, sequences)
        yield ReservedLLM(self, None, granted, time.monotonic() + budget_s) if granted >= max(1, least) else None

    def _stream(self, prompt: Prompt, *, reservation=None, **kwargs) -> Iterator[str]:
        return self.stream(prompt, **kwargs)

    def _stream_many(self, prompts: Sequence[Prompt], *, reservation=None, **kwargs):
        return self.stream_many(prompts, **kwargs)

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        self.prompts.append(prompt)
        self.calls.append({"kind": "label_logprobs", "labels": list(labels)})
        if not self.supports_logprobs:
            raise LLMError("this fake model was built with supports_logprobs=False")
        answer = self._next()
        if callable(answer):
            answer = answer(prompt, list(labels))
        if isinstance(answer, str):
            # A string answer names the labels in preference order.
            order = [x for x in answer.split() if x in labels]
            answer = {label: -float(i) for i, label in enumerate(order)}
        return {label: float(answer.get(label, -50.0)) for label in labels}

    def count_tokens(self, text: str) -> int:
        return len(text.split())
