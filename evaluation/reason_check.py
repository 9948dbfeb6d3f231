"""How well the reason check (assistant.grounding.reason_problems) judges reasons, and how often
a model's reasons pass it.

    python -m evaluation.reason_check score              # the labelled table in tests/
    python -m evaluation.reason_check collect out.json   # the embedded model on the demo users
    python -m evaluation.reason_check collect out.json --data movielens   # ... on MovieLens users
    python -m evaluation.reason_check collect out.json --data demo-zh      # the Chinese demo, in Chinese
    python -m evaluation.reason_check passes out.json    # how many of those pass the check
    python -m evaluation.reason_check items              # "tell me about X" answers for demo books

`score` prints false rejects and false accepts per group of tests/reasons_labelled.json for a
few thresholds (claims.MAX_UNSUPPORTED). `collect` runs the embedded Gemma 3 270M through
llm_reasons (temperature 0) for the demo users' candidates (or, with --data movielens, for a
seeded sample of MovieLens users with their whole history, through the evaluation's prepared
store) and keeps each raw reason. `--prompt-variant NAME` collects with a saved variant.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from importlib.resources import files
from pathlib import Path

from assistant import claims
from assistant.turn import liked_titles
from assistant.explain import judge_reason, llm_reasons, nothing_to_sum_up
from assistant.grounding import reason_problems
from retrieval.records import Candidate, Evidence, Item

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "reasons_labelled.json"
MOVIE_REQUESTS = ["", "a funny film for tonight", "a space adventure", "something dark and tense", "a love story"]
REQUESTS = {
    "ana": ["", "a witty love story"], "ben": ["", "a sea adventure"], "chen": ["", "a dystopia"],
    "dara": ["", "a clever murder mystery"], "eli": ["", "something scary with ghosts"], "fay": ["", "calm essays about nature"],
}
REQUESTS_ZH = {  # the Chinese demo's readers (`--data demo-zh`), answered in Chinese
    "lin": ["", "婉约一点的词"], "zhou": ["", "写小城的小说"], "sima": ["", "人物传记"],
    "pu": ["", "狐鬼故事"], "xu": ["", "短小抒情的散文"],
}


def demo_books() -> dict[str, dict]:
    lines = (files("assistant.demo_data") / "books.jsonl").read_text("utf-8").splitlines()
    return {b["id"]: b for b in map(json.loads, lines)}


def candidate(item: dict, evidence: dict) -> Candidate:
    near = [(n["item_id"], n["title"], n["similarity"]) for n in evidence["near_history"]]
    ev = Evidence(near, evidence["matched_words"], evidence["shared_categories"], evidence["shared_creators"], evidence["signals"])
    return Candidate(Item(**item), 1.0, ev)


def score(threshold: int) -> None:
    books = demo_books()
    titles = {b["title"] for b in books.values()}
    claims.MAX_UNSUPPORTED = threshold
    counts: Counter = Counter()
    for row in json.loads(LABELLED.read_text("utf-8"))["rows"]:
        c = candidate(books[row["item_id"]], row["evidence"])
        ok = not reason_problems(row["reason"], c, titles, row["request"], row["others"], (), row["language"])
        for group in (f"{row['source']} {row['language']}", "all"):
            counts[group, "n"] += 1
            counts[group, "good"] += row["ok"]
            counts[group, "false reject"] += row["ok"] and not ok
            counts[group, "false accept"] += ok and not row["ok"]
    print(f"\nMAX_UNSUPPORTED={threshold}\n| rows | n | good | false rejects | false accepts |\n|---|---|---|---|---|")
    for group in sorted({g for g, _ in counts}, key=lambda g: (g == "all", g)):
        print(f"| {group} | {counts[group, 'n']} | {counts[group, 'good']} | {counts[group, 'false reject']} | {counts[group, 'false accept']} |")


def _reasons_for(llm, prompts, cands, request, language, titles, liked=()) -> list[dict]:
    raw: dict[str, str] = {}
    for chunk in llm_reasons(llm, prompts, cands, request, language, titles, liked):
        if chunk.delta:
            raw[chunk.item_id] = raw.get(chunk.item_id, "") + chunk.delta
        elif chunk.raw is not None:
            raw[chunk.item_id] = chunk.raw  # as judged: with the mark of a hook cut at max_tokens
    others = sorted({cat for c in cands for cat in c.item.categories})
    return [
        {"request": request, "language": language, "item": c.item.to_dict(), "evidence": c.evidence.to_dict(),
         "others": others, "liked": sorted(liked), "raw": raw.get(c.item.id, "")}
        for c in cands
    ]


def collect_movies(out: Path, k: int, language: str, threads: int, users: int, variant: str) -> None:
    """Reasons for a seeded sample of MovieLens users, each asked every MOVIE_REQUESTS in turn."""
    import numpy as np

    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model
    from assistant.settings import Settings
    from evaluation.itemvectors import content_vectors
    from evaluation.product import CachedEmbedder, stage_engine
    from evaluation.runner import EvalConfig, load_data
    from evaluation.splits import leave_one_out
    from prompts import Prompts
    from retrieval.request import Request
    from retrieval.embeddings import create_embedder

    cfg = EvalConfig(out=out.parent, work_dir=Path.home() / ".cache" / "recassist-eval")
    items, events, _ = load_data(cfg)
    split = leave_one_out(items, events, min_count=cfg.min_count)
    embedder = create_embedder(cfg.embedding)
    vectors = content_vectors(split.items, embedder, cfg.work_dir / "vectors", progress=False)
    engine = stage_engine(cfg, split, "test", CachedEmbedder(embedder, [it.document() for it in split.items], vectors))
    titles = sorted({it.title for it in split.items})
    settings = Settings.load()
    llm = LlamaCppLLM(ensure_embedded_model(settings.models_dir), n_ctx=2048, n_threads=threads)
    variants_dir = settings.prompt_variants_dir
    prompts = Prompts.for_llm(llm, variant or None, variants_dir)
    rng = np.random.default_rng([0, 7])
    sample = sorted(str(u) for u in rng.choice([u.user_id for u in split.users], size=users, replace=False))
    title_of = {it.id: it.title for it in split.items}
    rows = []
    for n, user in enumerate(sample):
        history = engine.store.events_for_user(user)
        liked = liked_titles(history, title_of)  # what the agent lets a reason say was liked
        request = MOVIE_REQUESTS[n % len(MOVIE_REQUESTS)]
        cands = engine.retriever.candidates(user, Request(query=request), k=k, history=history)
        rows += [{"user": user, **row} for row in _reasons_for(llm, prompts, cands, request, language, titles, liked)]
        print(f"{user}: {len(cands)} reasons", flush=True)
    engine.close()
    _write(out, titles, rows, prompts, variant, variants_dir)


def _write(out: Path, titles, rows: list[dict], prompts, variant: str, variants_dir: Path) -> None:
    """The collected rows, with what `passes` needs to judge them as they were made."""
    form = prompts.get("reason").output.form
    meta = {"titles": titles, "form": form, "variant": variant, "variants_dir": str(variants_dir) if variant else None}
    out.write_text(json.dumps({**meta, "rows": rows}, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{len(rows)} reasons ({form} form) written to {out}")


def collect(out: Path, k: int, language: str, threads: int, variant: str = "", demo: str = "en") -> None:
    """Reasons for the demo users' candidates: the English demo (`language` as asked), or the
    Chinese one (`demo="zh"`: its readers and Chinese requests, answered in Chinese)."""
    from assistant.engine import Engine
    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model
    from assistant.settings import Settings
    from prompts import Prompts
    from retrieval.request import Request

    tmp = Path(tempfile.mkdtemp())
    engine = Engine(Settings.load(env={}, data_dir=tmp / "data", llm_backend="none", embedding_backend="hash"),
                    demo=None if demo == "en" else demo)
    engine.load_demo(progress=False)
    asks, language = (REQUESTS, language) if demo == "en" else (REQUESTS_ZH, "zh")
    titles = sorted({it.title for it in engine.store.iter_items()})
    llm = LlamaCppLLM(ensure_embedded_model(tmp / "models"), n_ctx=2048, n_threads=threads)
    variants_dir = Settings.load().prompt_variants_dir
    prompts = Prompts.for_llm(llm, variant or None, variants_dir)
    rows = []
    for user, requests in asks.items():
        for request in requests:
            cands = engine.retriever.candidates(user, Request(query=request), k=k)
            rows += [{"user": user, **row} for row in _reasons_for(llm, prompts, cands, request, language, titles)]
    engine.close()
    _write(out, titles, rows, prompts, variant, variants_dir)


def passes(path: Path) -> None:
    """Judge each collected raw output as llm_reasons does, with the template it was collected with."""
    from prompts import Prompts

    data = json.loads(path.read_text("utf-8"))
    template = Prompts("completion", data.get("variant", ""), data.get("variants_dir")).get("reason")
    n = passed = 0
    for row in data["rows"]:
        c = candidate(row["item"], row["evidence"])
        if template.output.form == "hook" and nothing_to_sum_up(c.item):
            continue  # not asked, as llm_reasons does not ask
        reason, problems = judge_reason(row["raw"], c, template, data["titles"], row["request"], row["others"], row.get("liked", ()), row["language"])
        n, passed = n + 1, passed + (not problems)
        print(f"{'PASS' if not problems else 'fail'}  {row['item']['title']}: {reason or row['raw']!r}  {'; '.join(problems)}")
    skipped = len(data["rows"]) - n
    asked = (f" ({skipped} of the {len(data['rows'])} items have no description beyond their line, and were not asked)"
             if skipped else "")
    print(f"\n{passed}/{n} reasons pass the check{asked}")


def item_summaries(step: int, threads: int) -> None:
    """The embedded model's answers to "tell me about X" for every `step`-th demo book: kept or not."""
    from assistant.engine import Engine
    from assistant.explain import summarize_item
    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model
    from assistant.settings import Settings
    from prompts import Prompts

    engine = Engine(Settings.load(env={}, data_dir=Path(tempfile.mkdtemp()) / "data", llm_backend="none", embedding_backend="hash"))
    engine.load_demo(progress=False)
    books = list(engine.store.iter_items())
    titles = {b.title for b in books}
    llm = LlamaCppLLM(ensure_embedded_model(Settings.load().models_dir), n_ctx=2048, n_threads=threads)
    prompts = Prompts.for_llm(llm)
    sample = books[::step]
    kept = 0
    for book in sample:
        text = summarize_item(llm, prompts, book, "en", titles)
        own = text != summarize_item(None, prompts, book, "en")  # not the description fallback
        kept += own
        print(f"{'LLM ' if own else 'desc'}  {book.title}: {text}")
    engine.close()
    print(f"\n{kept}/{len(sample)} item summaries written by the model passed the check; the rest are the item's own description")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("score")
    p = sub.add_parser("collect")
    p.add_argument("out", type=Path)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--language", default="en")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", choices=("demo", "demo-zh", "movielens"), default="demo",
                   help="demo books (default), the Chinese demo's works (in Chinese), or MovieLens users")
    p.add_argument("--users", type=int, default=15, help="MovieLens users to sample (default: %(default)s)")
    p.add_argument("--prompt-variant", default="", help="a saved prompt variant (default: the shipped prompts)")
    p = sub.add_parser("passes")
    p.add_argument("path", type=Path)
    p = sub.add_parser("items", help='the model\'s answers to "tell me about X" for demo books')
    p.add_argument("--step", type=int, default=15, help="every N-th demo book (default: %(default)s, 21 books)")
    p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "score":
        for threshold in (0, 1, 2):
            score(threshold)
    elif args.command == "collect" and args.data == "movielens":
        collect_movies(args.out, args.k, args.language, args.threads, args.users, args.prompt_variant)
    elif args.command == "collect":
        collect(args.out, args.k, args.language, args.threads, args.prompt_variant, "zh" if args.data == "demo-zh" else "en")
    elif args.command == "items":
        item_summaries(args.step, args.threads)
    else:
        passes(args.path)


if __name__ == "__main__":
    main()
