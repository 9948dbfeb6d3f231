"""One decode loop that every thread's greedy generations join: a local model shared by many turns.

Callers `submit()` prompts and read their pieces from `results()`; a thread of the scheduler's
own admits waiting prompts between forward passes (batching.DecodeBatch) while sequences are
free, so a second turn's reasons start at the next step instead of after the first turn. Work
that cannot join a batch (label log-probabilities, sampled or grammar-constrained streams) takes
the model whole through `exclusive()`: admission stops, the admitted generations finish, and the
loop waits until it is done.

Admission with a time budget: `reserve(budget_s, sequences)` estimates when the queued work,
the other reservations' and this one's would be written, from a cost model of forward passes
fitted as they run, and grants as many sequences as fit (None when not even `least` does). A
reservation's calls must get a sequence by its deadline, else they raise ModelBusy.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from assistant.llm.base import ModelBusy
from assistant.llm.batching import DONE, PREFILL_SLICE, STARTED, Call, DecodeBatch, decode_alone
from core.errors import LLMError

_ids = itertools.count(1)
# A turn's share is at least this many generations when it asks for that many (fewer only when
# they do not fit the budget): one reason hook in five fails the evidence check (50 of 60 passed on
# the demo books), so a turn granted one alone went without a model-written reason one time in five.
TURN_SHARE_FLOOR = 2
log = logging.getLogger(__name__)


class CostModel:
    """Seconds of forward passes: speed x (fixed + per written row x rows + per prompt token x tokens).

    The shape is the embedded Gemma's on 2 cores, 2026-12-06: 1 row 16 ms, 8 rows 50 ms, 16 rows
    101 ms, 96 prompt tokens 210 ms (a row pays the 262k-word output layer). `speed` follows the
    passes as they run (an exponentially weighted mean of log(measured / predicted)), so it learns
    this machine and whatever else is running on it within a few passes. A shape fitted from those
    few passes went wrong: contended passes taught it a huge fixed cost, and every turn was refused.
    """

    def __init__(self, fixed: float = 0.010, per_row: float = 0.0055, per_token: float = 0.0022, memory: float = 0.9):
        self.shape = (fixed, per_row, per_token)
        self.memory = memory
        self._log_speed = 0.0

    @property
    def speed(self) -> float:
        return math.exp(self._log_speed)

    def observe(self, prompt_tokens: int, rows: int, seconds: float) -> None:
        fixed, per_row, per_token = self.shape
        predicted = fixed + per_row * rows + per_token * prompt_tokens
        if seconds > 0:
            self._log_speed = self.memory * self._log_speed + (1 - self.memory) * math.log(seconds / predicted)

    def seconds(self, prompt_tokens: float, written: float, sequences: int, lanes: int) -> float:
        """Time to read `prompt_tokens` and write `written` tokens of `sequences` generations, `lanes` at a time."""
        fixed, per_row, per_token = self.shape
        lanes = max(1, min(lanes, sequences))
        steps = max(written / lanes, prompt_tokens / PREFILL_SLICE)
        return self.speed * (steps * fixed + written * per_row + prompt_tokens * per_token)


@dataclass(eq=False)
class Reservation:
    """Model time promised to one turn: `sequences` generations, written by `deadline`."""

    sequences: int
    deadline: float  # time.monotonic(): its calls are admitted by then
    estimate_s: float
    submitted: int = 0
    alone: bool = False  # granted by an idle model to a turn with no peers: it shares with nobody
    id: str = field(default_factory=lambda: f"r{next(_ids)}")


class BatchScheduler:
    """Admits generations from any thread into one DecodeBatch that its own thread advances."""

    def __init__(self, engine, *, parallel: int = 8, max_waiting: int = 64, queue_timeout_s: float = 120.0,
                 name: str = "the local model", stats: dict | None = None, costs: CostModel | None = None):
        self.engine = engine
        self.parallel = parallel
        self.max_waiting = max_waiting
        self.queue_timeout_s = queue_timeout_s
        self.name = name
        self.stats = stats if stats is not None else {"prompt_tokens": 0, "evaluated_tokens": 0}
        self.costs = costs or CostModel()
        self.avg_read = 64.0  # prompt tokens a generation reads after its shared head (measured as they end)
        self.avg_written = 16.0  # tokens a generation writes
        self._batch = DecodeBatch(engine, parallel, stats=self.stats)
        self._waiting: deque = deque()
        self._reservations: set[Reservation] = set()
        self._cv = threading.Condition()
        self._busy = False  # generations are admitted (read under _cv)
        self._exclusive = 0  # callers waiting for, or holding, the whole model
        self._owner: int | None = None  # the thread holding it
        self._model = threading.Lock()  # exclusive callers take turns
        self._thread: threading.Thread | None = None
        self._closed = False

    # Generations -------------------------------------------------------------------------------

    def submit(self, prompts: Sequence[Sequence[int]], *, max_tokens: int, stops: Sequence[str] = (),
               reservation: Reservation | None = None, spare: bool = False, allowed: Sequence | None = None) -> Call:
        """Queue greedy generations of `prompts` (token ids); read them with results().

        `spare`: work for the model's spare time (reason hooks written ahead, assistant/prewrite.py):
        the next turn that reserves model time stops it, and its reader gets ModelBusy.
        `allowed`: per prompt, the token ids its generation may write (None: any)."""
        admit_by = reservation.deadline if reservation is not None else time.monotonic() + self.queue_timeout_s
        call = Call(prompts, max_tokens, stops, admit_by=admit_by, reservation=reservation, allowed=allowed)
        call.spare = spare
        with self._cv:
            if self._closed:
                raise LLMError(f"{self.name} was closed")
            if self._waiting and len(self._waiting) + len(prompts) > self.max_waiting:
                raise ModelBusy(f"{len(self._waiting)} generations already wait for {self.name}; try again shortly")
            if reservation is not None:
                reservation.submitted += len(prompts)
            self._waiting.extend(call.requests)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="llm-batch", daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return call

    def results(self, call: Call, *, started: Callable[[], None] | None = None,
                alive: Callable[[], bool] | None = None) -> Iterator[tuple[int, str | None]]:
        """(index, piece) as the call's prompts are written, (index, None) when prompt `index` ends.

        ModelBusy if it gets no sequence by its admission deadline; `started()` once it has one;
        `alive()` (polled) False means the caller went away. Closing this generator frees its sequences.
        """
        try:
            while (item := self._next(call, alive)) != DONE:
                if _is_piece(item, started):
                    yield item
        finally:
            self.cancel(call)

    def _next(self, call: Call, alive: Callable[[], bool] | None):
        while True:
            wait = 0.25 if alive is not None else None
            if not call.started and call.admit_by is not None:
                left = call.admit_by - time.monotonic()
                wait = left if wait is None else min(wait, left)
                if left <= 0:
                    with self._cv:  # admitted at the last moment: take it
                        if not call.started:
                            raise ModelBusy(f"{self.name} had no room for this generation in time ({self._why_busy()})")
                    continue
            try:
                return call.out.get(timeout=wait)
            except queue.Empty:
                if alive is not None and not alive():
                    raise LLMError("the caller went away") from None

    def _why_busy(self) -> str:
        return f"{len(self._batch.live)} being written, {len(self._waiting)} waiting"

    def cancel(self, call: Call) -> None:
        """The caller gave up: drop its waiting prompts now and free its sequences at the next step."""
        with self._cv:
            if call.open == 0 or call.cancelled:
                return
            call.cancelled = True
            mine = set(call.requests)
            self._waiting = deque(r for r in self._waiting if r not in mine)
            self._cv.notify_all()

    # The model whole ---------------------------------------------------------------------------

    def holds_exclusive(self) -> bool:
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def exclusive(self, timeout_s: float):
        """The model for this thread alone until the block ends (re-entrant); ModelBusy after timeout_s."""
        if self.holds_exclusive():
            yield
            return
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._exclusive += 1  # from now on the loop admits nothing
            self._cv.notify_all()
            while self._busy and self._cv.wait(max(0.0, deadline - time.monotonic())):
                pass
            idle = not self._busy
        # Outside _cv: another exclusive caller releases the model under it.
        if not (idle and self._model.acquire(timeout=max(0.0, deadline - time.monotonic()))):
            with self._cv:
                self._exclusive -= 1
                self._cv.notify_all()
            raise ModelBusy(
                f"{self.name} stayed busy for {timeout_s:.0f}s (other requests hold it); retry, or "
                "run the model behind an OpenAI-compatible server for concurrent users"
            )
        self._owner = threading.get_ident()
        try:
            yield
        finally:
            self._owner = None
            self._model.release()
            with self._cv:
                self._exclusive -= 1
                self._cv.notify_all()

    def decode_alone(self, call: Call, started: Callable[[], None] | None = None) -> Iterator[tuple[int, str | None]]:
        """What results() gives, decoded in this thread, which holds exclusive() (nothing else is admitted)."""
        for item in decode_alone(self.engine, call, self.parallel, self.stats):
            if item == DONE:
                return
            if _is_piece(item, started):
                yield item

    # Admission with a time budget ----------------------------------------------------------------

    def estimate_s(self, sequences: int = 0) -> float:
        """Seconds until the generations admitted, waiting and reserved now, and `sequences` more, are written."""
        with self._cv:
            return self._estimate(sequences)

    def _estimate(self, sequences: int) -> float:
        live = [r for r in self._batch.live if not r.call.cancelled]  # cancelled ones are freed at the next step
        requests = live + list(self._waiting)
        read = sum(max(0, len(r.tokens) - r.pos) for r in live)
        read += sum(min(len(r.tokens), self.avg_read) for r in self._waiting)
        written = sum(max(1.0, self.avg_written - r.written) for r in requests)
        more = sequences + sum(max(0, r.sequences - r.submitted) for r in self._reservations)
        n = len(requests) + more
        return self.costs.seconds(read + more * self.avg_read, written + more * self.avg_written, n, self.parallel)

    def reserve(self, budget_s: float, sequences: int, least: int = 1, peers: int = 0) -> Reservation | None:
        """Model time for up to `sequences` generations written within `budget_s`: the most that fit
        (at least `least`), or None.

        Turns share: with k other turns holding a reservation or about to ask (`peers`, which the
        caller counts), at most ceil(sequences / (k + 1)) are granted, so that a burst of turns gets
        a few generations each rather than the first ones all of them. An idle model with no peers
        grants all that was asked: refusing would not make it faster, a lone turn competes with
        nobody, and a model that is never asked never learns its speed again."""
        least = max(1, least)
        with self._cv:
            self._give_way()
            live = any(not r.call.cancelled for r in self._batch.live)
            idle = not (live or self._waiting or self._reservations)
            others = max(len(self._reservations), peers)
            share = max(least, min(sequences, TURN_SHARE_FLOOR), -(-sequences // (others + 1)))
            # Once granted, a turn's calls wait for a sequence as long as any call may (the budget
            # decides what is granted; a busier machine than estimated makes the turn slower, not
            # its reasons fail).
            admit_by = time.monotonic() + max(budget_s, self.queue_timeout_s)
            for n in range(min(sequences, share), least - 1, -1):
                estimate = self._estimate(n)
                if estimate <= budget_s or idle:  # a lone turn gets all it asks: sharing is not at stake
                    reservation = Reservation(n, admit_by, estimate, alone=idle and others == 0)
                    self._reservations.add(reservation)
                    log.debug("granted %d of %d generations (estimate %.2fs, %d others)", n, sequences, estimate, others)
                    return reservation
            log.debug("no room within %.2fs for %d others' turns and this one", budget_s, others)
            return None

    def _give_way(self) -> None:
        """Stop every spare-time call (under _cv): a turn wants the model. Their sequences are freed
        at the next step, their readers get ModelBusy now."""
        spare = {r.call for r in [*self._batch.live, *self._waiting] if r.call.spare and not r.call.cancelled}
        if not spare:
            return
        for call in spare:
            call.cancelled = True
            call.out.put(ModelBusy(f"{self.name} gave way to a turn"))
        self._waiting = deque(r for r in self._waiting if not r.call.cancelled)
        self._cv.notify_all()

    def release(self, reservation: Reservation) -> None:
        with self._cv:
            self._reservations.discard(reservation)

    # The loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                if not self._next_step():
                    return
            except Exception as exc:  # a failed forward pass ends what was admitted, not the loop
                log.exception("the decode loop of %s failed", self.name)
                with self._cv:
                    self._batch.fail(exc if isinstance(exc, LLMError) else LLMError(f"{self.name} failed: {exc}"))

    def _next_step(self) -> bool:
        """Admit what fits, then one forward pass; False once closed."""
        with self._cv:
            while True:
                if self._closed:
                    self._fail(LLMError(f"{self.name} was closed"))
                    return False
                if not self._exclusive:
                    self._admit()
                self._busy = bool(self._batch.live)
                if self._busy:
                    break
                self._cv.notify_all()  # an exclusive caller may be waiting for this
                self._cv.wait()
        started = time.perf_counter()
        work = self._batch.step()
        if work is not None:
            self.costs.observe(work[0], work[1], time.perf_counter() - started)
        self._learn()
        return True

    def _admit(self) -> None:
        while self._waiting:
            req = self._waiting[0]
            if req.call.cancelled:
                self._waiting.popleft()
                continue
            if not self._batch.try_admit(req):
                return
            self._waiting.popleft()

    def _learn(self) -> None:
        for req in self._batch.ended:
            if not req.call.cancelled:
                self.avg_read = 0.9 * self.avg_read + 0.1 * req.evaluated
                self.avg_written = 0.9 * self.avg_written + 0.1 * req.written
        self._batch.ended.clear()

    def _fail(self, exc: LLMError) -> None:
        self._batch.fail(exc)
        for req in self._waiting:
            req.call.out.put(exc)
        self._waiting.clear()

    def close(self) -> None:
        """Stop the loop; generations still admitted or waiting end with an LLMError."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)


def _is_piece(item, started: Callable[[], None] | None) -> bool:
    """True for an (index, piece) item; runs `started` for STARTED and raises a queued exception."""
    if isinstance(item, BaseException):
        raise item
    if item == STARTED:
        if started is not None:
            started()
        return False
    return True
