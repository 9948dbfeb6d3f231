"""Greedy generations remembered by their exact prompt.

A local model decoding greedily writes the same text for the same prompt, so what it wrote once
can be served again without running it: the embedded model's reason hook for an item ("a crew
hunted by a deadly creature") depends on the item alone, and a platform shows its popular items
to many users. Under load that is the difference between a model-written reason and none: a
remembered hook costs no model time, so a turn that the busy model turns away still gets it.

While one turn has the model write a prompt, a concurrent turn that shows the same item waits
for that text instead of asking the model for it again (`claim` / `release` / `wait`, in this
process): a burst of users looking at the popular items costs the model each hook once, and a
turn the busy model turned away still gets the hooks other turns are writing.

Only the text is remembered; every use checks it again against the turn it is shown in. Only
models that say `greedy_repeats` (the local llama.cpp backends) are remembered: a hosted server
may sample, and a cache would hide a changed deployment.

With a `store` (assistant.memory_store.MemoryStore: the data dir's SQLite database, or the
PostgreSQL server) the texts are also kept in its `remembered` table: they outlive a restart,
and every worker, on any host, shares them, so what one worker's turns (or the hook writer,
assistant/prewrite.py) had the model write serves every worker's next turn. Only generations
whose prompt holds nothing of a user go there (the embedded model's hooks: the item's
description); a prompt with the user's words or history stays in memory, so a deleted user leaves
nothing stored. Deleting the rows only makes the model write them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from typing import Sequence

log = logging.getLogger(__name__)

KEPT_PER_LIMIT = 8  # the store keeps up to this many times the in-memory limit (the newest)
PRUNE_EVERY = 256  # writes between two prunes of the store


class Remembered:
    """A bounded, thread-safe map from (model, prompt, limits) to the text a greedy generation wrote."""

    def __init__(self, limit: int = 4096, store=None):
        self.limit = limit
        self._texts: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()
        self._landed = threading.Condition(self._lock)  # a generation in flight ended (release)
        self._flying: set[tuple] = set()  # keys a turn of this process is having the model write
        self.hits = 0
        self.misses = 0
        self.shared = 0  # texts a turn awaited while another turn had the model write them
        self._store = store if limit > 0 else None  # remembered_text / remember_text / remembered_count
        self._writes = 0
        self._warned = False

    def bind(self, llm) -> "RememberedFor | None":
        """This cache as seen by one model; None when nothing may be remembered for it."""
        if llm is None or self.limit <= 0 or not getattr(llm, "greedy_repeats", False):
            return None
        return RememberedFor(self, (getattr(llm, "backend", ""), str(getattr(llm, "model", ""))))

    def get(self, key: tuple, stored: bool = True) -> str | None:
        """The text remembered for `key`; `stored` False: one `put` keeps in memory only (the store
        is not asked: it never holds such a text)."""
        with self._lock:
            text = self._texts.get(key)
            if text is None and stored and self._store is not None:
                text = self._read(key)
                if text is not None:
                    self._keep(key, text)
            if text is None:
                self.misses += 1
                return None
            self._texts.move_to_end(key)
            self.hits += 1
            return text

    def has(self, key: tuple) -> bool:
        """Whether a text is remembered for `key` (counts neither a hit nor a miss)."""
        with self._lock:
            return key in self._texts or (self._store is not None and self._read(key) is not None)

    def put(self, key: tuple, text: str, keep_stored: bool = True) -> None:
        """Remember `text`; `keep_stored` False keeps it in this process only (a prompt with the
        user's words or history in it: deleting the user must leave none of it stored)."""
        with self._lock:
            self._keep(key, text)
            if self._store is not None and keep_stored:
                self._write(key, text)

    def claim(self, key: tuple) -> bool:
        """True: the caller has the model write `key` now, and must `release` it however that ends.
        False: another turn is writing it (`wait` for its text)."""
        with self._lock:
            if key in self._flying:
                return False
            self._flying.add(key)
            return True

    def flying(self, key: tuple) -> bool:
        with self._lock:
            return key in self._flying

    def release(self, key: tuple, text: str | None = None, keep_stored: bool = True) -> None:
        """The claimed generation ended: with its whole `text` (remembered), or None (failed or
        stopped early: the waiters go without it)."""
        if text is not None:
            self.put(key, text, keep_stored)
        with self._lock:
            self._flying.discard(key)
            self._landed.notify_all()

    def wait(self, key: tuple, timeout_s: float, stored: bool = True) -> str | None:
        """The text of a generation in flight once it lands; None if it is not written within
        `timeout_s` or its writer gave up."""
        with self._lock:
            self._landed.wait_for(lambda: key not in self._flying, timeout=max(0.0, timeout_s))
            if key in self._flying:
                return None
        text = self.get(key, stored)
        if text is not None:
            with self._lock:
                self.shared += 1
        return text

    def _keep(self, key: tuple, text: str) -> None:
        self._texts[key] = text
        self._texts.move_to_end(key)
        while len(self._texts) > self.limit:
            self._texts.popitem(last=False)

    def _read(self, key: tuple) -> str | None:
        try:
            return self._store.remembered_text(_digest(key))
        except Exception as exc:  # noqa: BLE001 - a cache: the turn goes on without it (the model writes it)
            self._failed(exc)
            return None

    def _write(self, key: tuple, text: str) -> None:
        self._writes += 1
        keep = self.limit * KEPT_PER_LIMIT if self._writes % PRUNE_EVERY == 0 else None
        try:
            self._store.remember_text(_digest(key), text, keep=keep)
        except Exception as exc:  # noqa: BLE001 - kept in memory all the same
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """Said once a process: the store could not be read or written (the memory copy still serves)."""
        if not self._warned:
            self._warned = True
            log.warning("the remembered reasons could not be read or stored (%s: %s); they are kept in memory",
                        type(exc).__name__, exc)

    def __len__(self) -> int:
        return len(self._texts)

    def stats(self) -> dict:
        """In memory, the bound, hits and misses here, `shared` (awaited from a concurrent turn's
        generation); `stored`: in the store (None without one)."""
        stored = None
        with self._lock:
            if self._store is not None:
                try:
                    stored = self._store.remembered_count()
                except Exception as exc:  # noqa: BLE001 - a count for /v1/info
                    self._failed(exc)
        return {"entries": len(self), "limit": self.limit, "hits": self.hits, "misses": self.misses, "shared": self.shared,
                "stored": stored}


def _digest(key: tuple) -> str:
    return hashlib.sha256(json.dumps(key, ensure_ascii=False, default=list).encode("utf-8")).hexdigest()


class RememberedFor:
    """The cache for one model and one kind of generation (max_tokens, stops)."""

    def __init__(self, cache: Remembered, model: tuple):
        self.cache = cache
        self.model = model

    def _key(self, prompt, max_tokens: int, stops: Sequence[str]) -> tuple:
        text = prompt if isinstance(prompt, str) else tuple((m.get("role"), m.get("content")) for m in prompt)
        return (*self.model, text, max_tokens, tuple(stops))

    def get(self, prompt, max_tokens: int, stops: Sequence[str], stored: bool = True) -> str | None:
        return self.cache.get(self._key(prompt, max_tokens, stops), stored)

    def put(self, prompt, max_tokens: int, stops: Sequence[str], text: str, keep_stored: bool = True) -> None:
        self.cache.put(self._key(prompt, max_tokens, stops), text, keep_stored)

    def has(self, prompt, max_tokens: int, stops: Sequence[str]) -> bool:
        return self.cache.has(self._key(prompt, max_tokens, stops))

    def claim(self, prompt, max_tokens: int, stops: Sequence[str]) -> bool:
        return self.cache.claim(self._key(prompt, max_tokens, stops))

    def flying(self, prompt, max_tokens: int, stops: Sequence[str]) -> bool:
        return self.cache.flying(self._key(prompt, max_tokens, stops))

    def release(self, prompt, max_tokens: int, stops: Sequence[str], text: str | None = None, keep_stored: bool = True) -> None:
        self.cache.release(self._key(prompt, max_tokens, stops), text, keep_stored)

    def wait(self, prompt, max_tokens: int, stops: Sequence[str], timeout_s: float, stored: bool = True) -> str | None:
        return self.cache.wait(self._key(prompt, max_tokens, stops), timeout_s, stored)
