"""`recassist eval --dialogs`: the real agent on human movie dialogs, against popularity and content baselines.

The catalog and events go through the public ingest (as `recassist ingest-catalog` / `ingest-events`),
and the agent answers through `Agent.respond`, the call behind POST /v1/chat, in the modes of
`evaluation.dialog_play` (one message, replay, the dialog as prior turns). Scores are per case;
confidence intervals resample dialogs.
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import ConfigError
from evaluation import bootstrap, metrics
from evaluation.dialog_play import MODE_DESCRIPTIONS, MODE_NAMES, MODES, PLAYS, build_engine, proposal_counts
from evaluation.dialog_report import METRICS, write
from evaluation.dialogs import Case, Dialog, dialog_cases, read_inspired, read_redial, split_by_hash
from retrieval.embeddings import embed_queries

KS = (1, 10, 20, 50)


@dataclass
class DialogConfig:
    """One dialog-protocol run; the CLI fills it from flags."""

    source: str  # "redial", "inspired", or a ReDial-format .jsonl / INSPIRED-format .tsv
    out: Path
    work_dir: Path
    data_root: Path | None = None
    embedding: Literal["minilm", "hash"] = "minilm"
    llm: Literal["none", "configured"] = "none"
    modes: tuple[str, ...] = MODES
    depth: int = 50  # candidates the agent retrieves (and ranks, with an LLM); the protocol reads them all
    limit_dialogs: int | None = None
    seed: int = 0
    progress: bool = True
    command: str = ""
    settings_env: dict[str, str] = field(default_factory=dict)  # RECASSIST_* for --dialog-llm configured
    embedder: object | None = None  # an embedder to use instead of building one (tests)
    llm_instance: object | None = None  # an LLM to use instead of the configured one (tests)


@dataclass
class Source:
    """The dialogs of one run, split into the half that feeds events and popularity and the half reported."""

    name: str
    names: dict[str, str]  # catalog: ReDial movie id -> "Title (Year)"
    tune: list[Dialog]
    report: list[Dialog]
    split: str
    notes: dict = field(default_factory=dict)


def load_source(cfg: DialogConfig, root: Path) -> Source:
    """Read the dialogs and the ReDial movie list; split tune / report."""
    from evaluation.dialog_data import TitleLinker, read_movie_names

    names = read_movie_names(root / "redial-dev")
    hashed = "by dialog id: report when the first 32 bits of sha1(id) are odd, tune otherwise"
    if cfg.source == "redial":
        tune, report = split_by_hash(read_redial(root / "redial-dev" / "dialogs.jsonl", names))
        return Source("redial", names, tune, report, f"ReDial redial-dev/dialogs.jsonl, {hashed}")
    if cfg.source == "inspired":
        link = TitleLinker(names)
        tune, tune_links = read_inspired(root / "inspired" / "dev.tsv", link)
        report, report_links = read_inspired(root / "inspired" / "test.tsv", link)
        return Source("inspired", names, tune, report, "INSPIRED's own split: tune = dev.tsv, report = test.tsv",
                      {"titles linked (dev)": dict(tune_links), "titles linked (test)": dict(report_links)})
    path = Path(cfg.source)
    if path.suffix == ".jsonl":
        dialogs, notes = read_redial(path, names), {}
    elif path.suffix == ".tsv":
        dialogs, links = read_inspired(path, TitleLinker(names))
        notes = {"titles linked": dict(links)}
    else:
        raise ConfigError(f"--dialogs {cfg.source}: use redial, inspired, a ReDial-format .jsonl or an INSPIRED-format .tsv")
    tune, report = split_by_hash(dialogs)
    return Source(path.stem, names, tune, report, f"{path}, {hashed}", notes)


def run_dialogs(cfg: DialogConfig) -> dict:
    """Run the protocol and write metrics.json and report.md into cfg.out; returns the results."""
    from evaluation.dialog_data import prepare
    from evaluation.itemvectors import content_vectors
    from evaluation.movielens import find_data_root
    from retrieval.ingest import read_catalog

    started, started_at = time.perf_counter(), datetime.now(timezone.utc)
    root = Path(cfg.data_root) if cfg.data_root else find_data_root()
    if root is None or not (root / "redial-dev").is_dir():
        raise ConfigError("the dialog data was not found in ../shared/data or /work/shared/data; pass --data-root DIR "
                          "(the folder holding redial-dev/, inspired/, movielens-small/ and tmdb-5000/)")
    source = load_source(cfg, root)
    report_dialogs = _sample(source.report, cfg.limit_dialogs, cfg.seed)
    work = Path(cfg.work_dir) / "dialogs"
    prepared = prepare(root, work, source.names, source.tune, source.name)
    items = read_catalog(prepared.catalog, prepared.catalog_mapping).records
    index = {item.id: j for j, item in enumerate(items)}

    cases: list[Case] = []
    skipped: Counter = Counter()
    for dialog in report_dialogs:
        found, why = dialog_cases(dialog, index.__contains__)
        cases += found
        skipped.update(why)
    if not cases:
        raise ConfigError(f"no cases in the {len(report_dialogs)} report dialogs of {source.split}")

    embedder = cfg.embedder
    if embedder is None:
        from retrieval.embeddings import create_embedder

        embedder = create_embedder(cfg.embedding)
    vectors = content_vectors(items, embedder, Path(cfg.work_dir) / "vectors", progress=cfg.progress)
    groups = np.array([c.dialog_id for c in cases])
    ranks, variants, latency = run_baselines(cases, source.tune, index, vectors, embedder, cfg)
    agent_notes: dict[str, dict] = {}
    llm_text = "not run"
    if cfg.modes:
        llm_text = run_agent(cfg, prepared, items, vectors, embedder, cases, report_dialogs, (ranks, variants, latency, agent_notes))

    results = {
        "meta": {
            "command": cfg.command,
            "started": started_at.strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(time.perf_counter() - started, 1),
            "machine": f"{platform.machine()}, {_cores()} cores",
            "seed": cfg.seed,
            "protocol": "dedup: each recommender message naming a movie nobody mentioned before; mentioned movies excluded",
            "split": source.split,
            "reported_on": f"the report split: {len(report_dialogs)} dialogs" + (f" (a seeded sample of {len(source.report)})" if len(report_dialogs) < len(source.report) else ""),
            "tuned_on": (f"the tune split: {len(source.tune)} dialogs (the mention events and the popularity baseline; the "
                         "retriever's conversation weights were chosen on two folds of ReDial's tune split: "
                         "python -m evaluation.dialog_tuning, evaluation/reports/dialogs-tuning.md)"),
            "data": f"{root}: ReDial movies + TMDB 5000 + MovieLens-small; {prepared.stats}",
            "source_notes": source.notes,
            "embedding": getattr(embedder, "name", cfg.embedding),
            "llm": llm_text,
            "depth": cfg.depth,
            "bootstrap": f"{bootstrap.DEFAULT_RESAMPLES} resamples of whole dialogs, 95% percentile interval",
        },
        "cases": {"cases": len(cases), "dialogs_with_cases": len(set(groups.tolist())), "skipped": dict(skipped)},
        "variants": variants,
        "metrics": {name: summarize(r, groups, cfg.seed) for name, r in ranks.items()},
        "paired": paired(ranks, groups, cfg.seed),
        "latency_ms": latency,
        "agent": agent_notes,
        "per_case_columns": ["dialog", "message", "target", *(f"rank: {n}" for n in ranks)],  # rank null: not in the top depth
        "per_case": [[c.dialog_id, c.message, c.target, *(int(r[i]) if np.isfinite(r[i]) else None for r in ranks.values())]
                     for i, c in enumerate(cases)],
    }
    write(cfg.out, results)
    return results


def run_baselines(cases: list[Case], tune: list[Dialog], index: dict[str, int], vectors: np.ndarray, embedder, cfg: DialogConfig):
    """Popularity (tuning mentions) and content (seeker's words vs item text): ranks, descriptions, latency."""
    counts = mention_counts(tune, index)

    def content_scores(rows: list[Case]) -> np.ndarray:
        queries = np.asarray(embed_queries(embedder, [c.one_message() for c in rows]), dtype=np.float32)
        queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        return queries @ vectors.T

    ranks, variants, latency = {}, {}, {}
    ranks["popularity"], ms = baseline_ranks(lambda rows: np.tile(counts, (len(rows), 1)), cases, index, cfg)
    variants["popularity"] = {"description": f"movies most mentioned in the {len(tune)} tuning dialogs (once per dialog)"}
    latency["popularity"] = _latency(ms, "per case, amortised over a batch")
    ranks["content"], ms = baseline_ranks(content_scores, cases, index, cfg)
    variants["content"] = {"description": f"cosine between the seeker's words so far and each item's text ({getattr(embedder, 'name', cfg.embedding)})"}
    latency["content"] = _latency(ms, "per case, amortised over a batch (embedding + scoring)")
    return ranks, variants, latency


# The agent ---------------------------------------------------------------------------------------


def run_agent(cfg: DialogConfig, prepared, items, vectors, embedder, cases: list[Case], dialogs: list[Dialog], into) -> str:
    """Each configured mode on one fresh engine; adds to (ranks, variants, latency, notes) and returns the LLM used."""
    ranks, variants, latency, notes = into
    engine = build_engine(cfg, prepared, items, vectors, embedder)
    llm = engine.llm
    try:
        for mode in cfg.modes:
            answers, turns = PLAYS[mode](engine, cases, dialogs, cfg)
            name = MODE_NAMES[mode]
            ranks[name] = np.array([list_rank(answers[i].ids, c, cfg.depth) for i, c in enumerate(cases)])
            variants[name] = {"description": MODE_DESCRIPTIONS[mode]}
            latency[name] = _latency(np.array([t.ms for t in turns]), f"per agent turn ({len(turns)} turns), wall clock of Agent.respond")
            latency[name]["stages_p50"] = {s: metrics.percentile([t.timings[s] for t in turns if s in t.timings], 50)
                                           for s in sorted({s for t in turns for s in t.timings})}
            notes[name] = {"turns": len(turns), "cases without a list": sum(not a.ids for a in answers),
                           "intents": dict(Counter(t.intent for t in turns))}
            proposed = proposal_counts(turns)
            if proposed:
                notes[name]["title proposals"] = proposed
    finally:
        engine.close()
    return f"{llm.backend} {llm.model}" if llm is not None else "none (retrieval order, evidence reasons)"


def list_rank(ids: list[str], case: Case, depth: int) -> float:
    """1-based rank of the target in a list with the mentioned movies removed (inf: not in the top `depth`)."""
    kept = [i for i in dict.fromkeys(ids) if i not in case.mentioned][:depth]
    return float(kept.index(case.target) + 1) if case.target in kept else metrics.MISSING


# Baselines and metrics ---------------------------------------------------------------------------


def mention_counts(dialogs: list[Dialog], index: dict[str, int]) -> np.ndarray:
    """How many dialogs mentioned each catalog item."""
    counts = np.zeros(len(index), dtype=np.float64)
    for dialog in dialogs:
        for movie in dialog.mentioned():
            if movie in index:
                counts[index[movie]] += 1
    return counts


def baseline_ranks(score, cases: list[Case], index: dict[str, int], cfg: DialogConfig, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Ranks (inf beyond cfg.depth) of each case's target under score(cases) -> (cases, items), and ms per case."""
    from evaluation.protocols import tie_key

    keys = tie_key(len(index), cfg.seed)
    ranks, ms = np.empty(len(cases)), np.empty(len(cases))
    for start in range(0, len(cases), batch):
        block = cases[start : start + batch]
        began = time.perf_counter()
        targets = np.array([index[c.target] for c in block])
        excluded = [np.array([index[m] for m in c.mentioned if m in index], dtype=np.int64) for c in block]
        ranks[start : start + len(block)] = metrics.target_ranks(score(block), targets, excluded, keys)
        ms[start : start + len(block)] = (time.perf_counter() - began) * 1000 / len(block)
    ranks[ranks > cfg.depth] = metrics.MISSING  # as the agent's list: nothing below rank `depth` counts
    return ranks, ms


def summarize(ranks: np.ndarray, groups: np.ndarray, seed: int) -> dict:
    """Each metric's mean over cases with a bootstrap interval over dialogs."""
    values = metrics.accuracy(ranks, KS, mrr=True)
    out: dict = {"cases": len(ranks), "dialogs": len(set(groups.tolist()))}
    for name in METRICS:
        out[name] = bootstrap.grouped_interval(values[name], groups, seed=seed).to_dict()
    return out


def paired(ranks: dict[str, np.ndarray], groups: np.ndarray, seed: int) -> dict:
    """Each agent mode minus each baseline on the same cases (dialogs resampled jointly)."""
    out: dict = {}
    for name in [n for n in ranks if n.startswith("agent")]:
        mine = metrics.accuracy(ranks[name], KS)
        for baseline in ("popularity", "content"):
            theirs = metrics.accuracy(ranks[baseline], KS)
            out[f"{name} - {baseline}"] = {m: bootstrap.grouped_interval(mine[m] - theirs[m], groups, seed=seed).to_dict()
                                           for m in ("Recall@10", "Recall@20")}
    return out


def _latency(ms: np.ndarray, note: str) -> dict:
    return {"p50": metrics.percentile(ms, 50), "p95": metrics.percentile(ms, 95), "note": note}


def _sample(dialogs: list[Dialog], n: int | None, seed: int) -> list[Dialog]:
    """A seeded sample of n dialogs, in file order (all of them without n)."""
    if n is None or n >= len(dialogs):
        return dialogs
    keep = set(np.random.default_rng([seed, 11]).permutation(len(dialogs))[:n].tolist())
    return [d for i, d in enumerate(dialogs) if i in keep]


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
