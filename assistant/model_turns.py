"""Who gets the model for a turn. A backend that runs one call at a time is taken by whole turns,
so one answer finishes before the next starts; under load a turn goes on without the model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class ModelTurns:
    """Whole turns take a one-call-at-a-time model in turn, so one answer finishes before the next starts.

    At most `seats` turns wait for it, each for up to `wait_s`; any other turn goes without the model
    at once. Under load, an answer now beats a better one after every turn queued ahead of it.
    """

    def __init__(self, seats: int = 1):
        self._model = threading.Lock()
        self._count = threading.Lock()
        self._admitted = 0  # turns holding or waiting for the model
        self._limit = seats + 1

    @contextmanager
    def take(self, wait_s: float) -> Iterator[bool]:
        """True while this turn holds the model; False if it is busy (the turn goes on without it)."""
        with self._count:
            admitted = self._admitted < self._limit
            if admitted:
                self._admitted += 1
        got = admitted and self._model.acquire(timeout=wait_s)
        try:
            yield got
        finally:
            if got:
                self._model.release()
            if admitted:
                with self._count:
                    self._admitted -= 1


class ModelGate:
    """The LLM for one turn's stages: None when there is none, or when it stays busy with other turns.

    A local model that batches across calls is reserved: model time for up to `sequences` reasons
    within `budget_s` (fewer under load; the view says how many and until when). One that does
    not is taken by whole turns (ModelTurns). A server (remote) batches concurrent calls itself."""

    def __init__(self, llm: Callable[[], object], wait_s: float, *, budget_s: float = 2.5, sequences: int = 5):
        self._llm, self._wait_s = llm, wait_s
        self._budget_s, self._sequences = budget_s, sequences
        self._turns = ModelTurns()
        self._coming = 0  # turns of this process between their start and the end of their model step
        self._count = threading.Lock()
        self._last_end = float("-inf")  # time.monotonic() when the last turn left its model step

    @contextmanager
    def coming(self) -> Iterator[None]:
        """A turn that will ask for the model soon (it is still understanding or retrieving): the
        model shares its time with it too, so the first turn of a burst does not take it all."""
        with self._count:
            self._coming += 1
        try:
            yield
        finally:
            with self._count:
                self._coming -= 1
                self._last_end = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since the last turn of this process left its model step; 0 while one is on its way."""
        with self._count:
            return 0.0 if self._coming else time.monotonic() - self._last_end

    @contextmanager
    def turn(self, spent_s: float = 0.0) -> Iterator[object]:
        """`spent_s`: how long the turn has taken so far (understanding, retrieving); the model's
        share must fit the rest of the turn's budget, not a whole budget of its own, or a turn that
        waited for the cores under load would answer well past it."""
        llm = self._llm()
        if llm is None or not llm.one_call_at_a_time:
            yield llm
            return
        if getattr(llm, "batches_across_calls", False):
            peers = max(0, self._coming - 1)  # the others coming; this turn counts itself in too
            budget = max(0.0, self._budget_s - spent_s)
            with llm.reserve(budget, sequences=self._sequences, least=1, peers=peers) as view:
                yield view  # None: no room within the budget (the turn says the model was busy)
            return
        with self._turns.take(self._wait_s) as got:
            yield llm if got else None
