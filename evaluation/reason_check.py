"""How well the reason check (assistant.explain.reason_problems) judges reasons, and how often
a model's reasons pass it.

    python -m evaluation.reason_check score              # the labelled table in tests/
    python -m evaluation.reason_check collect out.json   # the embedded model on the demo users
    python -m evaluation.reason_check passes out.json    # how many of those pass the check

`score` prints false rejects and false accepts per group of tests/reasons_labelled.json for a
few thresholds (claims.MAX_UNSUPPORTED). `collect` runs the embedded Gemma 3 270M through
llm_reasons (temperature 0) for the demo users' candidates and keeps each raw reason.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from importlib.resources import files
from pathlib import Path

from assistant import claims
from assistant.explain import clean_generated, llm_reasons, reason_problems
from retrieval.records import Candidate, Evidence, Item

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "reasons_labelled.json"
REQUESTS = {
    "ana": ["", "a witty love story"], "ben": ["", "a sea adventure"], "chen": ["", "a dystopia"],
    "dara": ["", "a clever murder mystery"], "eli": ["", "something scary with ghosts"], "fay": ["", "calm essays about nature"],
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


def collect(out: Path, k: int, language: str, threads: int) -> None:
    from assistant.engine import Engine
    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model
    from assistant.settings import Settings
    from prompts import Prompts
    from retrieval.candidates import Request

    tmp = Path(tempfile.mkdtemp())
    engine = Engine(Settings.load(env={}, data_dir=tmp / "data", llm_backend="none", embedding_backend="hash"))
    engine.load_demo(progress=False)
    titles = sorted({it.title for it in engine.store.iter_items()})
    llm = LlamaCppLLM(ensure_embedded_model(tmp / "models"), n_ctx=2048, n_threads=threads)
    prompts = Prompts.for_llm(llm)
    rows = []
    for user, requests in REQUESTS.items():
        for request in requests:
            cands = engine.retriever.candidates(user, Request(query=request), k=k)
            raw: dict[str, str] = {}
            for chunk in llm_reasons(llm, prompts, cands, request, language, titles):
                if chunk.delta:
                    raw[chunk.item_id] = raw.get(chunk.item_id, "") + chunk.delta
            others = sorted({cat for c in cands for cat in c.item.categories})
            rows += [
                {"user": user, "request": request, "language": language, "item": c.item.to_dict(),
                 "evidence": c.evidence.to_dict(), "others": others, "raw": raw.get(c.item.id, "")}
                for c in cands
            ]
    out.write_text(json.dumps({"titles": titles, "rows": rows}, ensure_ascii=False, indent=1), encoding="utf-8")
    engine.close()
    print(f"{len(rows)} reasons written to {out}")


def passes(path: Path) -> None:
    data = json.loads(path.read_text("utf-8"))
    n = passed = 0
    for row in data["rows"]:
        reason = clean_generated(row["raw"])
        problems = reason_problems(reason, candidate(row["item"], row["evidence"]), data["titles"], row["request"], row["others"], (), row["language"])
        n, passed = n + 1, passed + (not problems)
        print(f"{'PASS' if not problems else 'fail'}  {row['item']['title']}: {reason!r}  {'; '.join(problems)}")
    print(f"\n{passed}/{n} reasons pass the check")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("score")
    p = sub.add_parser("collect")
    p.add_argument("out", type=Path)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--language", default="en")
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("passes")
    p.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "score":
        for threshold in (0, 1, 2):
            score(threshold)
    elif args.command == "collect":
        collect(args.out, args.k, args.language, args.threads)
    else:
        passes(args.path)


if __name__ == "__main__":
    main()
