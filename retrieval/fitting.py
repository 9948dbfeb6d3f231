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
  columns in the same (sorted id) order, through the same SVD;
- what people who asked in similar words went on to have (`AskedModel.fit`): the same moments
  from the columns and the texts of the searches typed in words, read in the same pass (only
  those rows carry text), a Python step per search.

Timestamps stay float64 rather than int64 seconds: the store keeps fractional seconds, and the
decays and same-second orders then match the per-event code exactly.

`retrieval.signals` publishes the result; an API worker loads it and never reads the log.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from retrieval.asked import AskedModel, column_moments
from retrieval.collab import DIM, item_factors
from retrieval.comention import DAY, CoMentionModel
from retrieval.live import fit_counters
from retrieval.migrations import event_key, high_water
from retrieval.records import RATING_LEVELS, SAID_SQL, STATED_IN_CHAT_SQL, event_weight
from retrieval.sequential import NOT_CONSUMED, SequentialModel
from retrieval.signals import Signals
from retrieval.topk import top_per_row, top_per_row_positions

log = logging.getLogger(__name__)

CHUNK = 20_000  # events per read: larger chunks read no faster and leave more rows in flight
ORDER_CHUNK = 100_000  # rowids per fetch while reading the log's order (SQLite)
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
    stated: np.ndarray | None = None  # bool: only said in chat (records.CHAT_SOURCE); never trending
    said: dict[int, str] | None = None  # position -> text of each search typed in words (retrieval.asked)

    def __len__(self) -> int:
        return len(self.user)


def read_event_columns(store, item_ids: list[str] = (), chunk_size: int = CHUNK, through: int | None = None) -> EventColumns:
    """Every event as arrays; item codes start with `item_ids` (the catalog) in that order."""
    if event_key(store.database) == "rowid":
        return _read_by_rowid(store, item_ids, chunk_size, through)
    users: dict[str, int] = {}
    items: dict[str, int] = {item_id: n for n, item_id in enumerate(item_ids)}
    types: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {"user": [], "item": [], "kind": [], "ts": [], "weight": [], "stated": []}
    said: dict[int, str] = {}
    watermark = None

    def item_code(item_id):
        return items.setdefault(item_id, len(items)) if item_id else -1  # "" has no item, as `consumed` reads it

    chunks = store.iter_event_columns(chunk_size) if through is None else store.iter_event_columns(chunk_size, through)
    read = 0
    for user_col, item_col, type_col, ts_col, value_col, id_col, stated_col, said_col in chunks:
        n = len(user_col)
        said.update((read + i, text) for i, text in enumerate(said_col) if text and text.strip())
        read += n
        parts["user"].append(np.fromiter((users.setdefault(u, len(users)) for u in user_col), np.int32, n))
        parts["item"].append(np.fromiter(map(item_code, item_col), np.int32, n))
        kind = np.fromiter((types.setdefault(t, len(types)) for t in type_col), np.int8, n)
        parts["kind"].append(kind)
        parts["ts"].append(np.array(ts_col, dtype=np.float64))
        parts["weight"].append(_weights(kind, list(types), value_col))
        parts["stated"].append(np.array(stated_col, dtype=bool))
        watermark = (float(ts_col[-1]), id_col[-1])
    arrays = {
        name: np.concatenate(chunks) if chunks else np.zeros(0, dtype)
        for (name, chunks), dtype in zip(parts.items(), (np.int32, np.int32, np.int8, np.float64, np.float32, bool))
    }
    return EventColumns(**arrays, users=list(users), items=list(items), types=list(types), watermark=watermark, said=said)


def _read_by_rowid(store, item_ids, chunk_size: int, through: int | None) -> EventColumns:
    """`read_event_columns` on SQLite: the same columns and codes in about half the CPU time.

    Reading the table in (time, id) order looked each row up from the (time, id) index, a B-tree
    search a row. Here the order comes from that index alone (it holds the rowid), the rows come in
    rowid order (pages in sequence), and numpy puts them in order and renumbers users, items and
    types by first sight in it. A row added between the two reads is left for the next fit; one
    deleted between them is left out.
    """
    bound = "" if through is None else f" AND rowid <= {int(through)}"
    with store.database.read() as db:
        cursor = db.execute(f"SELECT rowid FROM events WHERE 1 = 1{bound} ORDER BY ts, id")
        parts = []
        while rows := cursor.fetchmany(ORDER_CHUNK):
            parts.append(np.array(rows, dtype=np.int64).reshape(-1))
    ordered = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    del parts

    users = defaultdict(itertools.count().__next__)  # a code on first sight, without a Python call a row
    items = defaultdict(itertools.count(len(item_ids)).__next__, {item_id: n for n, item_id in enumerate(item_ids)})
    items.update({None: -1, "": -1})  # no item, as `consumed` reads it
    types = defaultdict(itertools.count().__next__)
    names = ("rowid", "user", "item", "kind", "ts", "weight", "stated")
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    said: dict[int, str] = {}  # index in the rowid order -> text of a search typed in words
    last = read = 0
    while True:
        with store.database.read() as db:
            rows = db.all(f"SELECT rowid, user_id, item_id, type, ts, value, {STATED_IN_CHAT_SQL}, {SAID_SQL} FROM events "
                          f"WHERE rowid > ?{bound} ORDER BY rowid LIMIT ?",
                          (last, chunk_size))
        if not rows:
            break
        rowid, user_col, item_col, type_col, ts_col, value_col, stated_col, said_col = zip(*rows)
        said.update((read + i, text) for i, text in enumerate(said_col) if text and text.strip())
        read += len(rows)
        kind = _codes(types, type_col, np.int8)
        for name, values in zip(names, (np.array(rowid, dtype=np.int64), _codes(users, user_col, np.int32),
                                        _codes(items, item_col, np.int32), kind, np.array(ts_col, dtype=np.float64),
                                        _weights(kind, _names(types), value_col), np.array(stated_col, dtype=bool))):
            columns[name].append(values)
        last = rowid[-1]
        if len(rows) < chunk_size:
            break
    dtypes = (np.int64, np.int32, np.int32, np.int8, np.float64, np.float32, bool)
    arrays = {name: np.concatenate(parts) if parts else np.zeros(0, dtype) for (name, parts), dtype in zip(columns.items(), dtypes)}
    del columns

    stored = arrays.pop("rowid")  # ascending
    at = _positions(stored, ordered)
    arrays = {name: values[at] for name, values in arrays.items()}
    if said:  # from the index in rowid order to the position in the log's order
        where = np.full(len(stored), -1, dtype=np.int64)
        where[at] = np.arange(len(at))
        said = {int(where[i]): text for i, text in said.items() if where[i] >= 0}
    user, user_names = _first_seen(arrays["user"], _names(users))
    item, item_names = _first_seen(arrays["item"], _names(items), fixed=len(item_ids))
    kind, type_names = _first_seen(arrays["kind"], _names(types))
    watermark = None
    if len(at):
        with store.database.read() as db:
            found = db.all("SELECT id FROM events WHERE rowid = ?", (int(stored[at[-1]]),))
        watermark = (float(arrays["ts"][-1]), found[0][0] if found else "")
    return EventColumns(user=user.astype(np.int32), item=item.astype(np.int32), kind=kind.astype(np.int8), ts=arrays["ts"],
                        weight=arrays["weight"], users=user_names, items=item_names, types=type_names, watermark=watermark,
                        stated=arrays["stated"], said=dict(sorted(said.items())))


def _positions(stored: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each wanted rowid sits in `stored` (ascending), those not stored left out."""
    if not len(stored):
        return np.zeros(0, dtype=np.int64)
    top = int(max(stored[-1], wanted.max(initial=0)))
    if top <= 4 * len(stored) + 1_000_000:  # dense rowids: a lookup table beats a binary search a row
        position = np.full(top + 1, -1, dtype=np.int64)
        position[stored] = np.arange(len(stored))
        at = position[wanted]
        return at[at >= 0]
    at = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
    return at[stored[at] == wanted]


def _codes(mapping: dict, values, dtype) -> np.ndarray:
    return np.fromiter(map(mapping.__getitem__, values), dtype, len(values))


def _names(mapping: dict) -> list:
    """A code mapping's names by code, codes below 0 left out (codes were given in insertion order)."""
    return [name for name, code in mapping.items() if code >= 0]


def _first_seen(codes: np.ndarray, names: list, fixed: int = 0) -> tuple[np.ndarray, list]:
    """Codes at or above `fixed` renumbered by first appearance in `codes` (those below stay), and
    the names in the new order; names that no longer appear are dropped."""
    moving = codes >= fixed
    _, first = np.unique(codes[moving], return_index=True)
    in_order = codes[moving][np.sort(first)]
    renumber = np.arange(max(len(names), 1), dtype=np.int64)
    renumber[in_order] = np.arange(fixed, fixed + len(in_order))
    out = codes.astype(np.int64)
    out[moving] = renumber[codes[moving]]
    return out, names[:fixed] + [names[code] for code in in_order.tolist()]


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
                dim: int = DIM, chunk_size: int = CHUNK, asked: AskedModel | None = None) -> Signals:
    """Read the log once and compute every signal; knobs come from the model instances given."""
    from retrieval.candidates import _prior  # here, not at the top: the Retriever is to call this module

    sequential = sequential or SequentialModel()
    comention = comention or CoMentionModel()
    began = time.perf_counter()
    catalog = [(item.id, _prior(item)) for item in store.iter_items()]
    item_ids = [item_id for item_id, _ in catalog]
    priors = np.array([prior for _, prior in catalog], dtype=np.float64)
    del catalog
    through = high_water(store)  # the log up to here; retrieval.live counts what arrives later
    events = read_event_columns(store, item_ids, chunk_size, through)
    counters, tail = fit_counters(events, priors, through)
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
    if events.stated is not None and events.stated.any():  # what was only said in chat may not trend
        _, trend_item, trend_newest = positive_pairs(events, done_only=True)
    else:  # the usual log: the same pairs, not sorted a second time
        trend_item, trend_newest = pair_item, newest
    users, items, n_events, watermark = events.users, events.items, len(events), events.watermark
    step_asked = time.perf_counter()
    asked = AskedModel() if asked is None else AskedModel(asked.neighbours, asked.max_rows)
    asked.fit_moments(column_moments(events, users, items), item_ids=items)
    timings["asked_s"] = time.perf_counter() - step_asked
    del events  # from here on, arrays per user-item pair only
    neighbours, trending = comention_signals(pair_user, pair_item, newest, len(users), n_items, comention,
                                             trend=(trend_item, trend_newest))
    timings["comention_s"] = time.perf_counter() - step - timings["asked_s"]
    step = time.perf_counter()
    collab_rows, collab_vectors = collab_vectors_of(pair_user, pair_item, users, items, dim)
    timings["collab_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - began
    manifest = {
        "events": n_events, "users": len(users), "tail": tail, "asked_rows": asked.rows,
        "watermark": None if watermark is None else {"ts": watermark[0], "id": watermark[1]},
        "knobs": {"sequential": {k: getattr(sequential, k) for k in ("window", "step_decay", "backward", "source_power", "target_power", "keep")},
                  "comention": {"half_life_days": comention.half_life_days, "keep": comention.keep}, "collab_dim": dim,
                  "asked": {"neighbours": asked.neighbours, "max_rows": asked.max_rows}},
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log.info("fitted signals on %d events, %d users, %d items in %.1f s", n_events, len(users), n_items, timings["total_s"])
    return Signals(item_ids=items, catalog_items=len(item_ids), popularity=popularity, confidence=confidence,
                   transitions=transitions, neighbours=neighbours, trending=trending, collab_rows=collab_rows,
                   collab_vectors=collab_vectors, manifest=manifest, counters=counters,
                   asked=asked.state() if asked.fitted else None)


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
    return top_per_row(matrix, model.keep)


def _pairs_matrix(pending, n: int):
    import scipy.sparse as sp

    src = np.concatenate([s for s, _, _ in pending])
    dst = np.concatenate([d for _, d, _ in pending])
    val = np.concatenate([np.full(len(s), w, dtype=np.float32) for s, _, w in pending])
    return sp.csr_matrix((val, (src, dst)), shape=(n, n), dtype=np.float32)


def positive_pairs(events: EventColumns, done_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, newest time) per user-item pair with a positive event, sorted by user then item
    (`done_only`: leaving out what was only said in chat, for trending)."""
    mask = (events.item >= 0) & (events.weight > 0)
    if done_only and events.stated is not None:
        mask &= ~events.stated
    n = max(len(events.items), 1)
    key = events.user[mask].astype(np.int64) * n + events.item[mask]
    ts = events.ts[mask]
    order = np.lexsort((ts, key))  # by pair, the newest last
    key, ts = key[order], ts[order]
    last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, bool)
    key, newest = key[last], ts[last]
    return (key // n).astype(np.int32), (key % n).astype(np.int32), newest


def comention_signals(pair_user, pair_item, newest, n_users: int, n_items: int, model: CoMentionModel, trend=None):
    """CoMentionModel.fit's neighbours (CSR, `keep` per row) and trending, over every item; `trend`
    is (item, newest time) of the pairs that may trend (default: every pair)."""
    import scipy.sparse as sp

    if not len(newest):
        return sp.csr_matrix((n_items, n_items), dtype=np.float32), np.zeros(n_items, dtype=np.float32)
    trend_item, trend_newest = trend if trend is not None else (pair_item, newest)
    reference = trend_newest.max() if len(trend_newest) else newest.max()
    age_days = np.maximum(reference - trend_newest, 0.0) / DAY
    trending = np.bincount(trend_item, weights=0.5 ** (age_days / model.half_life_days), minlength=n_items).astype(np.float32)
    starts = np.flatnonzero(np.r_[True, pair_user[1:] != pair_user[:-1]])  # pairs are sorted by user
    last_seen = np.full(n_users, -np.inf)
    last_seen[pair_user[starts]] = np.maximum.reduceat(newest, starts)
    user_decay = 0.5 ** (np.maximum(reference - last_seen, 0.0) / DAY / model.half_life_days)
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
        chosen = top_per_row_positions(block_data, block_rows, stop - start, model.keep)
        data.append(block_data[chosen])
        indices.append(block_indices[chosen])
        counts.append(np.bincount(block_rows[chosen], minlength=stop - start))
        start = stop
    indptr = np.r_[0, np.cumsum(np.concatenate(counts))]
    neighbours = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n_items, n_items))
    return neighbours, trending


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
