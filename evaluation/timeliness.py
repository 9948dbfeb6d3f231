"""Timeliness: how new the recommended items are when they are recommended (the seeds' 'timeliness').

For a catalog with publication times (`Item.published_at`): per recommendation list, the mean
and median age of its dated items at the request's time, and the share published within the last
`recent_hours`. Undated items are left out; a list without a dated item contributes nothing. An
item published after the request (a leave-one-out split lets later items in) has a negative age,
counts in `share_not_yet_out` and not as recent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RECENT_HOURS = 24.0
HOUR = 3600.0


def list_ages(lists: Sequence[Sequence[int]], published: np.ndarray, request_times: Sequence[float]) -> list[np.ndarray]:
    """Hours from publication to request for each list's dated items (item indices into `published`, NaN = undated)."""
    out = []
    for items, now in zip(lists, request_times):
        moments = published[np.asarray(items, dtype=np.int64)] if len(items) else np.zeros(0)
        out.append((now - moments[~np.isnan(moments)]) / HOUR)
    return out


def timeliness(ages: Sequence[np.ndarray], recent_hours: float = RECENT_HOURS) -> dict:
    """Mean of per-list mean ages, median of all ages, and the share within `recent_hours` (hours)."""
    dated = [a for a in ages if len(a)]
    if not dated:
        return {"lists": 0}
    every = np.concatenate(dated)
    return {
        "mean_age_h": float(np.mean([a.mean() for a in dated])),
        "median_age_h": float(np.median(every)),
        f"share_within_{recent_hours:g}h": float(np.mean((every >= 0) & (every <= recent_hours))),
        "share_not_yet_out": float(np.mean(every < 0)),
        "lists": len(dated),
    }


def add_to_beyond(results: dict, per_user: dict, test, items, k: int = 10) -> None:
    """`recassist eval`: timeliness of each variant's test lists, when the catalog has publication times."""
    published = np.array([np.nan if item.published_at is None else item.published_at for item in items], dtype=np.float64)
    if np.isnan(published).all() or test.target_times is None:
        return
    when = dict(zip(test.user_ids, np.asarray(test.target_times, dtype=np.float64).tolist()))
    for (protocol, stage, name), ranking in per_user.items():
        if protocol != "a" or stage != "test" or not ranking.top or name not in results["beyond"]:
            continue
        times = [when[user] for user in ranking.user_ids]
        results["beyond"][name]["timeliness"] = timeliness(list_ages([top[:k] for top in ranking.top], published, times))


def report_section(beyond: dict) -> list[str]:
    """The report's timeliness table (nothing when no variant has one)."""
    from evaluation.report import _table

    rows = []
    for name, values in beyond.items():
        found = values.get("timeliness") or {}
        if found.get("lists"):
            share = next((v for k, v in found.items() if k.startswith("share_within_")), float("nan"))
            rows.append([f"`{name}`", f"{found['mean_age_h']:.1f}", f"{found['median_age_h']:.1f}", f"{share:.3f}", str(found["lists"])])
    if not rows:
        return []
    return ["## Timeliness: how new each user's top 10 is at the time of the held-out item", "",
            f"Age = hours from an item's published_at to the request; share = items published within the last {RECENT_HOURS:g} h.", "",
            _table(rows, ["variant", "mean age (h)", "median age (h)", f"share within {RECENT_HOURS:g} h", "lists"]), ""]
