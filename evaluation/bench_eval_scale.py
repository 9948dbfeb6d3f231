"""Dense EASE against sparse ItemKNN on one platform: validation NDCG@10, fit time and peak memory.

    python -m evaluation.bench_eval_scale --catalog DIR/catalog.jsonl --events DIR/events.csv \\
        --scorer ease --limit-users 3000
    python -m evaluation.bench_eval_scale --scorer ease --min-count 0     # MovieLens, unfiltered
    python -m evaluation.bench_eval_scale --scorer ease --fit-only 6000   # one fit's time and memory

Run once per scorer (a process each, so each peak RSS is its own). Each scorer searches its
validation grid (evaluation/tuning.py) on the same seeded users as `recassist eval`, then is
refitted on the test stage at the chosen setting; one JSON line comes out. The numbers behind
scorers.DENSE_EASE_MAX_ITEMS are in evaluation/reports/eval-scale.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(catalog: Path | None, events: Path | None, scorer: str, limit_users: int | None, min_count: int, seed: int = 0,
            work_dir: Path = Path("/tmp/recassist-bench-eval-scale")) -> dict:
    """Load, split, search the scorer's grid on validation, score test at the best setting."""
    from evaluation import protocols, scorers, tuning
    from evaluation.runner import EvalConfig, _sample, load_data
    from evaluation.splits import leave_one_out

    began = time.perf_counter()
    cfg = EvalConfig(out=work_dir, work_dir=work_dir, data="custom" if catalog else "movielens", catalog=catalog, events=events)
    items, events_, _ = load_data(cfg)
    split = leave_one_out(items, events_, min_count=min_count)
    valid, test = split.stage("valid"), split.stage("test")
    rows = _sample(np.arange(valid.n_users), limit_users, seed, salt=1)
    keys = protocols.tie_key(valid.n_items, seed)
    loaded_s, loaded_mb = time.perf_counter() - began, peak_mb()
    space, fixed = tuning.COLLAB_GRIDS[scorer]
    fits: list[float] = []  # seconds of each real fit (settings that share a fit reuse it, as in the eval)

    def make(setting):
        return scorers.make_collab(scorer, **fixed, **setting)

    found, last_fit = tuning.Search(scorer), {}
    for setting in tuning.grid(space):
        model, reused, t = make(setting), dict(last_fit), time.perf_counter()
        scorers.fit_once(model, valid, last_fit, latest_only=True)
        if last_fit.keys() != reused.keys():
            fits.append(time.perf_counter() - t)
        found.add(setting, tuning.blocked_objective(model, valid, rows, keys))
    best, t = make(found.best), time.perf_counter()
    best.fit(test)
    fits.append(time.perf_counter() - t)
    test_ndcg = tuning.blocked_objective(best, test, rows, keys)
    return {
        "scorer": scorer, "items": valid.n_items, "users": valid.n_users, "scored_users": len(rows),
        "interactions": split.counts["interactions"], "best": found.best,
        "valid_ndcg10": round(found.best_score, 5), "test_ndcg10": round(test_ndcg, 5),
        "tried": [(s, round(v, 5)) for s, v in found.tried],
        "fit_s": [round(f, 1) for f in fits], "load_s": round(loaded_s, 1), "peak_rss_mb_after_load": round(loaded_mb),
        "peak_rss_mb": round(peak_mb()), "total_s": round(time.perf_counter() - began, 1),
    }


def dense_fit(n_items: int, scorer: str = "ease", per_user: int = 10, seed: int = 0) -> dict:
    """One fit on random histories over n_items (dense EASE's cost depends on the item count only)."""
    from evaluation import scorers
    from evaluation.splits import Stage

    rng = np.random.default_rng(seed)
    n_users = 10 * n_items // per_user
    histories = [rng.choice(n_items, size=per_user, replace=False) for _ in range(n_users)]
    stage = Stage("valid", [str(i) for i in range(n_items)], [str(u) for u in range(n_users)], histories,
                  [np.ones(per_user, dtype=np.float32)] * n_users, [np.zeros(per_user)] * n_users, np.zeros(n_users, dtype=np.int64))
    before = peak_mb()
    began = time.perf_counter()
    scorers.make_collab(scorer).fit(stage)
    return {"scorer": scorer, "items": n_items, "fit_s": round(time.perf_counter() - began, 1),
            "peak_rss_mb_before": round(before), "peak_rss_mb": round(peak_mb())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path)
    p.add_argument("--events", type=Path)
    p.add_argument("--scorer", choices=("ease", "itemknn"), required=True)
    p.add_argument("--limit-users", type=int, default=3000)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--fit-only", type=int, metavar="ITEMS", help="time one fit on random histories over ITEMS items instead")
    args = p.parse_args(argv)
    if args.fit_only:
        print(json.dumps(dense_fit(args.fit_only, args.scorer)))
    else:  # without --catalog/--events: MovieLens, as `recassist eval` reads it
        print(json.dumps(measure(args.catalog, args.events, args.scorer, args.limit_users, args.min_count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
