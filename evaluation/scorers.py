"""Batched numpy scorers: a block of users' scores for every item, for full-ranking evaluation.

These re-implement the retrieval signals as matrix products so all users run in seconds
(per-user vector-store queries would take far longer). Each scorer is fitted on one stage's
histories of ALL users, which never contain a held-out item of that stage. Nothing here holds
a dense items x items matrix except EASE, which the harness uses only on small catalogs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from scipy import sparse

from evaluation.splits import Stage
from retrieval.progress import progress_bar

# Users x items scores held at once (float32: 64 MB); the harness scores users in blocks of this
# many cells, so memory stays bounded however large the catalog or the user sample. The weight
# search holds about 16 such matrices per block. MovieLens (3,650 items) fits all users in one.
BLOCK_CELLS = 1 << 24
# Co-occurrence entries (an upper bound) built at once for item neighbourhoods: under ~1 GB while sorting.
NEIGHBOUR_CELLS = 1 << 24
# Above this many items the collaborative signal is the sparse top-k ItemKNN instead of dense EASE.
# Measured (evaluation/reports/eval-scale.md): one EASE fit peaks at ~31 bytes x items^2 and grows
# as items^3 (6k items: 1.1 GB, 32 s; 10k: 3.1 GB, 108 s; the 13.8k: 6.7 GB), ItemKNN at
# 10k: 0.15 GB, under 1 s. EASE is worth its cost up to here: on MovieLens unfiltered (9,742 items)
# it scored validation NDCG@10 0.069 against ItemKNN's 0.055 (on a synthetic 8.8k-item platform
# ItemKNN matched it), and 10k keeps every MovieLens-small filtering on the dense path.
DENSE_EASE_MAX_ITEMS = 10_000


class Scorer(Protocol):
    """Scores every catalog item for a block of users (rows of a Stage)."""

    name: str

    def fit(self, stage: Stage) -> "Scorer": ...

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray: ...


def interaction_matrix(stage: Stage, binary: bool = True) -> sparse.csr_matrix:
    """Users x items matrix of the stage's histories (1 per interaction, or the event weight)."""
    rows = np.repeat(np.arange(stage.n_users), [len(h) for h in stage.histories])
    cols = np.concatenate(stage.histories) if stage.n_users else np.zeros(0, dtype=np.int64)
    vals = np.ones(len(cols), dtype=np.float32) if binary else np.concatenate(stage.weights)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(stage.n_users, stage.n_items))


def recent_profile(
    stage: Stage, rows: Sequence[int], *, last: int, decay: float, use_weights: bool
) -> sparse.csr_matrix:
    """Users x items weights of each user's `last` items, decayed by position (newest = 1)."""
    r_idx, c_idx, vals = [], [], []
    for out_row, row in enumerate(rows):
        hist = stage.histories[row][-last:]
        age = np.arange(len(hist))[::-1]
        w = decay**age
        if use_weights:
            w = w * stage.weights[row][-last:]
        r_idx.append(np.full(len(hist), out_row))
        c_idx.append(hist)
        vals.append(w.astype(np.float32))
    if not r_idx:
        return sparse.csr_matrix((0, stage.n_items), dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(r_idx), np.concatenate(c_idx))),
        shape=(len(rows), stage.n_items),
    )


def _dense(m) -> np.ndarray:
    return np.asarray(m.toarray() if sparse.issparse(m) else m, dtype=np.float32)


@dataclass
class Popularity:
    """How many users had each item in training."""

    name: str = "popularity"
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, stage: Stage) -> "Popularity":
        self.counts = np.bincount(np.concatenate(stage.histories), minlength=stage.n_items).astype(np.float32)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        return np.tile(self.counts, (len(rows), 1))


@dataclass
class Content:
    """Cosine between item content vectors and a profile of the user's recent, liked items."""

    vectors: np.ndarray  # (n_items, dim), L2-normalised, row i = stage.item_ids[i]
    last: int = 20
    decay: float = 0.9
    use_weights: bool = True
    name: str = "content"

    def fit(self, stage: Stage) -> "Content":
        if len(self.vectors) != stage.n_items:
            raise ValueError(f"content vectors cover {len(self.vectors)} items, the stage has {stage.n_items}")
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        profile = recent_profile(stage, rows, last=self.last, decay=self.decay, use_weights=self.use_weights)
        users = _dense(profile @ self.vectors)
        users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-9)
        return users @ self.vectors.T


@dataclass
class ItemKNN:
    """Item-item cosine over who interacted with what (shrunk, top-k per item), summed over recent items.

    Fitted from the sparse co-occurrence a block of items at a time, so no items x items matrix
    is ever dense: the collaborative signal for catalogs where dense EASE stops being cheap.
    """

    last: int = 50
    decay: float = 0.98
    neighbours: int = 200
    shrink: float = 10.0
    name: str = "itemknn"
    progress: bool = False
    sim: sparse.csr_matrix | None = None

    FIT_KNOBS = ("neighbours", "shrink")  # what fit() depends on; `last` and `decay` shape the profile
    FITTED = ("sim",)

    def fit(self, stage: Stage) -> "ItemKNN":
        self.sim = cosine_neighbours(interaction_matrix(stage), self.neighbours, self.shrink, progress=self.progress)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        profile = recent_profile(stage, rows, last=self.last, decay=self.decay, use_weights=False)
        return _dense(profile @ self.sim)


@dataclass
class EASE:
    """Embarrassingly shallow autoencoder (Steck 2019): closed-form item-item weights.

    Dense: an items x items inverse (~31 bytes x items^2 at the peak, items^3 time), so the
    harness uses it only up to DENSE_EASE_MAX_ITEMS (see `collab_kind`).
    """

    l2: float = 300.0
    last: int = 10_000
    decay: float = 1.0
    name: str = "ease"
    weights: np.ndarray | None = None

    FIT_KNOBS = ("l2",)  # `last` and `decay` only shape the profile: one inverse serves them all
    FITTED = ("weights",)

    def fit(self, stage: Stage) -> "EASE":
        x = interaction_matrix(stage)
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        del gram
        p /= -np.diag(p).copy()
        np.fill_diagonal(p, 0.0)
        self.weights = p.astype(np.float32)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        profile = recent_profile(stage, rows, last=self.last, decay=self.decay, use_weights=False)
        return _dense(profile @ self.weights)


COLLAB_SCORERS = {"ease": EASE, "itemknn": ItemKNN}


def collab_kind(n_items: int, max_dense: int = DENSE_EASE_MAX_ITEMS) -> str:
    """Which collaborative scorer a catalog of n_items gets: dense EASE while cheap, sparse ItemKNN beyond."""
    return "ease" if n_items <= max_dense else "itemknn"


def make_collab(scorer: str = "ease", **knobs) -> "EASE | ItemKNN":
    """The collaborative scorer named in the chosen knobs ({"scorer": "itemknn", "last": 10, ...})."""
    if scorer not in COLLAB_SCORERS:
        raise ValueError(f"unknown collaborative scorer {scorer!r}; choose from {', '.join(COLLAB_SCORERS)}")
    return COLLAB_SCORERS[scorer](**knobs)


@dataclass
class Sequential:
    """What other users watched right after the same items, weighted toward the user's latest items.

    T[a, b] counts b following a within `window` steps (decayed by distance); a user's score for
    b sums T[h, b] over their last items h, the newest weighing most.
    """

    window: int = 5
    step_decay: float = 0.6
    last: int = 10
    decay: float = 0.7
    backward: float = 0.3  # weight of b preceding a (co-occurrence without direction)
    pop_power: float = 0.0  # divide by popularity**pop_power to favour specific followers
    name: str = "sequential"
    transitions: sparse.csr_matrix | None = None

    FIT_KNOBS = ("window", "step_decay", "backward", "pop_power")
    FITTED = ("transitions",)

    def fit(self, stage: Stage) -> "Sequential":
        src, dst, val = [], [], []
        for hist in stage.histories:
            for gap in range(1, self.window + 1):
                if len(hist) <= gap:
                    break
                w = self.step_decay ** (gap - 1)
                src.append(hist[:-gap])
                dst.append(hist[gap:])
                val.append(np.full(len(hist) - gap, w, dtype=np.float32))
                if self.backward:
                    src.append(hist[gap:])
                    dst.append(hist[:-gap])
                    val.append(np.full(len(hist) - gap, w * self.backward, dtype=np.float32))
        n = stage.n_items
        t = sparse.csr_matrix(
            (np.concatenate(val), (np.concatenate(src), np.concatenate(dst))), shape=(n, n)
        ) if src else sparse.csr_matrix((n, n), dtype=np.float32)
        out_degree = np.asarray(t.sum(axis=1)).ravel()
        t = sparse.diags(1.0 / np.maximum(out_degree, 1.0)) @ t  # P(next = b | a)
        if self.pop_power:
            pop = np.bincount(np.concatenate(stage.histories), minlength=n).astype(np.float32)
            t = t @ sparse.diags(1.0 / np.maximum(pop, 1.0) ** self.pop_power)
        self.transitions = t.tocsr()
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        profile = recent_profile(stage, rows, last=self.last, decay=self.decay, use_weights=False)
        return _dense(profile @ self.transitions)


@dataclass
class Hybrid:
    """Weighted sum of signals, each scaled per user to [0, 1] by its maximum so weights compare."""

    parts: list  # Scorer
    weights: list[float]
    name: str = "hybrid"
    fits: dict | None = None  # the run's shared fits (see fit_once): the parts reuse the single variants' fits

    def fit(self, stage: Stage) -> "Hybrid":
        for part in self.parts:
            fit_once(part, stage, self.fits)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        total = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        for part, weight in zip(self.parts, self.weights):
            if weight:
                total += weight * scale_rows(part.score(stage, rows))
        return total


def fit_once(scorer: Scorer, stage: Stage, fits: dict | None, *, latest_only: bool = False) -> Scorer:
    """`scorer` fitted on stage, or given the state of an equal fit already in `fits`.

    A scorer names the knobs its fit depends on (FIT_KNOBS, EASE: l2) and what the fit sets
    (FITTED, EASE: weights); two scorers that agree on the first share the second. `latest_only`
    keeps one fit (a knob search whose grid puts the fit knobs first), so memory stays that of one.
    """
    fit_knobs = getattr(scorer, "FIT_KNOBS", None)
    if fits is None or fit_knobs is None:
        return scorer.fit(stage)
    key = (stage.name, type(scorer).__name__, *(getattr(scorer, k) for k in fit_knobs))
    if key not in fits:
        if latest_only:
            fits.clear()
        scorer.fit(stage)
        fits[key] = {attr: getattr(scorer, attr) for attr in scorer.FITTED}
    for attr, value in fits[key].items():
        setattr(scorer, attr, value)
    return scorer


def scale_rows(scores: np.ndarray) -> np.ndarray:
    """Divide each row by its largest absolute value (a zero row stays zero)."""
    peak = np.abs(scores).max(axis=1, keepdims=True)
    return scores / np.where(peak > 0, peak, 1.0)


def user_blocks(rows: Sequence[int], n_items: int, cells: int = BLOCK_CELLS):
    """Consecutive slices of rows, each small enough that its users x items scores hold `cells` values."""
    rows = np.asarray(rows, dtype=np.int64)
    size = max(1, cells // max(n_items, 1))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def cosine_neighbours(
    x: sparse.spmatrix, k: int, shrink: float, *, cells: int = NEIGHBOUR_CELLS, progress: bool = False
) -> sparse.csr_matrix:
    """Each item's k most similar other items, sim = co(i, j) / (|i| |j| + shrink), as a sparse matrix.

    `x` is users x items (binary). The co-occurrence is built a block of items at a time from the
    sparse product, each block sized so it holds about `cells` entries; only the top k survive.
    """
    x = sparse.csr_matrix(x, dtype=np.float32)
    n = x.shape[1]
    xt = x.T.tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel()).astype(np.float32)
    # Upper bound of each item's co-occurrence row length: the summed history lengths of its users.
    reach = xt.astype(bool).astype(np.float64) @ np.diff(x.indptr).astype(np.float64)
    bounds = _cut(np.minimum(reach, n), cells)
    rows, cols, vals = [], [], []
    bar = progress_bar(n, "collab neighbours", progress, unit="item")
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        co = (xt[lo:hi] @ x).tocoo()
        r, c = co.row.astype(np.int64) + lo, co.col.astype(np.int64)
        keep = r != c
        r, c = r[keep], c[keep]
        v = co.data[keep] / (norms[r] * norms[c] + np.float32(shrink))
        order = np.lexsort((c, -v, r))  # per item: most similar first, ties by item index
        r, c, v = r[order], c[order], v[order]
        place = np.arange(len(r)) - np.searchsorted(r, r, side="left")
        top = place < k
        rows.append(r[top])
        cols.append(c[top])
        vals.append(v[top])
        bar.update(hi - lo)
    bar.close()
    if not rows:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _cut(sizes: np.ndarray, budget: int) -> list[int]:
    """Boundaries [0, ..., len] of consecutive runs whose summed sizes stay within budget (at least one each)."""
    bounds, total = [0], 0.0
    for i, size in enumerate(sizes):
        if total and total + size > budget:
            bounds.append(i)
            total = 0.0
        total += size
    bounds.append(len(sizes))
    return bounds
