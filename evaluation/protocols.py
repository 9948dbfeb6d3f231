"""The two ranking protocols, as functions from a variant and a stage to per-user ranks.

(a) full ranking: the held-out item against every catalog item the user has not already
    interacted with (LlamaRec's protocol); Recall@10/20, NDCG@10/20, MRR.
(b) sampled ranking: the held-out item plus 19 random items the user never interacted with
    (LLMRank's protocol); NDCG@1/5/10. The 19 are drawn once per user from the seed, so every
    variant and both stages see the same candidates.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from evaluation import metrics
from evaluation.splits import Split, Stage
from retrieval.progress import progress_bar

FULL_KS = (10, 20)
SAMPLED_KS = (1, 5, 10)
SAMPLED_NEGATIVES = 19
TOP_N = 10  # list length for coverage, diversity and novelty
LIST_DEPTH = 100  # how deep per-user candidate lists are read (MRR beyond it counts as 0)


@dataclass
class Ranking:
    """What one variant produced on one stage and protocol, per user."""

    variant: str
    protocol: str  # "a" or "b"
    stage: str
    user_ids: list[str]
    ranks: np.ndarray  # 1-based rank of the held-out item (inf: not in the variant's list)
    top: list[np.ndarray] = field(default_factory=list)  # protocol a: each user's top-N item indices
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per user (batched: amortised)
    reference: str | None = None  # the variant paired differences subtract (same users)

    def accuracy(self) -> dict[str, np.ndarray]:
        if self.protocol == "a":
            return metrics.accuracy(self.ranks, FULL_KS, mrr=True)
        return {f"NDCG@{k}": metrics.ndcg_at(self.ranks, k) for k in SAMPLED_KS}


def tie_key(n_items: int, seed: int) -> np.ndarray:
    """A fixed random priority per item, used only to order exactly tied scores."""
    return np.random.default_rng([seed, 7]).permutation(n_items)


def _user_seed(user_id: str) -> int:
    return int(hashlib.sha1(user_id.encode("utf-8")).hexdigest()[:8], 16)


def sampled_negatives(split: Split, seed: int, n: int = SAMPLED_NEGATIVES) -> dict[str, np.ndarray]:
    """Per user, n item indices they never interacted with (training, validation or test)."""
    index = split.item_index()
    n_items = len(split.items)
    out: dict[str, np.ndarray] = {}
    for user in split.users:
        seen = np.unique(np.fromiter((index[e.item_id] for e in [*user.train, user.valid, user.test]), dtype=np.int64))
        rng = np.random.default_rng([seed, _user_seed(user.user_id)])
        # The same draw as rng.choice(unseen items, ...), without listing the unseen items (catalog-sized per user).
        picks = rng.choice(n_items - len(seen), size=min(n, n_items - len(seen)), replace=False)
        out[user.user_id] = unseen_at(picks, seen)
    return out


def unseen_at(positions: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The items at the given positions of the sorted list of items not in `seen` (sorted, unique)."""
    # Item = position + the number of seen items at or before it; seen[j] - j counts the unseen items below seen[j].
    return positions + np.searchsorted(seen - np.arange(len(seen)), positions, side="right")


def sampled_candidates(stage: Stage, rows: Sequence[int], negatives: dict[str, np.ndarray]) -> np.ndarray:
    """(users, 1 + negatives) item indices; column 0 is the held-out item."""
    return np.array([np.concatenate([[stage.targets[r]], negatives[stage.user_ids[r]]]) for r in rows], dtype=np.int64)


def rank_within(scores: np.ndarray, candidates: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of column 0 among each row's candidates (scores: users x candidates)."""
    target = scores[:, :1]
    ahead = (scores > target) | ((scores == target) & (keys[candidates] < keys[candidates[:, :1]]))
    ahead[:, 0] = False
    return 1.0 + ahead.sum(axis=1)


def full_ranking(variant, stage: Stage, rows: Sequence[int], keys: np.ndarray, *, batch: int = 256, progress: bool = False) -> Ranking:
    """Protocol (a) for a batched (score matrix) or per-user (candidate list) variant."""
    rows = np.asarray(rows, dtype=np.int64)
    ranks = np.empty(len(rows))
    top: list[np.ndarray] = []
    latency = np.empty(len(rows))
    variant.prepare(stage)  # fitting is not part of the per-user latency
    bar = progress_bar(len(rows), f"(a) {variant.name} [{stage.name}]", progress)
    if hasattr(variant, "scores"):
        for start in range(0, len(rows), batch):
            block = rows[start : start + batch]
            began = time.perf_counter()
            scores = variant.scores(stage, block)
            seen = [stage.histories[r] for r in block]
            ranks[start : start + len(block)] = metrics.target_ranks(scores, stage.targets[block], seen, keys)
            latency[start : start + len(block)] = (time.perf_counter() - began) * 1000 / len(block)
            top.extend(metrics.top_k(scores, seen, keys, TOP_N))
            bar.update(len(block))
    else:
        for i, row in enumerate(rows):
            began = time.perf_counter()
            ranked = np.asarray(variant.ranked(stage, row, LIST_DEPTH), dtype=np.int64)
            latency[i] = (time.perf_counter() - began) * 1000
            hits = np.flatnonzero(ranked == stage.targets[row])
            ranks[i] = hits[0] + 1.0 if len(hits) else metrics.MISSING
            top.append(ranked[:TOP_N])
            bar.update(1)
    bar.close()
    return Ranking(variant.name, "a", stage.name, [stage.user_ids[r] for r in rows], ranks, top, latency)


def sampled_ranking(
    variant, stage: Stage, rows: Sequence[int], keys: np.ndarray, negatives: dict[str, np.ndarray], *, batch: int = 256
) -> Ranking:
    """Protocol (b) for a batched variant: score the 20 candidates from the variant's score matrix."""
    rows = np.asarray(rows, dtype=np.int64)
    ranks = np.empty(len(rows))
    latency = np.empty(len(rows))
    variant.prepare(stage)
    for start in range(0, len(rows), batch):
        block = rows[start : start + batch]
        began = time.perf_counter()
        candidates = sampled_candidates(stage, block, negatives)
        scores = variant.scores(stage, block)
        picked = np.take_along_axis(np.asarray(scores, dtype=np.float64), candidates, axis=1)
        ranks[start : start + len(block)] = rank_within(picked, candidates, keys)
        latency[start : start + len(block)] = (time.perf_counter() - began) * 1000 / len(block)
    return Ranking(variant.name, "b", stage.name, [stage.user_ids[r] for r in rows], ranks, [], latency)
