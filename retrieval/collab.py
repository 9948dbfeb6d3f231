"""Collaborative item vectors: truncated SVD of the users x items matrix of positive events.

Items that the same people had end up close together; vectors are L2-normalised so Chroma's
cosine space can serve them. A user's vector is the recency- and event-weighted mean of their
items' vectors, with disliked items subtracted. Chosen on MovieLens-small validation items
against item-kNN and EASE (see evaluation/bench_retrieval.py quality): EASE ranks better alone
but needs an items x items dense matrix (40 GB at 100k items); SVD vectors fit in Chroma.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Iterable, Sequence

import numpy as np

from retrieval.records import Event
from retrieval.topk import top_k

DIM = 64


def interaction_matrix(events: Iterable[Event], weighting: str = "binary"):
    """(user ids, item ids, CSR users x items) from events with a positive weight.

    weighting "binary": 1 per (user, item) with any positive event; "weight": log1p of the summed
    positive weights (a like counts more than a view).
    """
    import scipy.sparse as sp

    if weighting not in ("binary", "weight"):
        raise ValueError(f"unknown weighting {weighting!r}; use 'binary' or 'weight'")
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for event in events:
        if event.item_id and event.weight > 0:  # negative events are not evidence of co-taste
            totals[(event.user_id, event.item_id)] += event.weight
    users = sorted({u for u, _ in totals})
    items = sorted({i for _, i in totals})
    u_index = {u: n for n, u in enumerate(users)}
    i_index = {i: n for n, i in enumerate(items)}
    rows = np.fromiter((u_index[u] for u, _ in totals), dtype=np.int64, count=len(totals))
    cols = np.fromiter((i_index[i] for _, i in totals), dtype=np.int64, count=len(totals))
    values = np.fromiter(totals.values(), dtype=np.float64, count=len(totals))
    values = np.ones_like(values) if weighting == "binary" else np.log1p(values)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(len(users), len(items)))
    return users, items, matrix


def factorize(matrix, dim: int = DIM) -> np.ndarray:
    """Item vectors (n_items, rank) = V * sqrt(singular values), L2-normalised; empty if too small."""
    from scipy.sparse.linalg import svds

    rank = min(dim, min(matrix.shape) - 1)
    if rank < 2:
        return np.zeros((matrix.shape[1], 0), dtype=np.float32)
    start = np.full(min(matrix.shape), 1.0 / np.sqrt(min(matrix.shape)))  # deterministic ARPACK start
    matrix = matrix.astype(np.float64)
    if matrix.shape[0] >= matrix.shape[1]:
        singular, v = right_singular(matrix, rank, start)
    else:
        _, singular, vt = svds(matrix, k=rank, v0=start)
        v = vt.T
    order = np.argsort(-singular)
    vectors = (v[:, order] * np.sqrt(singular[order])).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def right_singular(matrix, rank: int, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The `rank` largest singular values of a users x items matrix with at least as many users as
    items, and their right singular vectors (columns), as `svds` finds them without its last step.

    svds solves X^T X with ARPACK here too, then multiplies X by the eigenvectors to take an SVD of
    that users x rank product: 512 MB and ~20 s at a million users, for the left vectors we never
    use and a rotation of the right ones within their own span (item dot products stay the same
    to ~1e-9; a column's sign may flip, which changes no dot product).
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    transposed = matrix.T  # a CSC view, no copy
    n = matrix.shape[1]
    gram = LinearOperator((n, n), dtype=np.float64, matvec=lambda x: transposed @ (matrix @ x),
                          matmat=lambda x: transposed @ (matrix @ x))
    values, vectors = eigsh(gram, k=rank, tol=0, v0=start)
    vectors, _ = np.linalg.qr(vectors)  # as svds: ARPACK's vectors are not exactly orthonormal when clustered
    return np.sqrt(np.maximum(values, 0.0)), vectors


def fit_item_factors(
    events: Iterable[Event], dim: int = DIM, weighting: str = "binary"
) -> tuple[list[str], np.ndarray]:
    """Item ids and their collaborative vectors (items nobody liked get none)."""
    _, items, matrix = interaction_matrix(events, weighting)
    return item_factors(items, matrix, dim)


def item_factors(items: list[str], matrix, dim: int = DIM) -> tuple[list[str], np.ndarray]:
    """`fit_item_factors` from a users x items matrix whose columns are `items` (the fitting job's way in)."""
    vectors = factorize(matrix, dim)
    if vectors.shape[1] == 0:
        return [], vectors
    if vectors.shape[1] < dim:
        # The rank grows and shrinks with the number of users while they are few; zero columns keep
        # every cosine as it was and the width fixed, so the Chroma collection takes every refit.
        vectors = np.pad(vectors, ((0, 0), (0, dim - vectors.shape[1])))
    return items, vectors


def user_vector(
    history: Sequence[tuple[str, float]],
    vectors: dict[str, np.ndarray],
    decay: float = 0.8,
    last: int = 20,
) -> np.ndarray | None:
    """Weighted mean of the user's items' vectors: `history` is (item id, weight) oldest first.

    The newest item counts fully, the one before `decay` times as much, and so on over the
    `last` items; negative weights (dislikes) subtract. None when no item has a vector.
    """
    recent = [(i, w) for i, w in history if i in vectors][-last:]
    if not recent:
        return None
    ages = np.arange(len(recent))[::-1]
    weights = np.array([w for _, w in recent], dtype=np.float32) * decay**ages
    total = weights @ np.stack([vectors[i] for i, _ in recent])
    norm = float(np.linalg.norm(total))
    return total / norm if norm > 0 else None


# A catalog's long tail has collaborative vectors from a handful of people each: noise, and most
# of the cost of an exact search (200k items at 10M events: 175k x 64 floats, 2.4 ms a request,
# memory-bound). Past this many items only the most had are searched.
COLLAB_SCAN_ITEMS = 50_000


class CollabTable:
    """The fitted vectors in process memory: exact cosine top-k by one matrix product.

    Chroma's "collab" collection holds the same vectors (for other workers and for inspection);
    at 100k x 64 this product takes about a millisecond, less than one Chroma round trip.
    """

    def __init__(self, ids: Sequence[str] = (), vectors: np.ndarray | None = None,
                 weight: Mapping[str, float] | None = None, scan: int | None = None):
        """`weight` (popularity by id) and `scan`: past `scan` items, only the `scan` most had are
        searched (the rest still give their vectors to a user's profile)."""
        ids = list(ids)
        if vectors is None or not ids:
            vectors = np.zeros((0, 1), np.float32)
        scan = COLLAB_SCAN_ITEMS if scan is None else scan
        if weight is not None and len(ids) > scan:
            order = np.argsort(-np.array([weight.get(i, 0.0) for i in ids], dtype=np.float64), kind="stable")
            ids, vectors = [ids[j] for j in order], np.asarray(vectors)[order]
        self.ids = ids
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        self.searched = self.matrix[: min(scan, len(ids))] if weight is not None else self.matrix
        self._row = {item_id: n for n, item_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        return {i: self.matrix[self._row[i]] for i in ids if i in self._row}

    def rows(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
        """The ids held here (in the order given) and their vectors as one matrix."""
        row = self._row
        found = [i for i in ids if i in row]
        return found, self.matrix[[row[i] for i in found]]

    def top(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k items most cosine-similar to `vector` (unit length), best first."""
        if not self.ids or k <= 0:
            return []
        # einsum runs single-threaded: multi-threaded BLAS spent more time waking its threads
        # than multiplying on a busy 2-core machine (8 ms vs 0.2 ms at 10k x 64).
        scores = np.einsum("ij,j->i", self.searched, np.asarray(vector, dtype=np.float32))
        return [(self.ids[j], float(scores[j])) for j in top_k(scores, k)]

