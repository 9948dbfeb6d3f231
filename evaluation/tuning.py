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
# EASE fits once per l2: `last` only changes which items make the profile.
COLLAB_GRID = {"l2": (100.0, 300.0, 1000.0), "last": (10, 30)}
COLLAB_FIXED = {"decay": 0.9}
# The sparse stand-in above scorers.DENSE_EASE_MAX_ITEMS; one fit per shrink. On a synthetic
# platform shrink 0 beat 10/50/200, decay 0.7 beat 0.9 by 0.03, neighbours 50-1000 hardly mattered
# (evaluation/reports/eval-scale.md).
ITEMKNN_GRID = {"shrink": (0.0, 10.0), "last": (10, 30), "decay": (0.7, 0.9)}
ITEMKNN_FIXED = {"neighbours": 200}
COLLAB_GRIDS = {"ease": (COLLAB_GRID, COLLAB_FIXED), "itemknn": (ITEMKNN_GRID, ITEMKNN_FIXED)}
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


def block_ndcg(scores: np.ndarray, stage: Stage, block: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per-user NDCG@10 of one block of stage rows, from that block's score matrix.

    A user with 10 items strictly above the target, not counting their own history, scores 0
    whatever the exact rank, so only the others are ranked in full (most users, on a big catalog).
    """
    block = np.asarray(block, dtype=np.int64)
    targets = stage.targets[block]
    seen = [stage.histories[r] for r in block]
    above = np.count_nonzero(scores > scores[np.arange(len(block)), targets][:, None], axis=1)
    close = np.flatnonzero(above - np.array([len(h) for h in seen], dtype=np.int64) < 10)
    out = np.zeros(len(block))
    if len(close):
        ranks = metrics.target_ranks(scores[close], targets[close], [seen[i] for i in close], keys)
        out[close] = metrics.ndcg_at(ranks, 10)
    return out


def blocked_objective(scorer: scorers.Scorer, stage: Stage, rows, keys: np.ndarray) -> float:
    """`objective` over the given rows, scored in bounded user blocks (the same value, less memory)."""
    values = [block_ndcg(scorer.score(stage, block), stage, block, keys) for block in scorers.user_blocks(rows, stage.n_items)]
    return float(np.concatenate(values).mean()) if values else 0.0


def grid(space: dict[str, Iterable]) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def search_scorer(name: str, make: Callable[[dict], scorers.Scorer], space: dict, stage: Stage, keys: np.ndarray,
                  rows=None, fit_stage: Stage | None = None, on_setting: Callable[[int], object] | None = None) -> Search:
    """Fit one scorer per setting (on fit_stage: every user's history) and score the validation rows."""
    assert stage.name == "valid", "knobs are chosen on the validation stage only"
    fit_stage = fit_stage or stage
    rows = np.arange(fit_stage.n_users) if rows is None else np.asarray(rows)
    found, last_fit = Search(name), {}
    for setting in grid(space):
        scorer = scorers.fit_once(make(setting), fit_stage, last_fit, latest_only=True)  # EASE: one inverse per l2
        found.add(setting, blocked_objective(scorer, fit_stage, rows, keys))
        if on_setting:
            on_setting(1)
    return found


def search_weights(signals: dict[str, scorers.Scorer], space: dict, stage: Stage, rows, keys: np.ndarray,
                   anchor: str = "sequential") -> Search:
    """Fusion weights for fitted signals, each scaled per user; the anchor signal keeps weight 1.

    Scored a block of users at a time, every setting on the block before the next block.
    """
    assert stage.name == "valid", "knobs are chosen on the validation stage only"
    settings = grid({k: v for k, v in space.items() if k in signals})
    values: list[np.ndarray] = []
    for block in scorers.user_blocks(rows, stage.n_items):
        scaled = {name: scorers.scale_rows(s.score(stage, block)) for name, s in signals.items()}
        values.append(weighted_ndcg(scaled, anchor, settings, stage, block, keys))
    found = Search("hybrid")
    for i, setting in enumerate(settings):
        found.add({anchor: 1.0, **setting}, float(np.concatenate([v[i] for v in values]).mean()) if values else 0.0)
    return found


def weighted_ndcg(scaled: dict[str, np.ndarray], anchor: str, settings: list[dict], stage: Stage, block: np.ndarray,
                  keys: np.ndarray) -> np.ndarray:
    """(settings, users) NDCG@10 of anchor + sum(weight * signal), exactly as ranking each weighted sum would.

    Ranking the whole catalog once per setting costs settings x users x items. Instead, for
    weights within the grid's range, an item is ahead of the target in every setting (or in none)
    when bounds over the range say so; only the items in between are summed and compared per
    setting, in the same float32 arithmetic as the full sum, and users with 10 items surely ahead
    score 0 everywhere. A margin well above float32 rounding keeps the bounds conservative.
    """
    users = np.arange(len(block))
    targets = stage.targets[block]
    names = list(settings[0]) if settings else []
    high = {n: max(s[n] for s in settings) for n in names}
    low = {n: min(s[n] for s in settings) for n in names}
    below = scaled[anchor] - scaled[anchor][users, targets][:, None]
    above = below.copy()
    for n in names:
        rise = scaled[n] - scaled[n][users, targets][:, None]
        fall = np.minimum(rise, 0.0)
        np.maximum(rise, 0.0, out=rise)
        for bound, up, down in ((below, low[n], high[n]), (above, high[n], low[n])):
            if up:
                bound += up * rise
            if down:
                bound += down * fall
        del rise, fall
    seen_rows = np.repeat(users, [len(stage.histories[r]) for r in block])
    seen = np.concatenate([stage.histories[r] for r in block]) if len(block) else np.zeros(0, dtype=np.int64)
    for bound in (below, above):
        bound[seen_rows, seen] = -np.inf
        bound[users, targets] = -np.inf
    margin = 1e-4 * (1.0 + sum(abs(w) for w in high.values()) + sum(abs(w) for w in low.values()))
    surely = np.count_nonzero(below > margin, axis=1)
    undecided = (above >= -margin) & ~(below > margin)
    finite = np.all([np.isfinite(m[users, targets]) for m in scaled.values()], axis=0)
    out = np.zeros((len(settings), len(block)))
    for u in np.flatnonzero((surely < 10) & finite):
        cand = np.append(np.flatnonzero(undecided[u]), targets[u])
        tie_ahead = keys[cand] < keys[targets[u]]
        parts = {n: m[u, cand] for n, m in scaled.items()}
        for i, setting in enumerate(settings):
            total = parts[anchor].copy()
            for n, weight in setting.items():
                if weight:
                    total += weight * parts[n]
            t = total[-1]
            ahead = np.count_nonzero((total[:-1] > t) | ((total[:-1] == t) & tie_ahead[:-1]))
            out[i, u] = metrics.ndcg_at(np.array([1.0 + surely[u] + ahead]), 10)[0]
    return out
