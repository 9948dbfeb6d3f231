"""A first-come, first-served limit on concurrent work that holds the GIL.

Candidate generation is CPU work, and most of it holds the GIL (Python, and Chroma's search). With
eight request threads on two cores, the threads fight for the GIL and CPython hands it over in no
fair order: a request could wait for several others that came after it. Admitting as many requests
as there are cores, in the order they came, gives the same throughput with a short, even wait.
"""

from __future__ import annotations

import os
import threading
from collections import deque


class FifoGate:
    """At most `slots` holders at once; waiters enter strictly in arrival order.

    A leaving holder hands its slot to the oldest waiter directly, so a newcomer can never take it
    first (a `threading.Semaphore` lets it: the woken waiter then queues again at the back).
    """

    def __init__(self, slots: int | None = None):
        self.slots = max(1, slots if slots is not None else os.cpu_count() or 1)
        self._free = self.slots
        self._lock = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()

    def __enter__(self) -> "FifoGate":
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the holder that hands its slot over
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)
