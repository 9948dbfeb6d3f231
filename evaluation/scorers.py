"""Batched numpy scorers: every user's score for every item at once, for full-ranking evaluation.

These re-implement the retrieval signals as matrix products so all users run in seconds
(per-user vector-store queries would take far longer). Each scorer is fitted on one stage's
histories of ALL users, which never contain a held-out item of that stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from scipy import sparse

from evaluation.splits import Stage


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
    """Item-item cosine over who interacted with what, summed over the user's recent items."""

    last: int = 50
    decay: float = 0.98
    neighbours: int = 200
    shrink: float = 10.0
    name: str = "collab"
    sim: sparse.csr_matrix | None = None

    def fit(self, stage: Stage) -> "ItemKNN":
        x = interaction_matrix(stage)
        co = _dense(x.T @ x)
        norms = np.sqrt(np.diag(co))
        np.fill_diagonal(co, 0.0)
        co /= np.outer(norms, norms) + self.shrink
        self.sim = _keep_top(co, self.neighbours)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        profile = recent_profile(stage, rows, last=self.last, decay=self.decay, use_weights=False)
        return _dense(profile @ self.sim)


@dataclass
class EASE:
    """Embarrassingly shallow autoencoder (Steck 2019): closed-form item-item weights."""

    l2: float = 300.0
    last: int = 10_000
    decay: float = 1.0
    name: str = "ease"
    weights: np.ndarray | None = None

    def fit(self, stage: Stage) -> "EASE":
        x = interaction_matrix(stage)
        gram = _dense(x.T @ x).astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = p / (-np.diag(p))
        np.fill_diagonal(b, 0.0)
        self.weights = b.astype(np.float32)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        profile = recent_profile(stage, rows, last=self.last, decay=self.decay, use_weights=False)
        return _dense(profile @ self.weights)


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

    def fit(self, stage: Stage) -> "Hybrid":
        for part in self.parts:
            part.fit(stage)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        total = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        for part, weight in zip(self.parts, self.weights):
            if weight:
                total += weight * scale_rows(part.score(stage, rows))
        return total


def scale_rows(scores: np.ndarray) -> np.ndarray:
    """Divide each row by its largest absolute value (a zero row stays zero)."""
    peak = np.abs(scores).max(axis=1, keepdims=True)
    return scores / np.where(peak > 0, peak, 1.0)


def _keep_top(dense: np.ndarray, k: int) -> sparse.csr_matrix:
    """Keep each row's k largest entries (a sparse neighbourhood)."""
    n = dense.shape[0]
    if k >= n:
        return sparse.csr_matrix(dense)
    idx = np.argpartition(-dense, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    return sparse.csr_matrix((dense[np.arange(n)[:, None], idx].ravel(), (rows, idx.ravel())), shape=dense.shape)
