"""Content neighbours kept in process: of single items, and of any vector asked before.

Every user whose newest liked item is X sends Chroma the same query: X's own vector. Popularity is
skewed, so a few thousand items account for most of those queries; their neighbours are kept here.
A query that names no item (a profile of several items, a message) is kept by the bytes of its
vector: a user's next turn with an unchanged history asks the same profile again, and the same
words give the same vector. An HNSW search costs about 2-4 ms of CPU per vector at 200k items,
most of a request's content search, and Chroma holds the GIL while it searches: concurrent
requests of one process wait for each other's searches.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np

from retrieval.vectors import VectorIndex

ITEMS = 20_000  # answers kept: ids (interned) and float64 similarities, about 1 kB each at 60 hits
VECTORS = 10_000  # answers to vectors that name no item (profiles, messages), kept apart: one-off
#                   profiles must not push out the items' answers, which many users share
MAX_AGE_S = 300.0  # another worker's catalog writes reach this one's neighbours within this


class NeighbourCache:
    """`VectorIndex.query_many` whose answers are kept (bounded, least recently used out) and
    served again while the collection is unchanged: by item id where a query names the item whose
    vector it is, else by the exact bytes of its vector.

    An answer served from here equals a fresh Chroma query: the key holds the number of results
    asked for, and Chroma answers one query the same way each time. Writes through the index
    (`VectorIndex.version`) empty the cache; an answer older than `max_age_s` is asked again, for
    writes by other processes. The searches a fitted version publishes for the most popular items
    (`adopt`) are served as they were at fit time until a write through this index; another
    process's catalog writes reach them with the next fit.
    """

    def __init__(self, index: VectorIndex, items: int = ITEMS, max_age_s: float = MAX_AGE_S, clock=time.monotonic,
                 vectors: int = VECTORS):
        self.index = index
        self.items = items
        self.vectors = vectors
        self.max_age_s = max_age_s
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, int], tuple[float, list[str], np.ndarray]] = OrderedDict()
        self._by_vector: OrderedDict[tuple[bytes, int], tuple[float, list[str], np.ndarray]] = OrderedDict()
        self._version = index.version
        self._lock = threading.Lock()  # request threads share the cache
        self.published_hits = 0
        self._published: dict[str, int] = {}  # item id -> row of the answers a fitted version carries
        self._published_arrays: tuple | None = None

    def adopt(self, item_ids: Sequence[str], rows, hits, scores, breadth: int) -> None:
        """Serve the searches a fitting job published (retrieval.signals.attach_content) for the
        items they name, up to `breadth` results, until something is written through the index."""
        ids = [sys.intern(i) for i in item_ids]
        with self._lock:
            self._published = {ids[position]: row for row, position in enumerate(np.asarray(rows).tolist())}
            self._published_arrays = (ids, hits, scores, breadth, self.index.version)

    def __len__(self) -> int:
        return len(self._entries) + len(self._by_vector)

    @staticmethod
    def _key(item_id: str | None, vector: np.ndarray, breadth: int) -> tuple:
        if item_id is not None:
            return (item_id, breadth)
        data = np.ascontiguousarray(vector, dtype=np.float32)
        return (hashlib.blake2b(data.tobytes(), digest_size=16).digest(), breadth)  # float32: what Chroma searches with

    def _table(self, item_id: str | None) -> tuple[OrderedDict, int]:
        return (self._entries, self.items) if item_id is not None else (self._by_vector, self.vectors)

    def query_many(self, queries: Sequence[tuple[str | None, np.ndarray]], n: int, breadth: int | None = None) -> list[list[tuple[str, float]]]:
        """The n nearest (id, similarity) for each (item id or None, vector), in one Chroma call at most.

        Chroma is asked for `breadth` (at least n) and the answers cut to n: one breadth for
        requests of different sizes lets one kept answer serve them all.
        """
        breadth = max(n, breadth or n)
        now = self.clock()
        keys = [self._key(item_id, vector, breadth) for item_id, vector in queries]
        out: list[list[tuple[str, float]] | None] = [None] * len(queries)
        with self._lock:
            self._sync()
            for position, ((item_id, _), key) in enumerate(zip(queries, keys)):
                if (kept := self._kept(self._table(item_id)[0], key, now, n)) is not None:
                    out[position] = kept
                    self.hits += 1
                elif item_id is not None and (answer := self._published_answer(item_id, breadth, n)) is not None:
                    out[position] = answer
                    self.published_hits += 1
                else:
                    self.misses += 1
        ask = [p for p, hits in enumerate(out) if hits is None]
        if ask:
            version = self.index.version
            answers = self.index.query_many([queries[p][1] for p in ask], breadth)
            for position, hits in zip(ask, answers):
                out[position] = hits[:n]
            with self._lock:
                if version == self.index.version:  # not written meanwhile
                    for position, hits in zip(ask, answers):
                        self._keep(queries[position][0], keys[position], now, hits)
        return out

    def known(self, item_ids: Sequence[str], n: int, breadth: int | None = None) -> dict[str, list[tuple[str, float]]]:
        """The answers for these items that need no Chroma call (kept, or published by the fit),
        cut to n; items without one are absent. Counts nothing as a hit or a miss."""
        breadth = max(n, breadth or n)
        now = self.clock()
        out: dict[str, list[tuple[str, float]]] = {}
        with self._lock:
            self._sync()
            for item_id in dict.fromkeys(item_ids):
                answer = self._kept(self._entries, (item_id, breadth), now, n)
                if answer is None:
                    answer = self._published_answer(item_id, breadth, n)
                if answer is not None:
                    out[item_id] = answer
        return out

    def derived(self, vector: np.ndarray, n: int, breadth: int, compute) -> list[tuple[str, float]] | None:
        """An answer for `vector` worked out without Chroma by `compute()` (hits or None), kept by
        the vector's bytes apart from Chroma's own answers and served again the same way."""
        key = (b"derived" + self._key(None, vector, breadth)[0], breadth)
        now = self.clock()
        with self._lock:
            self._sync()
            if (kept := self._kept(self._by_vector, key, now, n)) is not None:
                return kept
        version = self.index.version
        hits = compute()
        if hits is not None:
            with self._lock:
                if version == self.index.version == self._version:
                    self._keep(None, key, now, hits)
            hits = hits[:n]
        return hits

    def _kept(self, table: OrderedDict, key: tuple, now: float, n: int) -> list[tuple[str, float]] | None:
        """Under the lock: the answer kept under `key` cut to n (and used last), unless older than max_age_s."""
        entry = table.get(key)
        if entry is None or now - entry[0] > self.max_age_s:
            return None
        table.move_to_end(key)
        return list(zip(entry[1][:n], entry[2][:n].tolist()))

    def _sync(self) -> None:
        """Under the lock: after a write through the index every kept answer may have changed."""
        if self._version != self.index.version:
            self._entries.clear()
            self._by_vector.clear()
            self._version = self.index.version

    def _published_answer(self, item_id: str, breadth: int, n: int) -> list[tuple[str, float]] | None:
        """The published search of `item_id` cut to n, when it was asked as wide as `breadth` and
        nothing was written through the index since it was adopted (under the lock)."""
        row = self._published.get(item_id)
        if row is None:
            return None
        ids, hits, scores, published_breadth, version = self._published_arrays
        if breadth > published_breadth or version != self.index.version:
            return None
        found = np.asarray(hits[row][:n])
        keep = found >= 0
        return list(zip((ids[p] for p in found[keep].tolist()), np.asarray(scores[row][:n])[keep].tolist()))

    def _keep(self, item_id: str | None, key: tuple, now: float, hits: list[tuple[str, float]]) -> None:
        table, bound = self._table(item_id)
        if bound <= 0:
            return
        ids = [sys.intern(i) for i, _ in hits]  # one copy of each id however many lists hold it
        table[key] = (now, ids, np.array([s for _, s in hits], dtype=np.float64))
        table.move_to_end(key)
        while len(table) > bound:
            table.popitem(last=False)
