"""Counters that follow the event log as it grows: popularity, trending and co-occurrence between fits.

A fit (`retrieval.fitting`) reads the log up to a key (`retrieval.migrations.event_key`: SQLite's
rowid, PostgreSQL's `seq`) and publishes, beside its signals, the raw counts behind them and that
key (the high-water mark). A serving process adopts the artifact, then tails the events table for
rows above the mark, every `poll_s` seconds before a request (and at once after it wrote events
itself), and folds only those rows into its counters, as arrays:

- popularity: positive events per item, events per item (the behaviour confidence), and the
  catalog priors: the same formula as the fit, so the scores equal a full refit's;
- trending: the fit's decayed count of user-item pairs (each pair at its newest positive event,
  ages from the newest such event), moved forward exactly: a new pair adds its decay, a pair seen
  again swaps its old decay for the new one, and a newer event rescales every item at once;
- co-occurrence: how many users had both items, counted for the pairs that formed since the fit
  (a raw count: the fitted neighbours are length-normalised and cut to `keep` per item, which no
  update can extend exactly); it joins the fitted neighbours at `FRESH_PAIRS_WEIGHT`.

Trending and co-occurrence need each new pair's history: the users of a batch have their earlier
events read (one indexed query per 500 users), never the whole log. The heavy signals (sequential
transitions, collaborative vectors, fitted neighbours) change only with the next fit.

Deleting a user's data publishes a new fit (`Engine.forget_fitted`); adopting it restarts the
counters from its counts and mark, so a deleted event is counted nowhere: the tail reads only rows
that exist. Other processes adopt that version before their next answer (`assistant.fitted.PublishedSignals.follow`).
On PostgreSQL a transaction that commits after a later-numbered one was tailed is missed until the
next fit, which `serve` schedules after new events anyway. On SQLite a rowid freed by deleting the
newest rows (or renumbered by VACUUM) can be taken again; a process that tailed past it counts the
new row once it adopts the fit the delete publishes.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from retrieval.comention import DAY
from retrieval.migrations import event_key, high_water
from retrieval.records import STATED_IN_CHAT_SQL

log = logging.getLogger(__name__)

POLL_S = 5.0  # how stale another process's events may be in this one's counters
BATCH = 50_000  # rows read per query of the tail
# A backlog larger than this (a bulk load by another process) is left to the fit that follows it
# (`ingest-events` fits when done; serve refits after new events): folding it would stall a request.
MAX_BACKLOG = 200_000
FRESH_PAIRS_WEIGHT = 0.5  # co-occurrence since the fit, next to the fitted neighbours (each scaled to 1)


def fit_counters(events, priors: np.ndarray, through: int | None) -> tuple[dict[str, np.ndarray], dict]:
    """What a fit publishes for the tail: raw counts per item (fitting.EventColumns) and the mark."""
    n = len(events.items)
    with_item = events.item >= 0
    positive = with_item & (events.weight > 0)
    counters = {
        "likes": np.bincount(events.item[positive], minlength=n).astype(np.float64),
        "touched": np.bincount(events.item[with_item], minlength=n).astype(np.int64),
        "priors": np.asarray(priors, dtype=np.float64),
    }
    done = positive if events.stated is None else positive & ~events.stated  # what may trend
    reference = float(events.ts[done].max()) if done.any() else (float(events.ts[positive].max()) if positive.any() else None)
    return counters, {"key": through, "trending_ref": reference}


class LiveCounters:
    """A retriever's popularity, trending and co-occurrence, kept current by tailing the events."""

    def __init__(self, store, poll_s: float = POLL_S, clock=time.monotonic):
        self.store, self.poll_s, self.clock = store, poll_s, clock
        self.retriever = None
        self.key: int | None = None  # the last event key counted; None: nothing adopted to count from
        self.folded = 0  # events counted since the adopted fit
        self._lock = threading.Lock()
        self._last_poll = float("-inf")

    def attach(self, retriever) -> "LiveCounters":
        """Serve through `retriever`: its adopt calls `adopt` here, its requests `poll_if_due`."""
        from retrieval.comention import CoMentionModel

        self.retriever = retriever
        if isinstance(retriever.comention, CoMentionModel):
            retriever.comention = FreshPairs(retriever.comention)
        retriever.live = self
        return self

    def adopt(self, signals) -> None:
        """Start from a fit's counts and mark (called by `Retriever.adopt`)."""
        tail = signals.manifest.get("tail") or {}
        with self._lock:
            if tail.get("key") is None or not {"likes", "touched", "priors"} <= set(signals.counters):
                log.info("signals %s carry no counts to follow the log from; counters move with the next fit", signals.version)
                self.key = None
                return
            self.ids = list(signals.item_ids)
            self.index = dict(signals.index)
            self.likes = np.array(signals.counters["likes"], dtype=np.float64)
            self.touched = np.array(signals.counters["touched"], dtype=np.int64)
            catalog = signals.catalog_items
            self.catalog = np.arange(catalog)  # positions that are catalog items, and their priors
            self._catalog_ids = self.ids[:catalog]
            self.priors = np.array(signals.counters["priors"], dtype=np.float64)
            self.trending = np.array(signals.trending, dtype=np.float64)
            self.reference = tail.get("trending_ref")
            self.half_life_s = signals.manifest.get("knobs", {}).get("comention", {}).get("half_life_days", 180.0) * DAY
            self.neighbours = signals.neighbours
            self.pairs = None  # co-occurrence since the fit: CSR over self.ids, built as pairs form
            self.key, self.folded = int(tail["key"]), 0
            self._last_poll = self.clock()
            if isinstance(self.retriever.comention, FreshPairs):
                self.retriever.comention.pairs = None

    def poll_if_due(self) -> int:
        """`poll` when the last one is older than `poll_s` (a request calls this: usually a no-op)."""
        if self.key is None or self.clock() - self._last_poll < self.poll_s:
            return 0
        return self.poll(wait=False)

    def poll(self, wait: bool = True) -> int:
        """Count the events stored since the last poll; returns how many. With `wait` False, a poll
        already running in another thread is enough."""
        if not self._lock.acquire(blocking=wait):
            return 0
        try:
            if self.key is None:
                return 0
            self._last_poll = self.clock()
            if high_water(self.store) - self.key > MAX_BACKLOG:
                log.warning("more than %d events arrived since the last count; popularity and trending wait for the next fit",
                            MAX_BACKLOG)
                self.key = None
                return 0
            key, total = event_key(self.store.database), 0
            while True:
                with self.store.database.read() as db:
                    rows = db.all(f"SELECT {key}, user_id, item_id, type, ts, value, {STATED_IN_CHAT_SQL} FROM events WHERE {key} > ? "
                                  f"ORDER BY {key} LIMIT ?", (self.key, BATCH))
                if not rows:
                    break
                self._fold(rows)
                total += len(rows)
                if len(rows) < BATCH:
                    break
            if total:
                self._serve()
            return total
        finally:
            self._lock.release()

    # -- folding a batch -------------------------------------------------------------------------

    def _fold(self, rows: list[tuple]) -> None:
        from retrieval.fitting import _weights

        keys, users, items, types, ts, values, stated = zip(*rows)
        before = self.key
        code = self._codes(items)
        names = list(dict.fromkeys(types))
        kind = np.array([names.index(t) for t in types], dtype=np.int8)
        weight = _weights(kind, names, values)
        ts = np.array(ts, dtype=np.float64)
        with_item = code >= 0
        positive = with_item & (weight > 0)
        n = len(self.ids)
        self.likes += np.bincount(code[positive], minlength=n)
        self.touched += np.bincount(code[with_item], minlength=n)
        if positive.any():
            stated = np.array(stated, dtype=bool)
            self._pairs(np.array(users, dtype=object)[positive], code[positive], ts[positive], stated[positive], before)
        self.key, self.folded = int(keys[-1]), self.folded + len(rows)

    def _codes(self, items) -> np.ndarray:
        """Item positions, the vocabulary grown by items first seen now (catalog ones with their prior)."""
        from retrieval.candidates import _prior

        unknown = [i for i in dict.fromkeys(items) if i and i not in self.index]
        if unknown:
            listed = self.store.get_items(unknown)
            for item_id in unknown:
                self.index[item_id] = len(self.ids)
                self.ids.append(item_id)
            grown = len(unknown)
            self.likes = np.r_[self.likes, np.zeros(grown)]
            self.touched = np.r_[self.touched, np.zeros(grown, dtype=np.int64)]
            self.trending = np.r_[self.trending, np.zeros(grown)]
            in_catalog = [i for i in unknown if i in listed]
            self.catalog = np.r_[self.catalog, [self.index[i] for i in in_catalog]].astype(np.int64)
            self.priors = np.r_[self.priors, [_prior(listed[i]) for i in in_catalog]]
        index = self.index
        return np.fromiter((index[i] if i else -1 for i in items), dtype=np.int64, count=len(items))

    def _pairs(self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, stated: np.ndarray, before: int) -> None:
        """Trending and co-occurrence for a batch's positive events (users, item positions, times,
        whether each was stated in chat: those count for co-occurrence, not for trending)."""
        names, user = np.unique(users, return_inverse=True)  # the batch's users, sorted
        old_user, old_item, old_ts, old_stated = self._earlier_pairs(names, before)
        n = len(self.ids)  # after the earlier events' items joined the vocabulary
        user = user.astype(np.int64)
        new_pairs = _newest(user * n + items, ts)
        old_pairs = _newest(old_user * n + old_item, old_ts)
        if stated.any() or old_stated.any():  # what was only said in chat counts here but never trends
            new, old = ~stated, ~old_stated
            new_trend = _newest(user[new] * n + items[new], ts[new])
            self._trend(*new_trend, *_newest(old_user[old] * n + old_item[old], old_ts[old]), n)
        else:
            self._trend(*new_pairs, *old_pairs, n)
        new_key, old_key = new_pairs[0], old_pairs[0]
        fresh = new_key[~np.isin(new_key, old_key)]
        self._co_occurrence(fresh // n, fresh % n, old_key // n, old_key % n)

    def _trend(self, new_key: np.ndarray, new_ts: np.ndarray, old_key: np.ndarray, old_ts: np.ndarray, n: int) -> None:
        """Trending moved forward by new (user x n + item, newest time) pairs, given the users'
        earlier ones (both as `_newest` gives them: one entry per pair, sorted)."""
        if not len(new_key):
            return
        at = np.minimum(np.searchsorted(old_key, new_key), max(len(old_key) - 1, 0))
        had = old_key[at] == new_key if len(old_key) else np.zeros(len(new_key), dtype=bool)
        newer = had & (new_ts > old_ts[at] if len(old_key) else had)
        reference = max(float(new_ts.max()), self.reference if self.reference is not None else float("-inf"))
        if self.reference is not None and reference > self.reference:
            self.trending *= 0.5 ** ((reference - self.reference) / self.half_life_s)
        self.reference = reference
        gained = ~had | newer
        np.add.at(self.trending, new_key[gained] % n, 0.5 ** ((reference - new_ts[gained]) / self.half_life_s))
        np.subtract.at(self.trending, old_key[at[newer]] % n, 0.5 ** ((reference - old_ts[at[newer]]) / self.half_life_s))

    def _earlier_pairs(self, users: np.ndarray, before: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(user position in `users`, item position, time, stated in chat) of their positive events up to key `before`."""
        from retrieval.fitting import _weights

        key = event_key(self.store.database)
        with self.store.database.read() as db:
            rows = db.rows_in(f"SELECT user_id, item_id, type, ts, value, {STATED_IN_CHAT_SQL} FROM events WHERE user_id IN ({{ids}})"
                              f" AND item_id IS NOT NULL AND item_id <> '' AND {key} <= {int(before)}", users.tolist())
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0), np.zeros(0, dtype=bool)
        user_col, item_col, type_col, ts_col, value_col, stated_col = zip(*rows)
        names = list(dict.fromkeys(type_col))
        positive = _weights(np.array([names.index(t) for t in type_col], dtype=np.int8), names, value_col) > 0
        user = np.searchsorted(users, np.array(user_col, dtype=object))
        return (user[positive], self._codes(item_col)[positive], np.array(ts_col, dtype=np.float64)[positive],
                np.array(stated_col, dtype=bool)[positive])

    def _co_occurrence(self, new_user, new_item, old_user, old_item) -> None:
        """C[a, b] += 1 for every user who now has both a and b, one of them new since the fit."""
        import scipy.sparse as sp

        n = len(self.ids)
        if self.pairs is not None and self.pairs.shape[0] < n:
            self.pairs.resize((n, n))
        a, b = _same_user(new_user, new_item, old_user, old_item)  # a new pair with an older one: both ways
        c, d = _same_user(new_user, new_item, new_user, new_item)  # two new ones: each order once already
        keep = c != d
        rows, cols = np.concatenate([a, b, c[keep]]), np.concatenate([b, a, d[keep]])
        if not len(rows):
            return
        added = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
        self.pairs = added if self.pairs is None else (self.pairs + added).tocsr()

    # -- serving ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        """Hand the counts to the retriever, in the forms its adopt gave it."""
        from retrieval.candidates import CONFIDENT_EVENTS_PER_ITEM

        retriever = self.retriever
        interacted = int(np.count_nonzero(self.touched))
        confidence = min(1.0, float(self.likes.sum()) / max(1, interacted) / CONFIDENT_EVENTS_PER_ITEM)
        top = float(self.likes.max(initial=0.0)) or 1.0
        scores = 0.5 * confidence * self.likes[self.catalog] / top + self.priors
        if len(self._catalog_ids) != len(self.catalog):
            self._catalog_ids = [self.ids[p] for p in self.catalog.tolist()]
        popularity = dict(retriever._popularity or {})  # items indexed here since, in no event yet: their prior
        popularity.update(zip(self._catalog_ids, scores.tolist()))
        retriever._popularity = popularity
        retriever._popular_top = None
        retriever.behaviour_confidence = confidence
        comention = retriever.comention
        model = comention.model if isinstance(comention, FreshPairs) else comention
        # Copies: a request reading the served ones must not see an item beyond the padded matrix.
        n = len(self.ids)
        model.adopt(list(self.ids), _padded(self.neighbours, n), self.trending.astype(np.float32), dict(self.index))
        if isinstance(comention, FreshPairs):
            comention.pairs = self.pairs


class FreshPairs:
    """A CoMentionModel whose neighbours gain the co-occurrence counted since the fit."""

    def __init__(self, model):
        self.model = model
        self.pairs = None  # CSR over the model's item ids, or None

    def __getattr__(self, name):
        return getattr(self.model, name)

    def scores(self, seeds, n: int = 200) -> dict[str, float]:
        """The fitted neighbours' scores (scaled to 1) plus the counted pairs' (scaled to FRESH_PAIRS_WEIGHT)."""
        fitted = self.model.scores(seeds, n)
        pairs = self.pairs
        ids, index = self.model._state[0], self.model._state[1]
        recent = [i for i in dict.fromkeys(reversed(list(seeds))) if i in index and index[i] < (pairs.shape[0] if pairs is not None else 0)]
        recent = recent[: self.model.last]
        if pairs is None or not recent:
            return fitted
        weights = (self.model.seed_decay ** np.arange(len(recent))).astype(np.float32)
        counted = np.asarray(pairs[[index[i] for i in recent]].T @ weights).ravel()
        if counted.max(initial=0.0) <= 0:
            return fitted
        top = max(fitted.values(), default=0.0) or 1.0
        merged = {i: s / top for i, s in fitted.items()}
        counted_top = float(counted.max())
        for j in np.flatnonzero(counted > 0).tolist():
            merged[ids[j]] = merged.get(ids[j], 0.0) + FRESH_PAIRS_WEIGHT * float(counted[j]) / counted_top
        best = sorted(merged.items(), key=lambda kv: -kv[1])[:n]
        return dict(best)


def _padded(matrix, n: int):
    """A CSR matrix grown to n x n with empty rows, sharing its arrays (no copy of the published ones)."""
    import scipy.sparse as sp

    rows = matrix.shape[0]
    if rows == n:
        return matrix
    indptr = np.r_[matrix.indptr, np.full(n - rows, matrix.indptr[-1], dtype=matrix.indptr.dtype)]
    return sp.csr_matrix((matrix.data, matrix.indices, indptr), shape=(n, n), copy=False)


def _newest(keys: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct key (sorted) with its newest time."""
    order = np.lexsort((ts, keys))
    keys, ts = keys[order], ts[order]
    last = np.r_[keys[1:] != keys[:-1], True] if len(keys) else np.zeros(0, dtype=bool)
    return keys[last], ts[last]


def _same_user(user_a, item_a, user_b, item_b) -> tuple[np.ndarray, np.ndarray]:
    """Every (a item, b item) whose users are equal: the join of two pair lists on the user."""
    order = np.argsort(user_b, kind="stable")
    user_b, item_b = user_b[order], item_b[order]
    start = np.searchsorted(user_b, user_a, side="left")
    count = np.searchsorted(user_b, user_a, side="right") - start
    total = int(count.sum())
    if not total:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return np.repeat(item_a, count), item_b[np.repeat(start, count) + offsets]
