"""Fitting as a job: every global signal from the whole event log, in arrays.

`fit_signals` reads the events a chunk at a time into columns (int32 codes for users and items
through dictionaries, int8 type codes, float64 timestamps, float32 weights; never an object per
event) and computes, with numpy and scipy.sparse, what `Retriever.refit` computes through Event
objects, equal to float tolerance:

- popularity and behaviour confidence (`Retriever._compute_popularity`);
- sequential transitions (`SequentialModel.fit`): each user's first time with each consumed item,
  in the log's order, pairs up to `window` apart; T = F + backward * F^T, where F holds the
  forward pairs, is the same sum as listing the backward pairs one by one;
- co-mention neighbours and trending (`CoMentionModel.fit`), the item x item product taken a block
  of item rows at a time so memory stays at O(items x keep) whatever the log;
- collaborative vectors (`collab.fit_item_factors`): the same users x items matrix, rows and
  columns in the same (sorted id) order, through the same SVD.

Timestamps stay float64 rather than int64 seconds: the store keeps fractional seconds, and the
decays and same-second orders then match the per-event code exactly.

`retrieval.signals` publishes the result; an API worker loads it and never reads the log.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from retrieval.collab import DIM, item_factors
from retrieval.comention import DAY, CoMentionModel
from retrieval.records import RATING_LEVELS, event_weight
from retrieval.sequential import NOT_CONSUMED, SequentialModel
from retrieval.signals import Signals

log = logging.getLogger(__name__)

CHUNK = 20_000  # events per read: larger chunks read no faster and leave more rows in flight
PAIRS_PER_PASS = 16_000_000  # sequential pairs turned into a sparse matrix at once (~200 MB)
# The SVD's dense BLAS work on one thread: on the busy 2-core machine, 1M events took 3.7-4.2 s against
# 7-12 s with OpenBLAS's two threads waiting on each other (its sparse products run on one anyway).
SVD_THREADS = 1
PRODUCT_BUDGET = 4_000_000  # co-mention: multiply-adds per block of item rows (~100 MB; larger blocks ran slower)


@dataclass
class EventColumns:
    """The event log as arrays, in `Store.iter_events` order (time, then event id)."""

    user: np.ndarray  # int32 position in `users`
    item: np.ndarray  # int32 position in `items`, -1 for an event without an item
    kind: np.ndarray  # int8 position in `types`
    ts: np.ndarray  # float64 seconds
    weight: np.ndarray  # float32, records.event_weight
    users: list[str]
    items: list[str]
    types: list[str]
    watermark: tuple[float, str] | None  # (timestamp, event id) of the last event read

    def __len__(self) -> int:
        return len(self.user)


def read_event_columns(store, item_ids: list[str] = (), chunk_size: int = CHUNK) -> EventColumns:
    """Every event as arrays; item codes start with `item_ids` (the catalog) in that order."""
    users: dict[str, int] = {}
    items: dict[str, int] = {item_id: n for n, item_id in enumerate(item_ids)}
    types: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {"user": [], "item": [], "kind": [], "ts": [], "weight": []}
    watermark = None

    def item_code(item_id):
        return items.setdefault(item_id, len(items)) if item_id else -1  # "" has no item, as `consumed` reads it

    for user_col, item_col, type_col, ts_col, value_col, id_col in store.iter_event_columns(chunk_size):
        n = len(user_col)
        parts["user"].append(np.fromiter((users.setdefault(u, len(users)) for u in user_col), np.int32, n))
        parts["item"].append(np.fromiter(map(item_code, item_col), np.int32, n))
        kind = np.fromiter((types.setdefault(t, len(types)) for t in type_col), np.int8, n)
        parts["kind"].append(kind)
        parts["ts"].append(np.array(ts_col, dtype=np.float64))
        parts["weight"].append(_weights(kind, list(types), value_col))
        watermark = (float(ts_col[-1]), id_col[-1])
    arrays = {
        name: np.concatenate(chunks) if chunks else np.zeros(0, dtype)
        for (name, chunks), dtype in zip(parts.items(), (np.int32, np.int32, np.int8, np.float64, np.float32))
    }
    return EventColumns(**arrays, users=list(users), items=list(items), types=list(types), watermark=watermark)


def _weights(kind: np.ndarray, types: list[str], values) -> np.ndarray:
    """records.event_weight for a chunk: a table per type, ratings by their levels."""
    weight = np.array([event_weight(t, None) for t in types], dtype=np.float32)[kind]
    if "rate" in types:
        rated = kind == types.index("rate")
        if rated.any():
            value = np.array(values, dtype=np.float64)[rated]  # None -> nan
            out = np.full(len(value), -2.0)
            for lowest, level in reversed(RATING_LEVELS):  # the highest level that fits wins
                out[value >= lowest] = level
            out[np.isnan(value)] = 1.0  # rating_weight(None)
            weight[rated] = out
    return weight


def fit_signals(store, sequential: SequentialModel | None = None, comention: CoMentionModel | None = None,
                dim: int = DIM, chunk_size: int = CHUNK) -> Signals:
    """Read the log once and compute every signal; knobs come from the model instances given."""
    from retrieval.candidates import _prior  # here, not at the top: the Retriever is to call this module

    sequential = sequential or SequentialModel()
    comention = comention or CoMentionModel()
    began = time.perf_counter()
    catalog = [(item.id, _prior(item)) for item in store.iter_items()]
    item_ids = [item_id for item_id, _ in catalog]
    priors = np.array([prior for _, prior in catalog], dtype=np.float64)
    del catalog
    events = read_event_columns(store, item_ids, chunk_size)
    timings = {"read_s": time.perf_counter() - began}
    n_items = len(events.items)

    step = time.perf_counter()
    popularity, confidence = popularity_scores(events, priors)
    timings["popularity_s"] = time.perf_counter() - step
    step = time.perf_counter()
    transitions = sequential_transitions(events, sequential)
    timings["sequential_s"] = time.perf_counter() - step
    step = time.perf_counter()
    pair_user, pair_item, newest = positive_pairs(events)
    users, items, n_events, watermark = events.users, events.items, len(events), events.watermark
    del events  # from here on, arrays per user-item pair only
    neighbours, trending = comention_signals(pair_user, pair_item, newest, len(users), n_items, comention)
    timings["comention_s"] = time.perf_counter() - step
    step = time.perf_counter()
    collab_rows, collab_vectors = collab_vectors_of(pair_user, pair_item, users, items, dim)
    timings["collab_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - began
    manifest = {
        "events": n_events, "users": len(users),
        "watermark": None if watermark is None else {"ts": watermark[0], "id": watermark[1]},
        "knobs": {"sequential": {k: getattr(sequential, k) for k in ("window", "step_decay", "backward", "source_power", "target_power")},
                  "comention": {"half_life_days": comention.half_life_days, "keep": comention.keep}, "collab_dim": dim},
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log.info("fitted signals on %d events, %d users, %d items in %.1f s", n_events, len(users), n_items, timings["total_s"])
    return Signals(item_ids=items, catalog_items=len(item_ids), popularity=popularity, confidence=confidence,
                   transitions=transitions, neighbours=neighbours, trending=trending, collab_rows=collab_rows,
                   collab_vectors=collab_vectors, manifest=manifest)


def popularity_scores(events: EventColumns, priors: np.ndarray) -> tuple[np.ndarray, float]:
    """Retriever._compute_popularity: per catalog item 0.5 * confidence * likes / top + prior, and confidence."""
    from retrieval.candidates import CONFIDENT_EVENTS_PER_ITEM

    n = len(events.items)
    with_item = events.item >= 0
    counts = np.bincount(events.item[with_item & (events.weight > 0)], minlength=n).astype(np.float64)
    interacted = int(np.count_nonzero(np.bincount(events.item[with_item], minlength=n)))
    confidence = min(1.0, float(counts.sum()) / max(1, interacted) / CONFIDENT_EVENTS_PER_ITEM)
    top = float(counts.max(initial=0.0)) or 1.0
    return 0.5 * confidence * counts[: len(priors)] / top + priors, confidence


def sequential_transitions(events: EventColumns, model: SequentialModel):
    """SequentialModel.fit's matrix, over every item of `events` (rows of items nobody consumed stay empty)."""
    import scipy.sparse as sp

    n = len(events.items)
    not_consumed = [code for code, name in enumerate(events.types) if name in NOT_CONSUMED]
    mask = (events.item >= 0) & ~np.isin(events.kind, not_consumed)
    user, item = events.user[mask], events.item[mask]
    order = np.argsort(user, kind="stable")  # stable: each user's events stay in the log's (time) order
    user, item = user[order], item[order]
    _, first = np.unique(user.astype(np.int64) * n + item, return_index=True)  # first time with each item
    first.sort()
    user, item = user[first], item[first]
    del order, first, mask

    forward = sp.csr_matrix((n, n), dtype=np.float32)
    pending: list[tuple[np.ndarray, np.ndarray, float]] = []
    pending_pairs = 0
    for gap in range(1, model.window + 1):
        same = user[gap:] == user[:-gap]
        if not same.any():
            break
        pending.append((item[:-gap][same], item[gap:][same], model.step_decay ** (gap - 1)))
        pending_pairs += len(pending[-1][0])
        if pending_pairs >= PAIRS_PER_PASS:
            forward = forward + _pairs_matrix(pending, n)
            pending, pending_pairs = [], 0
    if pending:
        forward = forward + _pairs_matrix(pending, n)
    del pending
    matrix = (forward + forward.T * np.float32(model.backward)).tocsr() if model.backward else forward.tocsr()
    del forward
    matrix.sum_duplicates()
    if matrix.nnz:
        out_degree = np.asarray(matrix.sum(axis=1)).ravel()
        popularity = np.bincount(item, minlength=n).astype(np.float32) + 1.0
        rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(matrix.indptr))
        matrix.data *= (1.0 / np.maximum(out_degree, 1e-9) ** model.source_power).astype(np.float32)[rows]
        matrix.data *= (1.0 / popularity**model.target_power).astype(np.float32)[matrix.indices]
    return matrix


def _pairs_matrix(pending, n: int):
    import scipy.sparse as sp

    src = np.concatenate([s for s, _, _ in pending])
    dst = np.concatenate([d for _, d, _ in pending])
    val = np.concatenate([np.full(len(s), w, dtype=np.float32) for s, _, w in pending])
    return sp.csr_matrix((val, (src, dst)), shape=(n, n), dtype=np.float32)


def positive_pairs(events: EventColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, newest time) per user-item pair with a positive event, sorted by user then item."""
    mask = (events.item >= 0) & (events.weight > 0)
    n = max(len(events.items), 1)
    key = events.user[mask].astype(np.int64) * n + events.item[mask]
    ts = events.ts[mask]
    order = np.lexsort((ts, key))  # by pair, the newest last
    key, ts = key[order], ts[order]
    last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, bool)
    key, newest = key[last], ts[last]
    return (key // n).astype(np.int32), (key % n).astype(np.int32), newest


def comention_signals(pair_user, pair_item, newest, n_users: int, n_items: int, model: CoMentionModel):
    """CoMentionModel.fit's neighbours (CSR, `keep` per row) and trending, over every item."""
    import scipy.sparse as sp

    if not len(newest):
        return sp.csr_matrix((n_items, n_items), dtype=np.float32), np.zeros(n_items, dtype=np.float32)
    age_days = (newest.max() - newest) / DAY
    trending = np.bincount(pair_item, weights=0.5 ** (age_days / model.half_life_days), minlength=n_items).astype(np.float32)
    starts = np.flatnonzero(np.r_[True, pair_user[1:] != pair_user[:-1]])  # pairs are sorted by user
    last_seen = np.full(n_users, -np.inf)
    last_seen[pair_user[starts]] = np.maximum.reduceat(newest, starts)
    user_decay = 0.5 ** ((newest.max() - last_seen) / DAY / model.half_life_days)
    length = np.bincount(pair_user, minlength=n_users).astype(np.float64)
    # C = had^T @ diag(decay / length) @ had, where had holds a 1 per pair: by_item is had^T.
    by_item = sp.csr_matrix((np.ones(len(pair_user), dtype=np.float32), (pair_item, pair_user)), shape=(n_items, n_users))
    weighted = sp.csr_matrix(((user_decay / np.maximum(length, 1.0)).astype(np.float32)[pair_user], (pair_user, pair_item)),
                             shape=(n_users, n_items))
    done = np.cumsum(by_item @ length)  # multiply-adds of the product's rows up to each item
    data, indices, counts = [], [], []
    start = 0
    while start < n_items:
        before = done[start - 1] if start else 0.0
        stop = max(start + 1, int(np.searchsorted(done, before + PRODUCT_BUDGET, side="right")))
        block = (by_item[start:stop] @ weighted).tocsr()
        block.sort_indices()
        rows = np.repeat(np.arange(start, stop), np.diff(block.indptr))
        keep = (block.indices != rows) & (block.data != 0)  # no item is its own neighbour (setdiag(0))
        block_data, block_indices, block_rows = block.data[keep], block.indices[keep], rows[keep] - start
        chosen = _top_per_row(block_data, block_rows, stop - start, model.keep)
        data.append(block_data[chosen])
        indices.append(block_indices[chosen])
        counts.append(np.bincount(block_rows[chosen], minlength=stop - start))
        start = stop
    indptr = np.r_[0, np.cumsum(np.concatenate(counts))]
    neighbours = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n_items, n_items))
    return neighbours, trending


def _top_per_row(data: np.ndarray, rows: np.ndarray, n_rows: int, keep: int) -> np.ndarray:
    """Positions of the `keep` largest entries of each row (rows ascending; ties: the lower column)."""
    counts = np.bincount(rows, minlength=n_rows)
    if counts.max(initial=0) <= keep:
        return np.arange(len(data))
    order = np.lexsort((-data, rows))  # stable: equal values keep their column order
    rank = np.arange(len(order)) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
    return order[rank < keep]


def collab_vectors_of(pair_user, pair_item, users: list[str], items: list[str], dim: int = DIM):
    """collab.fit_item_factors: (item positions, vectors), through the same matrix and SVD."""
    import scipy.sparse as sp

    if not len(pair_user):
        return np.zeros(0, dtype=np.int32), np.zeros((0, dim), dtype=np.float32)
    # interaction_matrix orders rows and columns by id: the same order gives the same SVD, bit for bit.
    user_codes = np.unique(pair_user)
    item_codes = np.unique(pair_item)
    user_codes = np.array(sorted(user_codes.tolist(), key=users.__getitem__), dtype=np.int64)
    item_codes = np.array(sorted(item_codes.tolist(), key=items.__getitem__), dtype=np.int64)
    user_rank = np.empty(len(users), dtype=np.int64)
    user_rank[user_codes] = np.arange(len(user_codes))
    item_rank = np.empty(len(items), dtype=np.int64)
    item_rank[item_codes] = np.arange(len(item_codes))
    matrix = sp.csr_matrix((np.ones(len(pair_user)), (user_rank[pair_user], item_rank[pair_item])),
                           shape=(len(user_codes), len(item_codes)))
    with _blas_threads(SVD_THREADS):
        ids, vectors = item_factors(list(range(len(item_codes))), matrix, dim)
    if not ids:
        return np.zeros(0, dtype=np.int32), np.zeros((0, dim), dtype=np.float32)
    return item_codes.astype(np.int32), np.ascontiguousarray(vectors, dtype=np.float32)


def _blas_threads(limit: int | None):
    """Cap BLAS threads for a block (threadpoolctl, when installed; else leave them be)."""
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limit, user_api="blas")
