"""Background jobs of a serving process: refitting the behaviour signals after new events."""

from __future__ import annotations

import logging
import threading
import time

from core.errors import RecassistError

log = logging.getLogger(__name__)

REFIT_INTERVAL_S = 30.0  # at most this often new events trigger a refit of the collaborative signals


class Refresher:
    """Refits popularity and collaborative signals in the background after new events.

    A refit reads every event, so it runs at most once per `interval_s` and never inside a request;
    a user's own new events count at once anyway (retrieval reads their history live).
    """

    def __init__(self, engine, interval_s: float = REFIT_INTERVAL_S):
        self.engine, self.interval_s = engine, interval_s
        self._lock = threading.Lock()
        self._running = threading.Lock()
        self._scheduled = False
        self._last = float("-inf")

    def request(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
            delay = max(0.0, self._last + self.interval_s - time.monotonic())
        timer = threading.Timer(delay, self._run)
        timer.daemon = True
        timer.start()

    def _run(self) -> None:
        with self._running:
            with self._lock:
                self._scheduled = False  # events from now on schedule the next refit
            try:
                if "retriever" in self.engine.__dict__:  # not built yet: it fits itself when first used
                    self.engine.retriever.refit(self.engine.store)
            except RecassistError as exc:
                log.warning("refreshing the collaborative signals after new events failed: %s", exc)
            finally:
                self._last = time.monotonic()

