"""Choose every knob (signal decays, fusion weights, the LLM blend) on the VALIDATION item only.

The test item is never looked at here: each search scores the validation stage, keeps the
setting with the best mean NDCG@10, and reports the whole search for the record.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from evaluation import metrics, scorers
from evaluation.splits import Stage

OBJECTIVE = "NDCG@10"

# Small grids on purpose: 610 validation users cannot tell apart finer settings (one standard
# error of NDCG@10 is about 0.01), and a wide search would just fit their noise.
SEQUENTIAL_GRID = {"window": (3, 5, 10), "last": (5, 10, 20), "decay": (0.6, 0.8, 0.9)}
SEQUENTIAL_FIXED = {"step_decay": 1.0, "backward": 0.3}
# EASE scores from the user's recent items: over the whole history it ranked at half the NDCG@10
# on validation items (0.046 vs 0.07-0.08; evaluation/reports/experiments.md).
COLLAB_GRID = {"l2": (100.0, 300.0, 1000.0), "last": (10, 30)}
COLLAB_FIXED = {"decay": 0.9}
CONTENT_GRID = {"last": (5, 20), "decay": (0.8, 0.95)}
HYBRID_GRID = {
    "collab": (0.0, 0.1, 0.2, 0.4),
    "content": (0.0, 0.05, 0.1, 0.2),
    "popularity": (0.0, 0.05, 0.1),
}
BLEND_GRID = tuple(round(float(x), 2) for x in np.linspace(0.0, 1.0, 11))


@dataclass
class Search:
    """One knob search: every setting tried with its validation score, and the winner."""

    name: str
    tried: list[tuple[dict, float]] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    best_score: float = float("-inf")

    def add(self, setting: dict, score: float) -> None:
        self.tried.append((dict(setting), float(score)))
        # Strictly better only: on ties the earlier (simpler) setting stays.
        if score > self.best_score + 1e-12:
            self.best, self.best_score = dict(setting), float(score)

    def to_dict(self) -> dict:
        return {
            "objective": OBJECTIVE,
            "best": self.best,
            "best_score": round(self.best_score, 6),
            "tried": [{"setting": s, "score": round(v, 6)} for s, v in self.tried],
        }


def objective(scores: np.ndarray, stage: Stage, keys: np.ndarray) -> float:
    """Mean NDCG@10 of the held-out items under protocol (a)."""
    ranks = metrics.target_ranks(scores, stage.targets, stage.histories, keys)
    return float(metrics.ndcg_at(ranks, 10).mean())


def grid(space: dict[str, Iterable]) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def search_scorer(name: str, make: Callable[[dict], scorers.Scorer], space: dict, stage: Stage, keys: np.ndarray) -> Search:
    """Fit and score one scorer per setting on the validation stage."""
    assert stage.name == "valid", "knobs are chosen on the validation stage only"
    found = Search(name)
    rows = np.arange(stage.n_users)
    for setting in grid(space):
        scorer = make(setting).fit(stage)
        found.add(setting, objective(scorer.score(stage, rows), stage, keys))
    return found


def search_weights(signals: dict[str, np.ndarray], space: dict, stage: Stage, keys: np.ndarray, anchor: str = "sequential") -> Search:
    """Fusion weights for per-user-scaled signal matrices; the anchor signal keeps weight 1."""
    assert stage.name == "valid", "knobs are chosen on the validation stage only"
    found = Search("hybrid")
    scaled = {name: scorers.scale_rows(m) for name, m in signals.items()}
    usable = {k: v for k, v in space.items() if k in scaled}
    for setting in grid(usable):
        total = scaled[anchor].copy()
        for name, weight in setting.items():
            if weight:
                total += weight * scaled[name]
        found.add({anchor: 1.0, **setting}, objective(total, stage, keys))
    return found
