"""Continuous batching: several greedy generations advance together, one forward pass per token.

A `DecodeBatch` holds the generations admitted to the model (one KV sequence each, numbered from
1; sequence 0 keeps the single-prompt cache). Each `step()` is one forward pass that decodes the
next token of every generation being written plus a slice of the prompts still being read, so a
newcomer is read while the others keep writing, and a finished generation frees its sequence
for the next one between two steps. A prompt that shares its head with sequence 0 or with
another admitted prompt copies those KV cells (a copy shares cells, it reads nothing) and reads
only the rest. Sequence 0 keeps the prompt of the last generation that ended, as the
single-prompt cache keeps the last prompt, so the next prompt of the same template (another
turn's reasons) reads its own tail only.

The model is behind `Engine`, a handful of KV and decode operations: llama_engine.py implements
it over llama.cpp, and the tests over a deterministic fake. Who feeds the batch, and from which
thread, is scheduler.py's business.
"""

from __future__ import annotations

import itertools
import queue
from collections import deque
from typing import Iterator, Protocol, Sequence

# Prompt tokens read in a step where other prompts are being written: larger reads the waiting
# prompts sooner, smaller keeps the written ones flowing (a step reads ~400 tokens/s on 2 cores).
PREFILL_SLICE = 96
# A prompt waits for another to finish reading their shared head only when that saves this much.
MIN_SHARE = 16

STARTED = "started"  # on a call's queue: its first prompt has a sequence
DONE = "done"  # on a call's queue: every prompt has ended


class Engine(Protocol):
    """One model context whose KV cells are shared by numbered sequences."""

    n_ctx: int  # KV cells in all
    n_batch: int  # most tokens one forward pass takes

    def cached(self) -> Sequence[int]:
        """The tokens sequence 0 holds (the single-prompt cache)."""

    def keep_cached(self, source: int, tokens: Sequence[int]) -> None:
        """Sequence 0 becomes the first len(tokens) positions of `source`, which hold `tokens`."""

    def truncate_cached(self, n: int) -> None:
        """Sequence 0 keeps its first n positions only."""

    def copy(self, source: int, target: int, n: int) -> None:
        """Positions [0, n) of `source` become those of `target` too (the cells are shared)."""

    def free(self, seq: int) -> None: ...

    def decode(self, entries: Sequence[tuple[int, int, int, bool]], allowed: dict | None = None) -> list[int]:
        """One forward pass over (sequence, position, token, wants the next token) entries: the
        greedy next token after each entry that wants one, in order. `allowed` (only passed when
        some generation has one): sequence -> the token ids its next token is chosen among."""

    def piece(self, token: int) -> bytes: ...

    def is_end(self, token: int) -> bool: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Call:
    """One caller's prompts and the queue their pieces arrive on: (index, text), (index, None)
    when prompt `index` ends, STARTED, DONE, or an exception."""

    def __init__(self, prompts: Sequence[Sequence[int]], max_tokens: int, stops: Sequence[str], *,
                 admit_by: float | None = None, reservation=None, allowed: Sequence | None = None):
        """`allowed`: per prompt, the token ids (an int array) its generation may write, or None for any."""
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if allowed is not None and len(allowed) != len(prompts):
            raise ValueError(f"allowed has {len(allowed)} entries for {len(prompts)} prompts")
        self.requests = [Request(self, i, list(tokens), allowed[i] if allowed is not None else None)
                         for i, tokens in enumerate(prompts)]
        self.max_tokens = max_tokens
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1  # text that might begin a stop sequence
        self.admit_by = admit_by  # monotonic time by which it must have a sequence (None: no limit)
        self.reservation = reservation
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False  # the caller gave up: its sequences are freed at the next step
        self.spare = False  # written in the model's spare time: a turn's reservation stops it (scheduler)
        self.started = False
        self.open = len(self.requests)


class Request:
    """One prompt of a call, and how far it has been read and written."""

    __slots__ = ("call", "index", "tokens", "allowed", "seq", "pos", "source", "share", "next_token", "written", "raw",
                 "sent", "evaluated")

    def __init__(self, call: Call, index: int, tokens: list[int], allowed=None):
        self.call, self.index, self.tokens = call, index, tokens
        self.allowed = allowed  # the token ids it may write (None: any)
        self.seq = 0  # its KV sequence once admitted
        self.pos = 0  # positions in the KV cache (prompt, then written tokens)
        self.source: Request | None = None  # waits for this one to have read `share` shared tokens
        self.share = 0
        self.next_token: int | None = None  # read from the last forward pass, not yet fed back
        self.written = 0
        self.raw = b""
        self.sent = 0  # characters of the decoded text already sent
        self.evaluated = 0  # prompt tokens it really read

    @property
    def reading(self) -> bool:
        return self.source is None and self.next_token is None and self.pos < len(self.tokens)

    def growth(self) -> int:
        """KV cells it may still add (its head, when it waits for one, comes as a copy)."""
        return len(self.tokens) + self.call.max_tokens - (self.share if self.source is not None else self.pos)


class KVCells:
    """The KV cells each sequence holds, shared as the engine shares them: a copy references its
    source's cells, and a cell is in use while any sequence holds it."""

    def __init__(self):
        self._segments: dict[int, list[list[int]]] = {}  # sequence -> [[block, start, end]], positions [0, end)
        self._creator: dict[int, int] = {}  # block -> the sequence that wrote it
        self._blocks = itertools.count()
        self.cached: list[int] = []  # what sequence 0 holds, as far as this count knows

    def extend(self, seq: int, n: int) -> None:
        segments = self._segments.setdefault(seq, [])
        if segments and self._creator.get(segments[-1][0]) == seq:
            segments[-1][2] += n
            return
        block, start = next(self._blocks), segments[-1][2] if segments else 0
        self._creator[block] = seq
        segments.append([block, start, start + n])

    def copy(self, source: int, target: int, n: int) -> None:
        self._segments[target] = [[b, s, min(e, n)] for b, s, e in self._segments.get(source, []) if s < n]

    def truncate_cached(self, n: int) -> None:
        self.copy(0, 0, n)
        self.cached = self.cached[:n]

    def free(self, seq: int) -> None:
        self._segments.pop(seq, None)

    def sync_cached(self, tokens: list[int]) -> None:
        """Sequence 0 as the engine has it: calls that took the model whole may have rewritten it."""
        if tokens != self.cached:
            self.free(0)
            self.extend(0, len(tokens))
            self.cached = tokens

    def used(self) -> int:
        ends: dict[int, tuple[int, int]] = {}
        for segments in self._segments.values():
            for block, start, end in segments:
                ends[block] = (start, max(end, ends.get(block, (0, 0))[1]))
        return sum(end - start for start, end in ends.values())


class DecodeBatch:
    """The admitted generations of one engine, advanced one forward pass at a time (not thread-safe)."""

    def __init__(self, engine: Engine, parallel: int, *, stats: dict | None = None, prefill_slice: int = PREFILL_SLICE):
        self.engine = engine
        self.parallel = parallel
        self.prefill_slice = prefill_slice
        self.free_seqs = list(range(parallel, 0, -1))
        self.live: list[Request] = []  # in admission order: earlier prompts are read first
        self.cells = KVCells()
        self.stats = stats if stats is not None else {"prompt_tokens": 0, "evaluated_tokens": 0}
        self.ended: list[Request] = []  # since the owner last emptied it

    # Admission ---------------------------------------------------------------------------------

    def try_admit(self, req: Request) -> bool:
        """Give `req` a sequence and its shared head now; False if no sequence or KV room is free."""
        if not self.free_seqs:
            return False
        self.cells.sync_cached(list(self.engine.cached()))
        plan = self._plan(req)
        if not self._fits(req, plan):
            if self.live or not self.cells.cached:
                return False  # room comes back as the others end
            self.engine.truncate_cached(0)  # the cache is all that stands in the way
            self.cells.truncate_cached(0)
            plan = self._plan(req)
        source, now, follow, later = plan
        req.seq = self.free_seqs.pop()
        self.live.append(req)
        self.stats["prompt_tokens"] += len(req.tokens)
        if follow is not None:
            req.source, req.share = follow, later
        elif now:
            self._take(req, source, now)
        if not req.call.started:
            req.call.started = True
            req.call.out.put(STARTED)
        return True

    def _plan(self, req: Request) -> tuple[Request | None, int, Request | None, int]:
        """Where its head comes from: (source now, tokens; None is sequence 0) and (source to wait for, tokens).

        It waits only for a prompt of its own call (a stream_many's first prompt reading the shared
        head): a call is cancelled whole, so that source cannot vanish and leave it to read the head."""
        cap = len(req.tokens) - 1  # at least one token is read, for the logits
        source, now = None, min(common_prefix(self.cells.cached, req.tokens), cap)
        follow, later = None, 0
        for other in self.live:
            n = min(common_prefix(other.tokens, req.tokens), cap)
            ready = min(n, other.pos) if other.source is None else 0
            if ready > now:
                source, now = other, ready
            if n > later and other.call is req.call:
                follow, later = other, n
        if later < now + MIN_SHARE:
            follow, later = None, 0
        return source, now, follow, later

    def _fits(self, req: Request, plan) -> bool:
        """Its cells and every admitted generation's still to come fit the KV cache, written to max_tokens."""
        _, now, follow, later = plan
        mine = len(req.tokens) + req.call.max_tokens - (later if follow is not None else now)
        return self.cells.used() + sum(r.growth() for r in self.live) + mine <= self.engine.n_ctx

    def _take(self, req: Request, source: Request | None, n: int) -> None:
        seq = 0 if source is None else source.seq
        self.engine.copy(seq, req.seq, n)
        self.cells.copy(seq, req.seq, n)
        req.pos = n
        if source is None and n < len(self.cells.cached):
            # As the single-prompt cache does, keep only the prefix in use: the old tail's cells are
            # freed, and what is read now sits right after it, where reading the prompt alone puts it.
            self.engine.truncate_cached(n)
            self.cells.truncate_cached(n)

    # Forward passes ----------------------------------------------------------------------------

    def step(self) -> tuple[int, int] | None:
        """One forward pass; (prompt tokens read, rows with logits) in it, or None when nothing is left."""
        for req in [r for r in self.live if r.call.cancelled]:
            self._end(req)
        for req in self.live:
            if req.source is not None and req.source.source is None and req.source.pos >= req.share:
                self._take(req, req.source, req.share)
                req.source = None
        entries: list[tuple[int, int, int, bool]] = []
        rows: list[Request] = []
        for req in list(self.live):
            if req.next_token is None:
                continue
            token, req.next_token = req.next_token, None
            if self._emit(req, token):
                continue
            entries.append((req.seq, req.pos, token, True))
            rows.append(req)
            req.pos += 1
        writing = len(entries)
        # Nothing being written yet: read up to the end of the next prompt only, so that it starts.
        room = min(self.prefill_slice, self.engine.n_batch - writing) if writing else self.engine.n_batch
        for req in self.live:
            if room <= 0:
                break
            if not req.reading:
                continue
            n = min(room, len(req.tokens) - req.pos)
            last = len(req.tokens) - 1
            entries.extend((req.seq, p, req.tokens[p], p == last) for p in range(req.pos, req.pos + n))
            req.pos += n
            req.evaluated += n
            room -= n
            if req.pos == len(req.tokens):
                rows.append(req)
                if not writing:
                    break
        if not entries:
            return None
        allowed = {r.seq: r.allowed for r in rows if r.allowed is not None}
        tokens = self.engine.decode(entries, allowed) if allowed else self.engine.decode(entries)
        for req, token in zip(rows, tokens):
            req.next_token = token
        for seq, n in _counts(entries).items():
            self.cells.extend(seq, n)
        read = len(entries) - writing
        self.stats["evaluated_tokens"] += read
        return read, len(rows)  # every row with logits pays the output layer, a prompt's last token too

    def _emit(self, req: Request, token: int) -> bool:
        """Send what `token` adds to the text; True when the generation has ended (and is freed)."""
        call = req.call
        done = self.engine.is_end(token)
        if not done:
            req.raw += self.engine.piece(token)
            req.written += 1
        text = req.raw.decode("utf-8", "ignore")  # an unfinished UTF-8 character waits for its last byte
        cut = min((k for k in (text.find(s) for s in call.stops) if k >= 0), default=-1)
        if cut >= 0:
            text, done = text[:cut], True
        if done or req.written >= call.max_tokens:
            if len(text) > req.sent:
                call.out.put((req.index, text[req.sent :]))
            call.out.put((req.index, None))
            self._end(req)
            return True
        ready = len(text) - call.hold
        if ready > req.sent:
            call.out.put((req.index, text[req.sent : ready]))
            req.sent = ready
        return False

    def _end(self, req: Request) -> None:
        self.live.remove(req)
        if not req.call.cancelled and req.source is None and req.pos >= len(req.tokens):
            # The last prompt read stays in sequence 0 (a copy: no cell is read again).
            self.engine.keep_cached(req.seq, req.tokens)
            self.cells.copy(req.seq, 0, len(req.tokens))
            self.cells.cached = list(req.tokens)
        self.engine.free(req.seq)
        self.cells.free(req.seq)
        self.free_seqs.append(req.seq)
        self.ended.append(req)
        req.call.open -= 1
        if req.call.open == 0 and not req.call.cancelled:
            req.call.out.put(DONE)

    def fail(self, exc: BaseException) -> None:
        """End every admitted generation with `exc` (a failed forward pass)."""
        for req in list(self.live):
            req.call.out.put(exc)
            req.call.cancelled = True  # no DONE after the error, and its cells are not kept
            self._end(req)


def _counts(entries) -> dict[int, int]:
    counts: dict[int, int] = {}
    for seq, *_ in entries:
        counts[seq] = counts.get(seq, 0) + 1
    return counts


def decode_alone(engine: Engine, call: Call, parallel: int, stats: dict | None = None) -> Iterator:
    """Decode one call in the calling thread, which has the engine to itself; yields its queue's items."""
    batch = DecodeBatch(engine, parallel, stats=stats)
    waiting = deque(call.requests)
    try:
        while True:
            while waiting and batch.try_admit(waiting[0]):
                waiting.popleft()
            progressed = batch.step() is not None
            while True:
                try:
                    item = call.out.get_nowait()
                except queue.Empty:
                    break
                yield item
                if item == DONE:
                    return
            if not progressed and not waiting:
                return
    finally:
        call.cancelled = True
        for req in list(batch.live):
            batch._end(req)
