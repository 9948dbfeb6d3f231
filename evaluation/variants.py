"""The variants an evaluation compares, by name, and how each one scores.

Two kinds: a batched variant has `scores(stage, rows) -> users x items` (numpy, all users in
seconds); a per-user variant has `ranked(stage, row, k) -> item indices` (the product's
Retriever, one vector-store query per user). LLM variants re-rank a base variant's list and
live in evaluation/llm_eval.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from core.errors import ConfigError
from evaluation import scorers
from evaluation.splits import Stage

# Non-LLM variants in report order; "retriever" is the product's own Retriever (per user).
BASE_VARIANTS = ("popularity", "content", "collab", "sequential", "sequential-product", "hybrid", "retriever")
LLM_VARIANTS = ("llm", "llm-noshuffle")  # hybrid + LLM ranking, with and without shuffled orders
DEFAULT_VARIANTS = BASE_VARIANTS + LLM_VARIANTS
BATCHED_PATH = "numpy, users batched in bounded blocks (score matrix over the whole catalog)"
COLLAB_DESCRIPTIONS = {
    "ease": "item-item weights learned in closed form from who watched what (EASE), from the user's recent items",
    "itemknn": "item-item cosine over who watched what, top neighbours per item (sparse ItemKNN: the catalog is "
               "past the size where dense EASE is cheap), from the user's recent items",
}


@dataclass
class MatrixVariant:
    """A batched variant around one scorer; `fit` is called once per stage."""

    name: str
    scorer: scorers.Scorer
    description: str = ""
    knobs: dict = field(default_factory=dict)
    path: str = BATCHED_PATH
    fits: dict | None = None  # one run's fits, shared by variants whose scorers agree (scorers.fit_once)
    _fitted_on: str | None = None

    def prepare(self, stage: Stage) -> None:
        if self._fitted_on != stage.name:
            scorers.fit_once(self.scorer, stage, self.fits)
            self._fitted_on = stage.name

    def scores(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        self.prepare(stage)
        return self.scorer.score(stage, rows)


def parse_variants(text: str | Sequence[str]) -> list[str]:
    """'popularity,hybrid,llm' -> names, checked; 'all' means every variant, 'none' no variant (conversations only)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["all"]:
        return list(DEFAULT_VARIANTS)
    if names == ["none"]:
        return []
    known = set(DEFAULT_VARIANTS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_VARIANTS)} or 'all'")
    return list(dict.fromkeys(names))


def build_batched(name: str, knobs: dict, vectors: np.ndarray | None, split=None, fits: dict | None = None) -> MatrixVariant:
    """One of the numpy variants with the given knobs (see evaluation/tuning.py for how they are chosen).

    Variants built with the same `fits` dict fit an equal scorer once per stage (the hybrid's
    collaborative part reuses the collab variant's EASE inverse)."""
    variant = _variant(name, knobs, vectors, split, fits)
    variant.fits = fits
    return variant


def _variant(name: str, knobs: dict, vectors: np.ndarray | None, split, fits: dict | None) -> MatrixVariant:
    if name == "sequential-product":
        from evaluation.product import ProductSequential

        return MatrixVariant(
            name, ProductSequential(split),
            "the shipped retrieval.sequential.SequentialModel with its defaults, read into a score matrix",
            path="product SequentialModel.scores() per user, written into a score matrix",
        )
    if name == "popularity":
        return MatrixVariant(name, scorers.Popularity(), "items most users had in training")
    if name == "content":
        if vectors is None:
            raise ConfigError("the content variant needs item vectors (an embedder)")
        return MatrixVariant(
            name, scorers.Content(vectors, **knobs.get("content", {})),
            "cosine of item text embeddings (all-MiniLM-L6-v2) to the user's recent liked items",
            knobs.get("content", {}),
        )
    if name == "collab":
        chosen = knobs.get("collab", {})
        scorer = scorers.make_collab(**chosen)
        return MatrixVariant(name, scorer, COLLAB_DESCRIPTIONS[scorer.name], chosen)
    if name == "sequential":
        return MatrixVariant(
            name, scorers.Sequential(**knobs.get("sequential", {})),
            "what other users watched right after the user's latest items, recency-decayed",
            knobs.get("sequential", {}),
        )
    if name == "hybrid":
        weights = knobs.get("hybrid", {})
        parts, ws = [], []
        for part in ("sequential", "collab", "content", "popularity"):
            if weights.get(part, 0.0) and (part != "content" or vectors is not None):
                parts.append(build_batched(part, knobs, vectors).scorer)
                ws.append(float(weights[part]))
        if not parts:
            parts, ws = [scorers.Sequential(**knobs.get("sequential", {}))], [1.0]
        return MatrixVariant(
            name, scorers.Hybrid(parts, ws, fits=fits),
            "weighted sum of the signals above, each scaled per user to [0, 1]",
            {"weights": dict(zip([p.name for p in parts], ws))},
        )
    raise ConfigError(f"{name!r} is not a batched variant")
