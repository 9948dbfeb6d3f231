"""A time-sensitive catalog (news): old items fade, what is new and what is trending comes forward.

Off unless `RECASSIST_FRESHNESS_HALF_LIFE_HOURS` is set above 0. Then, for each request:

- every fused candidate with a publication time (`Item.published_at`) is multiplied by
  0.5 ** (age / half-life), its age counted from now (the evaluation passes the request's time);
  one published after now is not out yet and is dropped; items without one keep their score
  (pages that do not age);
- trending (`retrieval.live` keeps it current between fits) weighs at least `TRENDING_WEIGHT`
  times the behaviour confidence, for requests with or without words.

A `fresh` signal of the newest items (whatever their relevance) was tried and dropped: at weight
0.05 to 0.3 next to signals scaled to 1 it cost Recall@10 on the synthetic news platform (0.31 ->
0.13-0.19 at a 12 h half-life, `python -m evaluation.news`); brand-new items come in through the
content signals and, once read, trending.

The publication times are read from the store once, then only for items written since
(`updated_at`), at most every `REFRESH_S`.
"""

from __future__ import annotations

import threading
import time

import numpy as np

TRENDING_WEIGHT = 1.0
REFRESH_S = 30.0
HOUR = 3600.0


class Freshness:
    """Decay by age and trending raised, for one retriever (see the module docstring)."""

    def __init__(self, store, half_life_hours: float, clock=time.time, refresh_s: float = REFRESH_S):
        if half_life_hours <= 0:
            raise ValueError("half_life_hours must be above 0 (0 turns freshness off: build no Freshness)")
        self.store, self.half_life_s, self.clock, self.refresh_s = store, half_life_hours * HOUR, clock, refresh_s
        self.published: dict[str, float] = {}
        self._seen_update = float("-inf")  # items.updated_at read up to here
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def factor(self, age_s: np.ndarray | float):
        """The multiplier at this age: 1 when just published, 0.5 one half-life later."""
        return 0.5 ** (np.maximum(age_s, 0.0) / self.half_life_s)

    def weigh(self, weights: dict, confidence: float) -> None:
        """Before fusion: trending's weight raised (the publication times refreshed when due)."""
        self._refresh()
        weights["trending"] = max(weights.get("trending", 0.0), TRENDING_WEIGHT * confidence)

    def decay(self, fused: dict[str, float], found_by: dict) -> None:
        """After fusion: each dated candidate's score times its decay; unpublished ones dropped."""
        now, published = float(self.clock()), self.published
        for item_id in list(fused):
            moment = published.get(item_id)
            if moment is None:
                continue
            if moment > now:
                del fused[item_id]
                found_by.pop(item_id, None)
            else:
                fused[item_id] *= float(self.factor(now - moment))

    def _refresh(self) -> None:
        if time.monotonic() - self._checked < self.refresh_s or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked = time.monotonic()
            with self.store.database.read() as db:
                rows = db.all("SELECT id, published_at, updated_at FROM items WHERE updated_at >= ?", (self._seen_update,))
            if not rows:
                return
            published = dict(self.published)
            for item_id, moment, updated in rows:
                if moment is None:
                    published.pop(item_id, None)
                else:
                    published[item_id] = float(moment)
                self._seen_update = max(self._seen_update, float(updated))
            self.published = published
        finally:
            self._lock.release()
