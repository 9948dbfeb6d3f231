"""Greedy generations remembered by their exact prompt.

A local model decoding greedily writes the same text for the same prompt, so what it wrote once
can be served again without running it: the embedded model's reason hook for an item ("a crew
hunted by a deadly creature") depends on the item alone, and a platform shows its popular items
to many users. Under load that is the difference between a model-written reason and none: a
remembered hook costs no model time, so a turn that the busy model turns away still gets it.

Only the text is remembered; every use checks it again against the turn it is shown in. Only
models that say `greedy_repeats` (the local llama.cpp backends) are remembered: a hosted server
may sample, and a cache would hide a changed deployment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence


class Remembered:
    """A bounded, thread-safe map from (model, prompt, limits) to the text a greedy generation wrote."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self._texts: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def bind(self, llm) -> "RememberedFor | None":
        """This cache as seen by one model; None when nothing may be remembered for it."""
        if llm is None or self.limit <= 0 or not getattr(llm, "greedy_repeats", False):
            return None
        return RememberedFor(self, (getattr(llm, "backend", ""), str(getattr(llm, "model", ""))))

    def get(self, key: tuple) -> str | None:
        with self._lock:
            text = self._texts.get(key)
            if text is None:
                self.misses += 1
                return None
            self._texts.move_to_end(key)
            self.hits += 1
            return text

    def put(self, key: tuple, text: str) -> None:
        with self._lock:
            self._texts[key] = text
            self._texts.move_to_end(key)
            while len(self._texts) > self.limit:
                self._texts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._texts)

    def stats(self) -> dict:
        return {"entries": len(self), "limit": self.limit, "hits": self.hits, "misses": self.misses}


class RememberedFor:
    """The cache for one model and one kind of generation (max_tokens, stops)."""

    def __init__(self, cache: Remembered, model: tuple):
        self.cache = cache
        self.model = model

    def _key(self, prompt, max_tokens: int, stops: Sequence[str]) -> tuple:
        text = prompt if isinstance(prompt, str) else tuple((m.get("role"), m.get("content")) for m in prompt)
        return (*self.model, text, max_tokens, tuple(stops))

    def get(self, prompt, max_tokens: int, stops: Sequence[str]) -> str | None:
        return self.cache.get(self._key(prompt, max_tokens, stops))

    def put(self, prompt, max_tokens: int, stops: Sequence[str], text: str) -> None:
        self.cache.put(self._key(prompt, max_tokens, stops), text)
