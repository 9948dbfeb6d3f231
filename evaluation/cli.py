"""`recassist eval`: offline evaluation on MovieLens-small or a platform's own catalog and events."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from core.errors import RecassistError
from evaluation.variants import DEFAULT_VARIANTS, parse_variants
from retrieval.ingest import parse_mapping

EXAMPLES = """examples:
  recassist eval --limit-users 100 --variants popularity,sequential,hybrid     # a quick look
  recassist eval --out evaluation/reports/latest                              # the full benchmark
  recassist eval --data custom --catalog items.csv --events events.csv \\
      --map-catalog id=sku title=name text=description --map-events user_id=uid item_id=sku type==view
  recassist eval --dialogs redial --limit-dialogs 20                          # the dialog protocol, quick
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recassist eval",
        description="Offline evaluation: leave-one-out protocols, bootstrap CIs, knobs chosen on validation, "
        "a report folder with metrics.json, report.md and plots.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", choices=("movielens", "custom"), default="movielens",
                      help="movielens: ml-latest-small + TMDB overviews from the shared data folder; custom: your own pair of files")
    data.add_argument("--data-root", type=Path, help="folder holding movielens-small/ and tmdb-5000/ (default: found next to the repo)")
    data.add_argument("--catalog", type=Path, help="catalog file (CSV/TSV/JSONL/Parquet) for --data custom")
    data.add_argument("--events", type=Path, help="behaviour file for --data custom")
    data.add_argument("--map-catalog", nargs="*", default=[], metavar="FIELD=COLUMN",
                      help="our field = your column, e.g. id=sku text=description; FIELD==VALUE sets a constant")
    data.add_argument("--map-events", nargs="*", default=[], metavar="FIELD=COLUMN", help="as --map-catalog, e.g. type==view")
    data.add_argument("--min-count", type=int, default=5,
                      help="keep users and items with at least this many interactions (LlamaRec: 5; 0 = no filtering)")
    run = p.add_argument_group("run")
    run.add_argument("--out", type=Path, help="report folder (default: evaluation/reports/latest; with --dialogs: evaluation/reports/dialogs-SOURCE)")
    run.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "recassist-eval",
                     help="prepared data, cached vectors and evaluation stores; never inside the repository (default: %(default)s)")
    run.add_argument("--protocol", choices=("a", "b", "both"), default="both",
                     help="a: full ranking (LlamaRec); b: 1 + 19 sampled (LLMRank); both (default)")
    run.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                     help="comma-separated, from: " + ", ".join(DEFAULT_VARIANTS) + " (or 'all'; default: all)")
    run.add_argument("--seed", type=int, default=0, help="one seed for samples, negatives, ties and bootstrap (default: 0)")
    run.add_argument("--limit-users", type=int, help="evaluate a seeded sample of N users (quick runs)")
    run.add_argument("--embedding", choices=("minilm", "e5", "hash"), default="minilm",
                     help="content vectors: minilm, e5 (multilingual), hash (fast, for smoke tests)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    llm = p.add_argument_group("LLM stages")
    llm.add_argument("--backend", choices=("llama", "openai", "fake"), default="llama",
                     help="LLM backend for the ranking variants (openai reads RECASSIST_OPENAI_* from the environment)")
    llm.add_argument("--llm-users", type=int, default=200, help="fixed seeded sample of users for LLM stages (default: %(default)s)")
    llm.add_argument("--prompt-variant", default="", help="a saved prompt variant name (default: the shipped prompts)")
    llm.add_argument("--conversations", type=int, default=20,
                     help="scripted multi-turn sessions through the real Agent (0 to skip; default: %(default)s)")
    dialogs = p.add_argument_group("dialog protocol (instead of leave-one-out)")
    dialogs.add_argument("--dialogs", metavar="redial|inspired|FILE",
                         help="human movie dialogs, dedup protocol: redial-dev (report half by dialog-id hash), INSPIRED "
                              "(report on test.tsv), or a ReDial-format .jsonl / INSPIRED-format .tsv (evaluation/README.md, Dialogs)")
    dialogs.add_argument("--dialog-llm", choices=("none", "configured"), default="none",
                         help="none (default): the agent without an LLM; configured: the LLM RECASSIST_* settings configure, as `recassist serve`")
    dialogs.add_argument("--dialog-modes", default="one,replay",
                         help="one (the seeker's words so far as one message), replay (turn by turn in one session), history "
                              "(the dialog so far, both sides, as prior turns of a new session), comma-separated, or none for "
                              "the baselines only (default: %(default)s)")
    dialogs.add_argument("--limit-dialogs", type=int, help="a seeded sample of N report dialogs (quick runs)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point for `recassist eval ARGS`; returns the process exit code."""
    import os

    args = build_parser().parse_args(argv)
    if args.dialogs:
        return _dialogs_main(args, argv)
    args.out = args.out or Path("evaluation/reports/latest")
    try:
        from evaluation.runner import EvalConfig, run

        _check_work_dir(args.work_dir)
        cfg = EvalConfig(
            out=args.out,
            work_dir=args.work_dir,
            data=args.data,
            data_root=args.data_root,
            catalog=args.catalog,
            events=args.events,
            map_catalog=parse_mapping(args.map_catalog, "--map-catalog"),
            map_events=parse_mapping(args.map_events, "--map-events"),
            protocol=args.protocol,
            variants=parse_variants(args.variants),
            llm_users=args.llm_users,
            seed=args.seed,
            prompt_variant=args.prompt_variant,
            backend=args.backend,
            limit_users=args.limit_users,
            min_count=args.min_count,
            embedding=args.embedding,
            conversations=args.conversations,
            progress=not args.quiet,
            command=_command(argv),
            settings_env={k: v for k, v in os.environ.items() if k.startswith("RECASSIST_")},
        )
        results = run(cfg)
    except RecassistError as exc:
        print(f"recassist eval: {exc}", file=sys.stderr)
        return 2
    print(headline(results), file=sys.stdout)
    print(f"report: {args.out / 'report.md'}", file=sys.stdout)
    return 0


def _dialogs_main(args, argv: list[str] | None) -> int:
    """`recassist eval --dialogs ...`: the dialog protocol (evaluation/dialog_eval.py)."""
    import os

    from evaluation.dialog_eval import MODES, DialogConfig, run_dialogs

    modes = tuple(m for m in args.dialog_modes.split(",") if m and m != "none")
    out = args.out or Path(f"evaluation/reports/dialogs-{Path(args.dialogs).stem}")
    try:
        if set(modes) - set(MODES):
            raise RecassistError(f"--dialog-modes {args.dialog_modes}: use a comma-separated list of {', '.join(MODES)}, or none")
        _check_work_dir(args.work_dir)
        results = run_dialogs(DialogConfig(
            source=args.dialogs, out=out, work_dir=args.work_dir, data_root=args.data_root, embedding=args.embedding,
            llm=args.dialog_llm, modes=modes, limit_dialogs=args.limit_dialogs, seed=args.seed, progress=not args.quiet,
            command=_command(argv),
            settings_env={k: v for k, v in os.environ.items() if k.startswith("RECASSIST_")},
        ))
    except RecassistError as exc:
        print(f"recassist eval: {exc}", file=sys.stderr)
        return 2
    for name, summary in results["metrics"].items():
        print(f"{name:<22} " + "  ".join(f"{m} {summary[m]['mean']:.3f}" for m in ("Recall@1", "Recall@10", "Recall@20", "Recall@50")))
    print(f"report: {out / 'report.md'}", file=sys.stdout)
    return 0


def _check_work_dir(work_dir: Path) -> None:
    if work_dir.resolve().is_relative_to(Path(__file__).resolve().parents[1]):
        raise RecassistError(f"--work-dir {work_dir} is inside the repository; the prepared data must stay outside it")


def _command(argv: list[str] | None) -> str:
    """The command line to repeat the run, for the report."""
    return "recassist eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))


def headline(results: dict) -> str:
    """The protocol (a) test table in plain text, for the terminal."""
    lines = []
    for protocol, names in (("protocol_a", ("Recall@10", "NDCG@10")), ("protocol_b", ("NDCG@1", "NDCG@10"))):
        block = results.get(protocol, {}).get("test", {})
        if not block:
            continue
        lines.append(f"{protocol} (test, mean [95% CI])")
        for variant, summary in block.items():
            cells = "  ".join(f"{m} {summary[m]['mean']:.4f} [{summary[m]['low']:.4f}, {summary[m]['high']:.4f}]" for m in names if m in summary)
            lines.append(f"  {variant:<22} {cells}  (n={summary.get('users')})")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m evaluation.cli
    raise SystemExit(main())
