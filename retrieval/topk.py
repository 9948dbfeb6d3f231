"""The k best of many scores, exactly, without sorting or partitioning all of them."""

from __future__ import annotations

import numpy as np

SAMPLE_STRIDE = 16  # the threshold comes from every 16th score


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest scores, best first (equal scores: the lower position first).

    An argpartition of 200k scores took 4-15 ms a request on a busy 2-core machine. A strided
    sample gives a threshold that about k + 128 scores pass, and only those are sorted; if fewer
    than k pass, all scores are. Exact either way: every score at or above the threshold is kept.
    """
    n = len(scores)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = None
    if n > 4 * SAMPLE_STRIDE * k:
        sample = scores[::SAMPLE_STRIDE]
        m = k // SAMPLE_STRIDE + 8
        threshold = np.partition(sample, len(sample) - m)[len(sample) - m]
        candidates = np.flatnonzero(scores >= threshold)
        if len(candidates) < k:
            candidates = None
    if candidates is None:
        candidates = np.arange(n)
    return candidates[np.lexsort((candidates, -scores[candidates]))[:k]]
