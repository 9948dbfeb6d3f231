"""`recassist eval`: offline evaluation on MovieLens-small or a platform's own catalog and events."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from assistant.errors import RecassistError
from evaluation.variants import DEFAULT_VARIANTS, parse_variants
from retrieval.ingest import parse_mapping

EXAMPLES = """examples:
  recassist eval --limit-users 100 --variants popularity,sequential,hybrid     # a quick look
  recassist eval --out evaluation/reports/latest                              # the full benchmark
  recassist eval --data custom --catalog items.csv --events events.csv \\
      --map-catalog id=sku title=name text=description --map-events user_id=uid item_id=sku type==view
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
    run.add_argument("--out", type=Path, default=Path("evaluation/reports/latest"), help="report folder (default: %(default)s)")
    run.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "recassist-eval",
                     help="prepared data, cached vectors and evaluation stores; never inside the repository (default: %(default)s)")
    run.add_argument("--protocol", choices=("a", "b", "both"), default="both",
                     help="a: full ranking (LlamaRec); b: 1 + 19 sampled (LLMRank); both (default)")
    run.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                     help="comma-separated, from: " + ", ".join(DEFAULT_VARIANTS) + " (or 'all'; default: all)")
    run.add_argument("--seed", type=int, default=0, help="one seed for samples, negatives, ties and bootstrap (default: 0)")
    run.add_argument("--limit-users", type=int, help="evaluate a seeded sample of N users (quick runs)")
    run.add_argument("--embedding", choices=("minilm", "hash"), default="minilm", help="content vectors (hash: fast, for smoke tests)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    llm = p.add_argument_group("LLM stages")
    llm.add_argument("--backend", choices=("llama", "openai", "fake"), default="llama",
                     help="LLM backend for the ranking variants (openai reads RECASSIST_OPENAI_* from the environment)")
    llm.add_argument("--llm-users", type=int, default=200, help="fixed seeded sample of users for LLM stages (default: %(default)s)")
    llm.add_argument("--prompt-variant", default="", help="a saved prompt variant name (default: the shipped prompts)")
    llm.add_argument("--conversations", type=int, default=20,
                     help="scripted multi-turn sessions through the real Agent (0 to skip; default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point for `recassist eval ARGS`; returns the process exit code."""
    import os

    args = build_parser().parse_args(argv)
    try:
        from evaluation.runner import EvalConfig, run

        if args.work_dir.resolve().is_relative_to(Path(__file__).resolve().parents[1]):
            raise RecassistError(f"--work-dir {args.work_dir} is inside the repository; the prepared data must stay outside it")
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
            command="recassist eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
            settings_env={k: v for k, v in os.environ.items() if k.startswith("RECASSIST_")},
        )
        results = run(cfg)
    except RecassistError as exc:
        print(f"recassist eval: {exc}", file=sys.stderr)
        return 2
    print(headline(results), file=sys.stdout)
    print(f"report: {args.out / 'report.md'}", file=sys.stdout)
    return 0


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
