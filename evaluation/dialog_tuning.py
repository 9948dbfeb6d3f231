"""Choosing the retriever's conversation weights on the ReDial tuning dialogs only.

The tuning half of `recassist eval --dialogs redial` is split again by dialog id into two folds:
one fold's mentions (with MovieLens ratings) are the event log, the other fold's cases are asked,
through the real agent ("one message" mode unless --mode says otherwise). The report half is never read here.

    python -m evaluation.dialog_tuning --fold 0                      # the shipped weights
    python -m evaluation.dialog_tuning --fold 0 --set query=0.1      # a weight (DEFAULT_WEIGHTS key)
    python -m evaluation.dialog_tuning --fold 1 --set QUERY_SHRINK=0 # a constant of retrieval.fusion
    python -m evaluation.dialog_tuning --fold 0 --mode history       # the dialog so far as prior turns
    python -m evaluation.dialog_tuning --fold 0 --llm --env RECASSIST_LLM_PROPOSALS=true --limit-cases 150
                                   # the configured model in the loop (the embedded one by default)
    python -m evaluation.dialog_tuning --source inspired --fold 0   # INSPIRED's tuning half (dev.tsv)
    python -m evaluation.dialog_tuning --fold 0 --dump cases.json   # each case: target, rank, words, top ten

Prints one JSON line: the fold, the settings, the number of cases, Recall@1/10/20/50, and the same for
popularity (the movies most mentioned in the log fold's dialogs, as the report's baseline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np


def _hashed(salt: str, dialog_id: str) -> int:
    """The first 32 bits of sha1(salt + id): stable across runs, machines and file order."""
    return int(hashlib.sha1((salt + dialog_id).encode("utf-8")).hexdigest()[:8], 16)


def fold_of(dialog_id: str) -> int:
    return _hashed("fold", dialog_id) % 2


def apply(settings: list[str]) -> None:
    """NAME=VALUE: a DEFAULT_WEIGHTS entry or an upper-case constant of retrieval.fusion, retrieval.candidates
    or assistant.planning."""
    import assistant.planning as planning
    import retrieval.candidates as candidates
    import retrieval.fusion as fusion

    for pair in settings:
        name, _, value = pair.partition("=")
        home = next((m for m in (fusion, candidates, planning) if name.isupper() and hasattr(m, name)), None)
        if name in fusion.DEFAULT_WEIGHTS:
            fusion.DEFAULT_WEIGHTS[name] = float(value)
        elif home is not None:
            setattr(home, name, type(getattr(home, name))(float(value)))
        else:
            raise SystemExit(f"--set {pair}: use a weight ({', '.join(fusion.DEFAULT_WEIGHTS)}) or a constant of "
                             "retrieval.fusion, retrieval.candidates or assistant.planning")


def main(argv: list[str] | None = None) -> int:
    from evaluation.dialog_data import prepare
    from evaluation.dialog_eval import DialogConfig, list_rank, load_source, mention_counts
    from evaluation.dialog_play import MODES, PLAYS, build_engine, proposal_counts
    from evaluation.dialogs import dialog_cases
    from evaluation.itemvectors import content_vectors
    from evaluation.movielens import find_data_root
    from retrieval.embeddings import create_embedder
    from retrieval.ingest import read_catalog

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, choices=(0, 1), default=0, help="whose mentions are the event log")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "recassist-eval" / "tuning")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--llm", action="store_true", help="the configured model in the loop (default: none)")
    parser.add_argument("--env", action="append", default=[], metavar="RECASSIST_X=VALUE", help="settings for the --llm engine")
    parser.add_argument("--mode", choices=MODES, default="one", help="how the dialog is put to the agent (default: one)")
    parser.add_argument("--limit-cases", type=int, default=None, help="the first N cases (a model in the loop is slow)")
    parser.add_argument("--source", choices=("redial", "inspired"), default="redial",
                        help="whose tuning half is split into folds (default: redial)")
    parser.add_argument("--log-share", type=float, default=1.0,
                        help="keep this share of the log fold's dialogs (by id hash): how a signal grows with the log")
    parser.add_argument("--dump", type=Path, default=None, help="write each case (target, rank, seeker words, top ten) as JSON here")
    args = parser.parse_args(argv)
    apply(args.set)
    root = args.data_root or find_data_root()
    if root is None:
        raise SystemExit("the dialog data was not found: pass --data-root (the folder holding redial-dev/)")
    env = dict(pair.split("=", 1) for pair in args.env)
    work = args.work_dir if args.source == "redial" else args.work_dir / args.source
    cfg = DialogConfig(source=args.source, out=work / "out", work_dir=work / f"fold{args.fold}",
                       modes=(args.mode,), progress=False, llm="configured" if args.llm else "none",
                       settings_env={"RECASSIST_LLM_REASONS": "false", **env})
    source = load_source(cfg, root)
    events_half = [d for d in source.tune if fold_of(d.id) == args.fold and _hashed("share", d.id) / 2**32 < args.log_share]
    asked_half = [d for d in source.tune if fold_of(d.id) != args.fold]
    log_name = f"tune{args.fold}" if args.source == "redial" else f"{args.source}-tune{args.fold}"
    if args.source == "redial" and args.log_share < 1:
        log_name += f"-share{args.log_share:g}"
    prepared = prepare(root, args.work_dir / "dialogs", source.names, events_half, log_name)
    items = read_catalog(prepared.catalog, prepared.catalog_mapping).records
    index = {item.id: j for j, item in enumerate(items)}
    embedder = create_embedder("minilm")
    vectors = content_vectors(items, embedder, args.work_dir / "vectors", progress=False)
    engine = build_engine(cfg, prepared, items, vectors, embedder)
    try:
        cases = [case for dialog in asked_half for case in dialog_cases(dialog, index.__contains__)[0]][: args.limit_cases]
        began = time.perf_counter()
        answers, turns = PLAYS[args.mode](engine, cases, asked_half, cfg)
    finally:
        engine.close()
    ranks = np.array([list_rank(a.ids, c, 50) for a, c in zip(answers, cases)])
    popular = mention_counts(events_half, index)
    order = [items[j].id for j in np.argsort(-popular, kind="stable") if popular[j] > 0]
    popular_ranks = np.array([list_rank(order, c, 50) for c in cases])
    if args.dump:
        title = {item.id: f"{item.title} ({item.year})" if item.year else item.title for item in items}
        args.dump.write_text(json.dumps([
            {"dialog": c.dialog_id, "target": title.get(c.target, c.target), "rank": None if np.isinf(r) else int(r),
             "popularity_rank": None if np.isinf(p) else int(p), "said": list(c.seeker_turns),
             "mentioned": [title.get(m, m) for m in c.mentioned],
             "top": [title.get(i, i) for i in [i for i in dict.fromkeys(a.ids) if i not in c.mentioned][:10]]}
            for a, c, r, p in zip(answers, cases, ranks, popular_ranks)], ensure_ascii=False, indent=1), encoding="utf-8")
    recall = {f"R@{k}": round(float(np.mean(ranks <= k)), 4) for k in (1, 10, 20, 50)}
    baseline = {f"R@{k}": round(float(np.mean(popular_ranks <= k)), 4) for k in (1, 10, 20, 50)}
    print(json.dumps({"source": args.source, "fold": args.fold, "mode": args.mode, "set": args.set, "env": env, "llm": args.llm, "cases": len(cases), **recall, "popularity": baseline,
                      "proposals": proposal_counts(turns), "seconds": round(time.perf_counter() - began)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
