"""Content neighbours of single items, kept in process.

Every user whose newest liked item is X sends Chroma the same query: X's own vector. Popularity is
skewed, so a few thousand items account for most of those queries; their neighbours are kept here
and only the queries particular to one request (a profile of several items, the message) go to
Chroma. An HNSW search costs about 1.8 ms of CPU per vector at 200k items, most of a request's
content search.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np

from retrieval.vectors import VectorIndex

ITEMS = 20_000  # answers kept: ids (interned) and float64 similarities, about 1 kB each at 60 hits
MAX_AGE_S = 300.0  # another worker's catalog writes reach this one's neighbours within this


class NeighbourCache:
    """`VectorIndex.query_many` where a query may name the item whose vector it is: those answers
    are kept (bounded, least recently used out) and served again while the collection is unchanged.

    An answer served from here equals a fresh Chroma query: the key holds the number of results
    asked for, and Chroma answers one query the same way each time. Writes through the index
    (`VectorIndex.version`) empty the cache; an answer older than `max_age_s` is asked again, for
    writes by other processes.
    """

    def __init__(self, index: VectorIndex, items: int = ITEMS, max_age_s: float = MAX_AGE_S, clock=time.monotonic):
        self.index = index
        self.items = items
        self.max_age_s = max_age_s
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, int], tuple[float, list[str], np.ndarray]] = OrderedDict()
        self._version = index.version
        self._lock = threading.Lock()  # request threads share the cache

    def __len__(self) -> int:
        return len(self._entries)

    def query_many(self, queries: Sequence[tuple[str | None, np.ndarray]], n: int, breadth: int | None = None) -> list[list[tuple[str, float]]]:
        """The n nearest (id, similarity) for each (item id or None, vector), in one Chroma call at most.

        Chroma is asked for `breadth` (at least n) and the answers cut to n: one breadth for
        requests of different sizes lets one kept answer serve them all.
        """
        breadth = max(n, breadth or n)
        now = self.clock()
        out: list[list[tuple[str, float]] | None] = [None] * len(queries)
        with self._lock:
            if self._version != self.index.version:  # written through this index: every answer may change
                self._entries.clear()
                self._version = self.index.version
            for position, (item_id, _) in enumerate(queries):
                entry = self._entries.get((item_id, breadth)) if item_id is not None else None
                if entry is not None and now - entry[0] <= self.max_age_s:
                    self._entries.move_to_end((item_id, breadth))
                    out[position] = list(zip(entry[1][:n], entry[2][:n].tolist()))
                    self.hits += 1
                elif item_id is not None:
                    self.misses += 1
        ask = [p for p, hits in enumerate(out) if hits is None]
        if ask:
            version = self.index.version
            answers = self.index.query_many([queries[p][1] for p in ask], breadth)
            for position, hits in zip(ask, answers):
                out[position] = hits[:n]
            kept = [(queries[p][0], hits) for p, hits in zip(ask, answers) if queries[p][0] is not None]
            with self._lock:
                if kept and version == self.index.version:  # not written meanwhile
                    for item_id, hits in kept:
                        self._keep((item_id, breadth), now, hits)
        return out

    def _keep(self, key: tuple[str, int], now: float, hits: list[tuple[str, float]]) -> None:
        ids = [sys.intern(i) for i, _ in hits]  # one copy of each id however many lists hold it
        self._entries[key] = (now, ids, np.array([s for _, s in hits], dtype=np.float64))
        self._entries.move_to_end(key)
        while len(self._entries) > self.items:
            self._entries.popitem(last=False)
