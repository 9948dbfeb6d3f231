"""Sequence 0 of a llama.cpp context as a prompt cache, and saved copies of prefixes that recur.

The KV cache keeps the last prompt read; a call whose prompt shares its head reads only the rest.
`_PrefixSnapshots` keeps copies of prefixes seen twice in a row (a template's instructions and
examples, a user's history), so the rank prompt of the next turn skips its shared head even after
the reason and summary prompts have replaced the cache in between: restoring one costs ~1 ms, not
a re-read. Used by the calls that take the model whole (scheduler.BatchScheduler.exclusive): its
operations touch every sequence.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

from assistant.llm.batching import common_prefix


class _PrefixSnapshots:
    """Saved KV states of prompt prefixes that recur (LRU): restoring one costs ~1 ms, not a re-read."""

    def __init__(self, max_entries: int = 4, min_tokens: int = 32):
        self.max_entries = max_entries
        self.min_tokens = min_tokens
        self._entries: list[tuple[list[int], ctypes.Array]] = []  # most recently used last

    def best(self, tokens: Sequence[int]) -> tuple[int, tuple | None]:
        """The snapshot sharing the longest prefix with `tokens`, and that length."""
        found, length = None, 0
        for entry in self._entries:
            n = common_prefix(entry[0], tokens)
            if n > length:
                found, length = entry, n
        if found is not None:
            self._entries.remove(found)
            self._entries.append(found)
        return length, found

    def covers(self, tokens: Sequence[int]) -> bool:
        return any(len(e[0]) >= len(tokens) and common_prefix(e[0], tokens) == len(tokens) for e in self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def add(self, tokens: list[int], state: ctypes.Array) -> None:
        # A longer prefix of the same family (same template, new history) replaces the old one.
        self._entries = [e for e in self._entries if common_prefix(e[0], tokens) < self.min_tokens]
        self._entries.append((tokens, state))
        del self._entries[: -self.max_entries]


class PromptCache:
    """What sequence 0 holds (`llama.input_ids[:llama.n_tokens]`), reused call after call."""

    def __init__(self, llama, stats: dict, snapshots: int = 4):
        self.llama = llama
        self.stats = stats
        self._snapshots = _PrefixSnapshots(max_entries=snapshots) if snapshots else None

    def reuse(self, tokens: list[int]) -> int:
        """Leave the KV cache holding the longest available prefix of `tokens`; returns its length.

        The cache keeps at most len(tokens) - 1 tokens so the next decode refreshes the logits.
        """
        llama, ctx = self.llama, self.llama._ctx
        keep = min(common_prefix(llama.input_ids[: llama.n_tokens], tokens), len(tokens) - 1)
        if self._snapshots is not None:
            if keep >= self._snapshots.min_tokens and not self._snapshots.covers(tokens[:keep]):
                # Seen twice in a row (a template head, a user's history): worth keeping.
                if ctx.kv_cache_seq_rm(-1, keep, -1):
                    llama.n_tokens = keep
                    self._snapshots.add(list(tokens[:keep]), self._save_state())
            length, snapshot = self._snapshots.best(tokens)
            length = min(length, len(tokens) - 1)
            if snapshot is not None and length > keep:
                self._load_state(snapshot)
                keep = length
        if not ctx.kv_cache_seq_rm(-1, keep, -1):
            keep = 0  # this cache cannot drop a tail: start over
            ctx.kv_cache_seq_rm(-1, 0, -1)
        llama.input_ids[:keep] = tokens[:keep]
        llama.n_tokens = keep
        self.stats["prompt_tokens"] += len(tokens)
        self.stats["evaluated_tokens"] += len(tokens) - keep
        return keep

    def _save_state(self) -> ctypes.Array:
        import llama_cpp

        ctx = self.llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        return buffer

    def _load_state(self, snapshot: tuple) -> None:
        import llama_cpp

        tokens, buffer = snapshot
        llama = self.llama
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buffer, len(buffer), 0) == 0:
            llama.n_tokens = 0
            return
        llama.input_ids[: len(tokens)] = tokens
        llama.n_tokens = len(tokens)

    def forget(self) -> None:
        """Drop the KV cache and every saved prefix snapshot: the next call reads its whole prompt."""
        self.llama.reset()
        self.llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if self._snapshots is not None:
            self._snapshots.clear()
