"""One evaluation run: load, split, choose knobs on validation, score every variant, write the report."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import ConfigError
from retrieval.progress import progress_bar
from evaluation import bootstrap, metrics, protocols, report, timeliness, tuning
from evaluation.scorers import DENSE_EASE_MAX_ITEMS
from evaluation.splits import leave_one_out
from evaluation.variants import BASE_VARIANTS, BATCHED_PATH, LLM_VARIANTS, build_batched

log = logging.getLogger(__name__)

REPRODUCE_NOTES = [
    "Leave-one-out by timestamp as LlamaRec: per user, items ordered by (timestamp, item id); last = test, "
    "second-to-last = validation, the rest = training. Every rating counts as an interaction.",
    "Knobs (signal decays, fusion weights, LLM blend) are chosen on the validation item; the test stage "
    "history is training + validation and every model is refitted on it. No user's held-out item is ever "
    "in the data a model is fitted on.",
    "Protocol (a) excludes the items already in the user's history (as LlamaRec masks the input sequence); "
    "exact score ties are broken by a fixed seeded random order, neither optimistic nor pessimistic.",
    "Confidence intervals: percentile bootstrap over users (1000 resamples, fixed seed); paired differences "
    "resample both variants' per-user values together.",
]


@dataclass
class EvalConfig:
    """Everything one run needs; the CLI fills it from flags."""

    out: Path
    work_dir: Path
    data: Literal["movielens", "custom"] = "movielens"
    data_root: Path | None = None
    catalog: Path | None = None
    events: Path | None = None
    map_catalog: dict[str, str] = field(default_factory=dict)
    map_events: dict[str, str] = field(default_factory=dict)
    protocol: Literal["a", "b", "both"] = "both"
    variants: list[str] = field(default_factory=lambda: list(BASE_VARIANTS + LLM_VARIANTS))
    llm_users: int = 200
    seed: int = 0
    prompt_variant: str = ""
    backend: Literal["llama", "openai", "fake"] = "llama"
    limit_users: int | None = None
    min_count: int = 5
    embedding: Literal["minilm", "hash"] = "minilm"
    conversations: int = 0
    reason_users: int = 0
    progress: bool = True
    command: str = ""
    settings_env: dict[str, str] = field(default_factory=dict)  # RECASSIST_* values for the LLM backend
    llm: object | None = None  # an LLM instance to use instead of building one (tests)
    embedder: object | None = None  # same, for the embedder
    dense_collab_max_items: int = DENSE_EASE_MAX_ITEMS  # above it, sparse ItemKNN stands in for dense EASE


def load_data(cfg: EvalConfig):
    """Items and events through the public ingest readers, with the platform's column mapping."""
    from retrieval.ingest import read_catalog, read_events

    if cfg.data == "movielens":
        from evaluation.movielens import find_data_root, prepare

        root = cfg.data_root or find_data_root()
        if root is None:
            raise ConfigError(
                "MovieLens data not found in /work/shared/data or ../shared/data; pass --data-root DIR "
                "(the folder holding movielens-small/ and tmdb-5000/)"
            )
        prepared = prepare(Path(root), cfg.work_dir / "movielens")
        catalog = read_catalog(prepared.catalog, prepared.catalog_mapping)
        events = read_events(prepared.events, prepared.events_mapping)
        source = (f"MovieLens ml-latest-small + TMDB 5000 overviews from {root} "
                  f"({prepared.stats.get('movies_with_overview', '?')} of {prepared.stats.get('movies', '?')} movies have an overview)")
    else:
        if not cfg.catalog or not cfg.events:
            raise ConfigError("--data custom needs --catalog FILE and --events FILE (and --map-catalog/--map-events if the columns differ)")
        catalog = read_catalog(cfg.catalog, cfg.map_catalog or None)
        events = read_events(cfg.events, cfg.map_events or None)
        source = f"catalog {cfg.catalog}, events {cfg.events}"
    for result in (catalog, events):
        if result.rejects:
            log.warning("%s: %d rows rejected, first: %s", result.file, len(result.rejects), result.rejects[0])
    return catalog.records, events.records, source


def summarize(ranking: protocols.Ranking, seed: int) -> dict:
    """Per-metric mean and bootstrap CI, plus the number of users."""
    out: dict = {"users": len(ranking.ranks)}
    for name, values in ranking.accuracy().items():
        out[name] = bootstrap.confidence_interval(values, seed=seed).to_dict()
    return out


def latency_summary(values: np.ndarray, note: str) -> dict:
    """p50 and p95 of per-user milliseconds, with a note on how they were measured."""
    return {"p50": metrics.percentile(values, 50), "p95": metrics.percentile(values, 95), "note": note}


def _sample(rows: np.ndarray, n: int | None, seed: int, salt: int) -> np.ndarray:
    """A seeded sample of n rows; samples are nested (the first 50 of a 200 sample are the 50 sample)."""
    if n is None or n >= len(rows):
        return rows
    return np.sort(np.random.default_rng([seed, salt]).permutation(rows)[:n])


def run(cfg: EvalConfig) -> dict:
    """Run the configured evaluation and write the report folder; returns the results dict."""
    started, started_at = time.perf_counter(), datetime.now(timezone.utc)
    items, events, source = load_data(cfg)
    split = leave_one_out(items, events, min_count=cfg.min_count)
    results: dict = {"meta": {}, "split": split.counts, "variants": {}, "knobs": {}, "protocol_a": {}, "protocol_b": {},
                     "beyond": {}, "latency_ms": {}, "paired": {}}
    stages = {name: split.stage(name) for name in ("valid", "test")}
    all_rows = np.arange(len(split.users))
    rows = _sample(all_rows, cfg.limit_users, cfg.seed, salt=1)
    keys = protocols.tie_key(len(split.items), cfg.seed)
    want_a = cfg.protocol in ("a", "both")
    want_b = cfg.protocol in ("b", "both")
    negatives = protocols.sampled_negatives(split, cfg.seed) if want_b else {}

    embedder = cfg.embedder
    if embedder is None:
        from retrieval.embeddings import create_embedder

        embedder = create_embedder(cfg.embedding)
    from evaluation.itemvectors import content_vectors

    vectors = content_vectors(split.items, embedder, cfg.work_dir / "vectors", progress=cfg.progress)

    batched = [v for v in cfg.variants if v in BASE_VARIANTS and v != "retriever"]
    llm_names = [v for v in cfg.variants if v in LLM_VARIANTS]
    fits: dict = {}  # scorers that agree on their fit knobs fit once per stage (the hybrid reuses collab's EASE)
    knobs = choose_knobs(stages["valid"], rows, keys, vectors, cfg, results, fits) if batched or llm_names else {}
    # The hybrid is also the LLM's base and the reference in paired comparisons.
    built = {name: build_batched(name, knobs, vectors, split, fits) for name in dict.fromkeys([*batched, "hybrid", "sequential"])} if knobs else {}
    per_user: dict[tuple[str, str, str], protocols.Ranking] = {}
    for name in batched:
        variant = built[name]
        results["variants"][name] = {"description": variant.description, "path": variant.path, "path_short": "numpy batched" if variant.path == BATCHED_PATH else "product model", "knobs": variant.knobs}
        for stage_name, stage in stages.items():
            if want_a:
                ranking = protocols.full_ranking(variant, stage, rows, keys, progress=cfg.progress)
                per_user[("a", stage_name, name)] = ranking
                results["protocol_a"].setdefault(stage_name, {})[name] = summarize(ranking, cfg.seed)
                if stage_name == "test":
                    results["latency_ms"][f"retrieve: {name}"] = latency_summary(ranking.latency_ms, "amortised over a batch of users")
            if want_b:
                ranking = protocols.sampled_ranking(variant, stage, rows, keys, negatives)
                per_user[("b", stage_name, name)] = ranking
                results["protocol_b"].setdefault(stage_name, {})[name] = summarize(ranking, cfg.seed)

    if "retriever" in cfg.variants:
        from evaluation.product import run_product_retriever

        run_product_retriever(cfg, split, stages, rows, keys, want_a, results, per_user, embedder, vectors)

    llm_rows = _sample(rows, cfg.llm_users, cfg.seed, salt=2)
    if llm_names:
        from evaluation.llm_runner import run_llm_variants

        run_llm_variants(cfg, split, stages, llm_rows, keys, negatives, built["hybrid"], llm_names, results, per_user)

    if want_a:
        _beyond(results, per_user, stages["test"], vectors, cfg.seed)
        timeliness.add_to_beyond(results, per_user, stages["test"], split.items)  # catalogs with published_at
        _paired(results, per_user, cfg.seed)
    if cfg.conversations:
        from evaluation.conversation import run_conversations

        results["conversation"] = run_conversations(cfg, split, embedder, vectors, results)

    results["meta"] = {
        "command": cfg.command,
        "started": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - started,
        "machine": f"{platform.machine()}, {_cores()} cores",
        "seed": cfg.seed,
        "bootstrap": f"{bootstrap.DEFAULT_RESAMPLES} resamples over users, 95% percentile interval",
        "data": source,
        "split": ("leave-one-out by timestamp; "
                  + (f"users and items with >= {cfg.min_count} interactions (LlamaRec filtering, repeated until stable)"
                     if cfg.min_count > 1 else "no count filtering")),
        "users_evaluated": len(rows),
        "llm_users": len(llm_rows) if llm_names else 0,
        "embedding": getattr(embedder, "name", cfg.embedding),
        "notes": REPRODUCE_NOTES,
    }
    report.write(cfg.out, results)
    return results


def choose_knobs(valid, rows, keys, vectors, cfg: EvalConfig, results: dict, fits: dict | None = None) -> dict:
    """Search each signal's knobs, then the fusion weights, on the validation stage (evaluated rows only).

    The chosen signals' validation fits go into `fits`, where the variants find them again."""
    from evaluation import scorers

    # Fitting uses everyone's training histories; only the scored rows are limited.
    fit_stage = valid
    # The scorer itself is a one-value knob, so the report's knobs say which one ran.
    kind = scorers.collab_kind(valid.n_items, cfg.dense_collab_max_items)
    collab_grid, collab_fixed = tuning.COLLAB_GRIDS[kind]
    collab_grid = {"scorer": (kind,), **collab_grid}
    with_bar = {"progress": cfg.progress} if kind == "itemknn" else {}  # its neighbour build shows a bar
    steps = [
        ("sequential", lambda s: scorers.Sequential(**tuning.SEQUENTIAL_FIXED, **s), tuning.SEQUENTIAL_GRID, tuning.SEQUENTIAL_FIXED),
        ("collab", lambda s: scorers.make_collab(**collab_fixed, **with_bar, **s), collab_grid, collab_fixed),
        ("content", lambda s: scorers.Content(vectors, **s), tuning.CONTENT_GRID, {}),
    ]
    knobs: dict = {}
    bar = progress_bar(sum(len(tuning.grid(space)) for _, _, space, _ in steps) + 1, "choosing knobs [valid]", cfg.progress, unit="setting")
    for name, make, space, fixed in steps:
        found = tuning.search_scorer(name, make, space, valid, keys, rows=rows, fit_stage=fit_stage, on_setting=bar.update)
        results["knobs"][name] = found.to_dict()
        knobs[name] = {**fixed, **found.best}
    signals = {
        "sequential": scorers.Sequential(**knobs["sequential"]),
        "collab": scorers.make_collab(**knobs["collab"]),
        "content": scorers.Content(vectors, **knobs["content"]),
        "popularity": scorers.Popularity(),
    }
    fitted = {name: scorers.fit_once(s, fit_stage, fits) for name, s in signals.items()}
    found = tuning.search_weights(fitted, tuning.HYBRID_GRID, valid, rows, keys)
    bar.update(1)
    bar.close()
    results["knobs"]["hybrid"] = found.to_dict()
    knobs["hybrid"] = found.best
    return knobs


def _beyond(results: dict, per_user: dict, test, vectors: np.ndarray, seed: int) -> None:
    counts = np.bincount(np.concatenate(test.histories), minlength=test.n_items)
    for (protocol, stage, name), ranking in per_user.items():
        if protocol != "a" or stage != "test" or not ranking.top:
            continue
        results["beyond"][name] = {
            "coverage": metrics.coverage(ranking.top, test.n_items),
            "diversity": bootstrap.confidence_interval(metrics.intra_list_diversity(ranking.top, vectors), seed=seed).to_dict(),
            "novelty": bootstrap.confidence_interval(metrics.novelty(ranking.top, counts, test.n_users), seed=seed).to_dict(),
            "users": len(ranking.top),
        }


def _paired(results: dict, per_user: dict, seed: int) -> None:
    """Each variant minus the reference on the same users (sequential for retrieval, hybrid for LLM ones)."""
    tests = {name: r for (p, s, name), r in per_user.items() if p == "a" and s == "test"}
    for name, ranking in tests.items():
        reference = ranking.reference or ("sequential" if name != "sequential" else None)
        if reference is None or reference not in tests:
            continue
        ref = tests[reference]
        if ref.user_ids != ranking.user_ids:
            continue
        a, b = ranking.accuracy(), ref.accuracy()
        results["paired"][name] = {
            "vs": reference,
            "users": len(ranking.ranks),
            "NDCG@10": bootstrap.paired_difference(a["NDCG@10"], b["NDCG@10"], seed=seed).to_dict(),
            "Recall@10": bootstrap.paired_difference(a["Recall@10"], b["Recall@10"], seed=seed).to_dict(),
        }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

