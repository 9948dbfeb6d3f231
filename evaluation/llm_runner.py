"""Glue between the runner and llm_eval: build the LLM, run both stages, choose the blend, summarise."""

from __future__ import annotations

import logging
import re

import numpy as np

from core.errors import RecassistError
from evaluation import bootstrap, llm_eval, metrics, tuning
from evaluation.runner import EvalConfig, latency_summary, summarize

log = logging.getLogger(__name__)

PURE = "llm-only"  # the shuffled LLM order alone (blend 1), as LLMRank's zero-shot rows
BASE = "hybrid [LLM sample]"  # the base on the same users, for a fair comparison


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text))[-80:]


def build_llm(cfg: EvalConfig):
    """The configured LLM and its prompts, or (None, None, why) when it cannot be loaded."""
    from assistant.settings import Settings

    settings = Settings.load(
        env=cfg.settings_env, data_dir=cfg.work_dir / "llm", llm_backend=cfg.backend, prompt_variant=cfg.prompt_variant or None
    )
    llm = cfg.llm
    try:
        if llm is None:
            from assistant.llm.factory import create_llm

            llm = create_llm(settings)
        from prompts import Prompts

        prompts = Prompts.for_llm(llm, settings.prompt_variant, settings.prompt_variants_dir)
    except (RecassistError, ImportError) as exc:
        return None, None, f"the {cfg.backend} backend could not be loaded ({exc})"
    cfg.llm = llm  # load the model once per run: the conversations reuse it
    return llm, prompts, None


def guarded_blend(valid_ranks: dict, protocol: str, variant: str, best: float, seed: int) -> float:
    """The validation's best blend only when its gain over retrieval alone is clear (the paired
    bootstrap interval of NDCG@10 on the validation item lies above 0); otherwise 0, retrieval
    alone. A weight picked on noise would make the test figure worse as often as better."""
    if best <= 0:
        return 0.0
    with_llm = metrics.ndcg_at(valid_ranks[(protocol, variant, best)], 10)
    alone = metrics.ndcg_at(valid_ranks[(protocol, variant, 0.0)], 10)
    gain = bootstrap.paired_difference(with_llm, alone, seed=seed)
    return best if gain.low > 0 else 0.0


def run_llm_variants(cfg: EvalConfig, split, stages, rows, keys, negatives, hybrid, names, results, per_user) -> None:
    """Run the LLM variants on the sampled rows; the blend is chosen on the validation item."""
    llm, prompts, why = build_llm(cfg)
    if llm is None:
        log.warning("LLM variants skipped: %s", why)
        results["llm"] = {"skipped": why}
        return
    wanted = [p for p in ("a", "b") if cfg.protocol in (p, "both")]
    runs = {}
    for stage_name in ("valid", "test"):
        stage = stages[stage_name]
        runs[stage_name] = llm_eval.run_llm_stage(
            llm=llm, prompts=prompts, split=split, stage=stage, rows=rows,
            base_scores=hybrid.scores(stage, rows), keys=keys, negatives=negatives,
            variants=names, protocols=wanted, blends=tuning.BLEND_GRID, seed=cfg.seed, progress=cfg.progress,
            cache_file=cfg.work_dir / "llm-cache" / f"{llm.backend}-{_slug(llm.model)}.jsonl",
        )
    chosen: dict[str, float] = {}
    curve: dict[str, list[dict]] = {}
    for protocol in wanted:
        block = f"protocol_{protocol}"
        configs = [(BASE, names[0], 0.0)]
        for variant in names:
            found = tuning.Search(f"{protocol}/{variant}")
            points = []
            for blend in tuning.BLEND_GRID:
                score = float(metrics.ndcg_at(runs["valid"].ranks[(protocol, variant, blend)], 10).mean())
                found.add({"blend": blend}, score)
                points.append({"blend": blend, "NDCG@10": score})
            curve[f"({protocol}) {variant}"] = points
            blend = guarded_blend(runs["valid"].ranks, protocol, variant, found.best["blend"], cfg.seed)
            chosen[f"({protocol}) {variant}"] = blend
            configs.append((variant, variant, blend))
        if "llm" in names:
            configs.append((PURE, "llm", 1.0))
        for name, variant, blend in configs:
            for stage_name, run in runs.items():
                ranking = llm_eval.to_ranking(run, protocol, variant, blend, name)
                ranking.reference = None if name == BASE else BASE
                per_user[(protocol, stage_name, name)] = ranking
                results[block].setdefault(stage_name, {})[name] = summarize(ranking, cfg.seed)
        for name, variant, _ in configs:
            results["variants"][name] = {
                "description": {
                    BASE: "hybrid retrieval on the LLM sample (blend 0), the reference for the LLM rows",
                    PURE: "the LLM's order alone (blend 1), averaged over both orders",
                }.get(name, f"hybrid candidates re-ranked through assistant.ranking.rank() reading "
                            f"{llm_eval.SHUFFLES[variant]} order(s); blend chosen on validation per protocol (see LLM ranking)"),
                "path": f"per user: numpy hybrid top {llm_eval.RANK_DEPTH}, then the LLM ({llm.backend} {llm.model})",
                "path_short": f"LLM sample ({len(rows)} users)",
            }
    outcomes = [o for run in runs.values() for o in run.outcomes if "real_call" not in o]
    calls = [o["real_call"] for run in runs.values() for o in run.outcomes if "real_call" in o]
    rank_ms = np.array([ms for run in runs.values() for ms in run.rank_ms])
    tokens = np.array([t for run in runs.values() for t in run.prompt_tokens], dtype=float)
    mass = [o["label_mass"] for o in outcomes if o.get("label_mass") is not None]
    most = max(llm_eval.SHUFFLES[v] for v in names)
    results["latency_ms"][f"rank: LLM, {most} order(s)"] = latency_summary(rank_ms, f"{llm.backend}, real model calls")
    results["latency_ms"]["rank: one LLM forward pass"] = latency_summary(np.array([c["ms"] for c in calls if "ms" in c]), "per call")
    reused = sum(run.reused for run in runs.values())
    if reused:
        results["latency_ms"][f"rank: LLM, {most} order(s)"]["note"] += f"; {reused} answers replayed from the cache with their recorded time"
    results["llm"] = {
        "backend": llm.backend,
        "model": llm.model,
        "prompt_variant": cfg.prompt_variant,
        "users": len(rows),
        "base": "hybrid",
        "depth": llm_eval.RANK_DEPTH,
        "blend_grid": list(tuning.BLEND_GRID),
        "chosen_blend": chosen,
        "blend_curve": curve,
        "validity": {
            **metrics.validity(outcomes),
            "mean_probability_on_labels": float(np.mean(mass)) if mass else None,
            "fallback_reasons": sorted({o["fallback_reason"] for o in outcomes if o.get("fallback_reason")})[:5],
        },
        "tokens": {
            "prompt_p50": metrics.percentile(tokens, 50),
            "prompt_p95": metrics.percentile(tokens, 95),
            "per_turn_mean": float(tokens.mean() * most) if len(tokens) else None,
        },
    }
