"""Accuracy and beyond-accuracy metrics. Per-user values come back as arrays so CIs can be bootstrapped.

Leave-one-out has one relevant item per user, so with `rank` its 1-based position:
Recall@K = [rank <= K], NDCG@K = [rank <= K] / log2(rank + 1), MRR = 1 / rank (0 if never ranked).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

MISSING = np.inf  # rank of a target that a candidate list did not contain


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user hit of the held-out item in the top k."""
    return (np.asarray(ranks, dtype=float) <= k).astype(float)


def ndcg_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with one relevant item (ideal DCG = 1)."""
    ranks = np.asarray(ranks, dtype=float)
    hit = ranks <= k
    out = np.zeros_like(ranks)
    out[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return out


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    """Per-user 1/rank; a target outside the list (rank = inf) scores 0."""
    ranks = np.asarray(ranks, dtype=float)
    return np.where(np.isfinite(ranks), 1.0 / np.maximum(ranks, 1.0), 0.0)


def accuracy(ranks: np.ndarray, ks: Sequence[int] = (10, 20), mrr: bool = True) -> dict[str, np.ndarray]:
    """{'Recall@10': per-user array, 'NDCG@10': ..., 'MRR': ...} for the given cut-offs."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"Recall@{k}"] = recall_at(ranks, k)
        out[f"NDCG@{k}"] = ndcg_at(ranks, k)
    if mrr:
        out["MRR"] = reciprocal_rank(ranks)
    return out


def target_ranks(scores: np.ndarray, targets: np.ndarray, excluded: Sequence[np.ndarray], tie_key: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target among the non-excluded items.

    Ties are broken by `tie_key` (a fixed random permutation of the items), which ranks a tied
    target as a random order would, neither optimistically nor pessimistically.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.empty(len(targets), dtype=float)
    for row, (target, seen) in enumerate(zip(targets, excluded)):
        s = scores[row]
        t = s[target]
        if not np.isfinite(t):
            ranks[row] = MISSING
            continue
        ahead = (s > t) | ((s == t) & (tie_key < tie_key[target]))
        ahead[target] = False
        if len(seen):
            ahead[seen] = False
        ranks[row] = 1.0 + np.count_nonzero(ahead)
    return ranks


def top_k(scores: np.ndarray, excluded: Sequence[np.ndarray], tie_key: np.ndarray, k: int) -> np.ndarray:
    """Each row's k best item indices (excluded items removed, same tie-break as target_ranks)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for row, seen in enumerate(excluded):
        s = scores[row]
        if len(seen):
            s[seen] = -np.inf
        # A wider partition first keeps the exact sort cheap; ties at its edge are resolved below.
        width = min(len(s), max(4 * k, k + 64))
        part = np.argpartition(-s, width - 1)[:width]
        boundary = s[part].min()
        part = np.union1d(part, np.flatnonzero(s == boundary))
        order = np.lexsort((tie_key[part], -s[part]))
        out[row] = part[order[:k]]
    return out


def coverage(lists: Sequence[Sequence[int]], n_items: int) -> float:
    """Share of the catalog that appears in at least one user's list."""
    if n_items == 0:
        return 0.0
    shown = {int(i) for items in lists for i in items}
    return len(shown) / n_items


def intra_list_diversity(lists: Sequence[Sequence[int]], vectors: np.ndarray) -> np.ndarray:
    """Per-user mean pairwise cosine distance (1 - cos) among the listed items' content vectors."""
    out = np.zeros(len(lists))
    for row, items in enumerate(lists):
        k = len(items)
        if k < 2:
            continue
        v = vectors[np.asarray(items, dtype=np.int64)]  # rows assumed L2-normalised
        sims = v @ v.T
        out[row] = 1.0 - (sims.sum() - np.trace(sims)) / (k * (k - 1))
    return out


def novelty(lists: Sequence[Sequence[int]], item_counts: np.ndarray, n_users: int) -> np.ndarray:
    """Per-user mean self-information -log2 p(i), p(i) = (training users who had i + 1) / (users + 1)."""
    info = -np.log2((np.asarray(item_counts, dtype=float) + 1.0) / (n_users + 1.0))
    return np.array([info[np.asarray(items, dtype=np.int64)].mean() if len(items) else 0.0 for items in lists])


def percentile(values: Iterable[float], q: float) -> float:
    arr = np.asarray(list(values), dtype=float)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


def validity(outcomes: Sequence[dict]) -> dict[str, float]:
    """Rates over LLM ranking outcomes: each a dict with booleans `valid` and `fallback`, ints `parsed`/`expected`."""
    n = len(outcomes)
    if n == 0:
        return {"calls": 0}
    valid = sum(bool(o.get("valid")) for o in outcomes)
    fallback = sum(bool(o.get("fallback")) for o in outcomes)
    parsed = sum(int(o.get("parsed", 0)) for o in outcomes)
    expected = sum(int(o.get("expected", 0)) for o in outcomes)
    return {
        "calls": n,
        "valid_rate": valid / n,
        "fallback_rate": fallback / n,
        "label_coverage": parsed / expected if expected else float("nan"),
    }
