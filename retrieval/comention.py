"""Co-mention and trending: what the same people had alongside the items named now, and what is
popular lately.

C[a, b] sums, over every user who had both a and b, w_u = decay(u) / n_u, where n_u counts the
user's items and decay(u) halves every `half_life_days` of the age of the user's newest event.
Dividing by n_u makes each user's pairs weigh in proportion to the length of their history, not
its square: a conversation that named five films counts, next to a rating history of five
hundred, as a short history does, and not 10,000 times less. Ages are counted back from the
newest event in the log (not the wall clock), so a log loaded years later behaves the same.
Trending is the same decay per event, summed per item. What a person only said in chat ("I loved
Heat", records.CHAT_SOURCE) counts for co-mention but neither trends nor moves that reference
(said today, seen who knows when); its own age counts as 0.

Measured on the ReDial tuning dialogs (evaluation/reports/dialogs-tuning.md): trending is what
lifts a chat's answers above all-time popularity when the log holds conversations; the co-mention
neighbours add little with the 160 conversations a tuning fold has; they are kept for a platform
whose log holds many more, which our dialogs are too few to measure.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from retrieval.records import Event, stated_in_chat
from retrieval.topk import top_k, top_per_row

DAY = 86400.0
TRENDING_CACHE = 1000  # trending items kept ready: the list is the same for every request until the next fit


class CoMentionModel:
    """Item-item co-occurrence over users, length-normalised and time-decayed, plus trending."""

    def __init__(self, half_life_days: float = 180.0, keep: int = 300, seed_decay: float = 0.8, last: int = 10):
        self.half_life_days = half_life_days
        self.keep = keep  # neighbours kept per item: bounds memory at O(items x keep)
        self.seed_decay = seed_decay  # the newest named item weighs 1, the one before it this much, ...
        self.last = last
        # (item ids, id -> row, CSR neighbours, trending per item) swapped in whole by fit.
        self._state: tuple[list[str], dict[str, int], object, np.ndarray] = ([], {}, None, np.zeros(0))
        self._trending_top: tuple[tuple, dict[str, float]] = ((), {})  # (the state it was read from, the best TRENDING_CACHE)

    @property
    def fitted(self) -> bool:
        matrix = self._state[2]
        return matrix is not None and matrix.nnz > 0

    def fit(self, events: Iterable[Event]) -> "CoMentionModel":
        """Learn from every positive event (any order)."""
        import scipy.sparse as sp

        users: dict[str, int] = {}
        items: dict[str, int] = {}
        newest: dict[tuple[int, int], float] = {}  # (user, item) -> newest positive event time
        done: dict[tuple[int, int], float] = {}  # the same, without what was only said in chat (trending)
        for event in events:
            if event.item_id and event.weight > 0:
                key = (users.setdefault(event.user_id, len(users)), items.setdefault(event.item_id, len(items)))
                if event.timestamp > newest.get(key, float("-inf")):
                    newest[key] = event.timestamp
                if not stated_in_chat(event.text) and event.timestamp > done.get(key, float("-inf")):
                    done[key] = event.timestamp
        ids = list(items)
        if not newest:
            self._state = (ids, items, None, np.zeros(len(ids), dtype=np.float32))
            return self
        rows = np.fromiter((u for u, _ in newest), dtype=np.int64, count=len(newest))
        cols = np.fromiter((i for _, i in newest), dtype=np.int64, count=len(newest))
        times = np.fromiter(newest.values(), dtype=np.float64, count=len(newest))
        reference = max(done.values()) if done else times.max()
        done_times = np.fromiter(done.values(), dtype=np.float64, count=len(done))
        event_decay = 0.5 ** (np.maximum(reference - done_times, 0.0) / DAY / self.half_life_days)
        trending = np.bincount(np.fromiter((i for _, i in done), dtype=np.int64, count=len(done)), weights=event_decay,
                               minlength=len(ids)).astype(np.float32)

        n_users = len(users)
        last_seen = np.full(n_users, -np.inf)
        np.maximum.at(last_seen, rows, times)
        user_decay = 0.5 ** (np.maximum(reference - last_seen, 0.0) / DAY / self.half_life_days)
        length = np.bincount(rows, minlength=n_users).astype(np.float64)
        had = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, len(ids)))
        weighted = sp.diags((user_decay / np.maximum(length, 1.0)).astype(np.float32)) @ had
        matrix = (had.T @ weighted).tocsr()
        matrix.setdiag(0)
        matrix.eliminate_zeros()
        self._state = (ids, items, top_per_row(matrix, self.keep), trending)
        return self

    def adopt(self, item_ids: list[str], neighbours, trending: np.ndarray, index: dict[str, int] | None = None) -> "CoMentionModel":
        """Serve a fit done elsewhere (retrieval.fitting): CSR neighbours and trending over `item_ids`, as `fit` builds them."""
        index = index if index is not None else {i: n for n, i in enumerate(item_ids)}
        self._state = (item_ids, index, neighbours, trending)
        return self

    def scores(self, seeds: Sequence[str], n: int = 200) -> dict[str, float]:
        """The n items most co-had with the seeds (newest seed last), id -> score > 0, best first."""
        ids, index, matrix, _ = self._state
        recent = [i for i in dict.fromkeys(reversed(list(seeds))) if i in index][: self.last]
        if matrix is None or not recent:
            return {}
        weights = (self.seed_decay ** np.arange(len(recent))).astype(np.float32)
        scores = np.asarray(matrix[[index[i] for i in recent]].T @ weights).ravel()
        return _best(ids, scores, n)

    def trending(self, n: int = 200) -> dict[str, float]:
        """The n items most had lately, id -> log1p(decayed count): one recent person counts 1, one a
        half-life ago 0.5; an item had only long ago scores next to nothing."""
        state = self._state
        ids, _, _, counts = state
        if n > TRENDING_CACHE:
            return _best(ids, np.log1p(counts), n) if len(counts) else {}
        read_from, best = self._trending_top
        if read_from is not state:  # the same for every request until the next fit: computed once
            best = _best(ids, np.log1p(counts), TRENDING_CACHE) if len(counts) else {}
            self._trending_top = (state, best)
        return dict(list(best.items())[:n])


def _best(ids: list[str], scores: np.ndarray, n: int) -> dict[str, float]:
    """The n best positive scores by id, best first (equal scores: the earlier item first)."""
    positive = np.flatnonzero(scores > 0)
    best = positive[top_k(scores[positive], n)]
    return {ids[j]: float(scores[j]) for j in best}
