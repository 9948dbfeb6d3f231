"""Collaborative item vectors: truncated SVD of the weighted user-item matrix."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np

from retrieval.records import Event


def fit_item_factors(events: Iterable[Event], dim: int = 64) -> tuple[list[str], np.ndarray]:
    """Item ids and L2-normalised latent vectors learned from positive interactions.

    Rows are users, columns items; each user's row is tf-idf-like weighted so heavy users and
    blockbuster items don't dominate the factors.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    weights: dict[tuple[str, str], float] = defaultdict(float)
    for event in events:
        if event.item_id and event.weight > 0:
            weights[(event.user_id, event.item_id)] += event.weight
    if not weights:
        return [], np.zeros((0, dim), dtype=np.float32)
    users = sorted({u for u, _ in weights})
    items = sorted({i for _, i in weights})
    u_index = {u: n for n, u in enumerate(users)}
    i_index = {i: n for n, i in enumerate(items)}
    rows = [u_index[u] for u, _ in weights]
    cols = [i_index[i] for _, i in weights]
    matrix = sp.csr_matrix((np.log1p(list(weights.values())), (rows, cols)), shape=(len(users), len(items)), dtype=np.float64)
    idf = np.log((1 + len(users)) / (1 + np.asarray((matrix > 0).sum(axis=0)).ravel()))
    matrix = matrix.multiply(idf[None, :]).tocsr()
    rank = min(dim, min(matrix.shape) - 1)
    if rank < 2:
        return [], np.zeros((0, dim), dtype=np.float32)
    _, s, vt = svds(matrix, k=rank)
    vectors = (vt.T * np.sqrt(s)).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return items, vectors / norms
