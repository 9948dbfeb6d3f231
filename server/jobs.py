"""Background jobs of a serving process: fitting the global signals after new events, off the
request path, and serving what another worker or `recassist fit` published."""

from __future__ import annotations

import logging
import threading
import time

from core.errors import RecassistError

log = logging.getLogger(__name__)

REFIT_INTERVAL_S = 30.0  # at most this often new events trigger a refit of the collaborative signals
REST_PER_FIT = 2.0  # after a fit of t seconds the next waits at least this x t: fitting takes at most a third of a core


class Refresher:
    """Fits the global signals (popularity, trending, sequential, collaborative) in the background
    after new events, and publishes them for every worker of the data dir.

    A fit reads every event, so it runs at most once per `interval_s` (and waits twice as long as
    the last fit took: at 10M events a 100 s fit is followed by 200 s without one, so a stream of
    events never keeps a core fitting), never inside a request, and
    in one worker at a time (a file lock in the signals folder; the others serve what it publishes,
    checked every `interval_s` by `watch`). A user's own new events count at once anyway
    (retrieval reads their history live).
    """

    def __init__(self, engine, interval_s: float = REFIT_INTERVAL_S, enabled: bool = True):
        """`enabled` False (setting fit_interval_s 0): never fit here, only follow what `recassist
        fit` publishes."""
        self.engine, self.interval_s, self.enabled = engine, interval_s, enabled
        self._lock = threading.Lock()
        self._running = threading.Lock()
        self._scheduled = False
        self._last = float("-inf")
        self.last_fit_s = 0.0  # how long the last fit here took

    def request(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        threading.Thread(target=self._run, name="recassist-fit", daemon=True).start()

    def gap_s(self) -> float:
        """How long after the last fit ended the next may start."""
        return max(self.interval_s, REST_PER_FIT * self.last_fit_s)

    def _run(self) -> None:
        with self._running:  # a fit asked for during another waits for it to end, then rests
            rest = self._last + self.gap_s() - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            with self._lock:
                self._scheduled = False  # events from now on schedule the next fit
            began = time.monotonic()
            try:
                if self.engine.fit(wait=False) is None:  # another worker is fitting: serve what it publishes
                    self.engine.reload_signals()
            except RecassistError as exc:
                log.warning("refreshing the signals after new events failed: %s", exc)
            finally:
                self._last = time.monotonic()
                self.last_fit_s = self._last - began

    def watch(self) -> threading.Thread:
        """Every `interval_s`, serve signals published elsewhere since (another worker, a cron
        `recassist fit`), and fit after events this process wrote outside `/v1/events` (a like said
        in chat, a card's feedback, a request kept for the `asked` signal, a delete of one event)."""

        def written() -> int:
            return getattr(getattr(self.engine, "store", None), "events_written", 0)

        def loop() -> None:
            seen = written()
            while True:
                time.sleep(self.interval_s)
                try:
                    self.engine.reload_signals()
                except (RecassistError, OSError) as exc:
                    log.warning("reading the published signals failed: %s", exc)
                now = written()
                if now != seen:  # and not fitted since (a delete-my-data fits at once)
                    seen = now
                    try:
                        if self.engine.signals_stale():
                            self.request()
                    except (RecassistError, OSError) as exc:
                        log.warning("checking the published signals failed: %s", exc)

        thread = threading.Thread(target=loop, name="recassist-signals-watch", daemon=True)
        thread.start()
        return thread
