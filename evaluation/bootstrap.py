"""95% confidence intervals by resampling users (or whole dialogs) with replacement (percentile bootstrap, fixed seed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class Interval:
    """A mean over users with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def resample_indices(n: int, seed: int, resamples: int = DEFAULT_RESAMPLES) -> np.ndarray:
    """(resamples, n) user indices; the same seed and n give the same draws for every variant."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def confidence_interval(
    values: np.ndarray, *, seed: int, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95
) -> Interval:
    """Mean of per-user values and its percentile-bootstrap interval."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    means = values[resample_indices(n, seed, resamples)].mean(axis=1)
    return _percentile_interval(float(values.mean()), means, level, n)


def grouped_interval(
    values: np.ndarray, groups, *, seed: int, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95
) -> Interval:
    """Mean over cases, resampling whole groups: the cases of one dialog are not independent draws.

    Each resample draws groups with replacement and takes the mean of all their cases; `n` is the
    number of cases."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    _, group = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(group, weights=values)
    sizes = np.bincount(group).astype(float)
    draws = resample_indices(len(sums), seed, resamples)
    means = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    return _percentile_interval(float(values.mean()), means, level, len(values))


def _percentile_interval(mean: float, means: np.ndarray, level: float, n: int) -> Interval:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    # With heavy ties the percentile can land a hair off the mean; keep the mean inside.
    return Interval(mean, float(min(low, mean)), float(max(high, mean)), n)


def paired_difference(
    a: np.ndarray, b: np.ndarray, *, seed: int, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95
) -> Interval:
    """Mean of a - b over the same users, resampled jointly (the fair way to compare two variants)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same users on both sides ({a.shape} vs {b.shape})")
    return confidence_interval(a - b, seed=seed, resamples=resamples, level=level)
