"""Many callers, one local model: one call at a time against continuous batching.

    python -m evaluation.bench_batching --callers 1 4 8 --repeats 3
    python -m evaluation.bench_batching --callers 1 4 8 --repeats 3 --no-stop --max-tokens 16
    python -m evaluation.bench_batching --workload turns --callers 1 4 8 --repeats 1

N threads start together, each asking the embedded Gemma for a reason: the shipped reason
template (its hook form) rendered for a different demo book, greedy, up to --max-tokens tokens,
stopped at its newline (`reasons`; --no-stop writes exactly --max-tokens), or for a whole turn's
five reasons in one stream_many (`turns`). Each run asks about other books than the run before,
so only the template's head is cached, as for a new turn. The same calls run against two copies of the model in this process, interleaved run
by run so a noisy machine slows both alike:
- `one at a time`: LlamaCppLLM(batching=False), every call takes the model whole, in turn (the
  path before continuous batching);
- `batched`: LlamaCppLLM(batching=True), calls join one decode loop between forward passes.
Both keep their prompt caches warm (the template's head is read once, as after a first turn).
Prints a Markdown table: wall time of the N calls, tokens written per second, per-call latency
p50/p95 and the first piece's p50 (medians over repeats for wall and tokens/s; latencies pooled),
and, for the batched model, what its admission estimate (`estimate_s`) said before the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from evaluation.metrics import percentile

BOOKS = Path(__file__).resolve().parent.parent / "assistant" / "demo_data" / "books.jsonl"


def reason_prompts() -> list[str]:
    """The shipped hook-form reason prompt for every demo book."""
    from prompts import load_template

    template = load_template("reason", "completion")
    prompts = []
    for line in BOOKS.read_text(encoding="utf-8").splitlines():
        book = json.loads(line)
        about = " ".join(book["text"].split(".")[0].split()[:20]) + "."
        item = f"{book['title']} ({book['year']}; {', '.join(book['categories'])})"
        prompts.append(template.render(item=item, about=about, language="English"))
    return prompts


def run_callers(llm, jobs: list, max_tokens: int, stop: list[str]) -> dict:
    """Every job in a thread of its own, started together: wall time, latencies, tokens written."""
    barrier = threading.Barrier(len(jobs) + 1)
    latency, first, texts, errors = [0.0] * len(jobs), [0.0] * len(jobs), [[] for _ in jobs], []

    def work(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            job = jobs[i]
            pairs = (llm.stream_many(job, max_tokens=max_tokens, stop=stop) if isinstance(job, list)
                     else ((0, p) for p in llm.stream(job, max_tokens=max_tokens, stop=stop)))
            for _, piece in pairs:
                if piece:
                    first[i] = first[i] or time.perf_counter() - started
                    texts[i].append(piece)
        except Exception as exc:  # a failed call must show in the table, not vanish with its thread
            errors.append(f"{type(exc).__name__}: {exc}")
        latency[i] = time.perf_counter() - started

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    tokens = sum(llm.count_tokens("".join(t)) for t in texts)
    return {"wall": wall, "latency": latency, "first": first, "tokens": tokens, "errors": errors,
            "sequences": sum(len(j) if isinstance(j, list) else 1 for j in jobs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--workload", choices=["reasons", "turns"], default="reasons")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--no-stop", action="store_true", help="write --max-tokens tokens, not up to the newline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the embedded Gemma 3 270M)")
    args = parser.parse_args(argv)

    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model

    path = args.model or ensure_embedded_model(Path(tempfile.gettempdir()) / "recassist-models")
    models = {
        "one at a time": LlamaCppLLM(path, n_ctx=2048, n_threads=args.threads, batching=False),
        "batched": LlamaCppLLM(path, n_ctx=2048, n_threads=args.threads, batching=True),
    }
    per_job = 5 if args.workload == "turns" else 1
    stop = [] if args.no_stop else ["\n"]
    prompts = reason_prompts()
    for llm in models.values():  # warm: the template head is cached, as after a first turn
        "".join(llm.stream(prompts[-1], max_tokens=4, stop=["\n"]))
    runs: dict[tuple[str, int], list[dict]] = {}
    offset = 0
    for _ in range(args.repeats):
        for n in args.callers:
            asked = [prompts[(offset + i) % (len(prompts) - 1)] for i in range(n * per_job)]
            offset += n * per_job
            jobs = [asked[i * per_job : (i + 1) * per_job] if per_job > 1 else asked[i] for i in range(n)]
            for name, llm in models.items():
                estimate = llm.scheduler.estimate_s(n * per_job) if llm.batches_across_calls else None
                result = run_callers(llm, jobs, args.max_tokens, stop)
                result["estimate"] = estimate
                runs.setdefault((name, n), []).append(result)
    for llm in models.values():
        llm.close()
    print(report(runs, args))


def report(runs: dict, args) -> str:
    what = "a reason each" if args.workload == "reasons" else "a turn each (5 reasons in one stream_many)"
    lines = [
        f"{args.repeats} repeats, {args.threads} threads, callers with {what}, "
        f"{'exactly' if args.no_stop else 'up to'} {args.max_tokens} tokens, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| callers | path | wall s | tokens written | tokens/s | call p50 s | call p95 s | first piece p50 s | estimate s | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, n), results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        rate = statistics.median(r["tokens"] / r["wall"] for r in results)
        latency = [x for r in results for x in r["latency"]]
        first = [x for r in results for x in r["first"] if x]
        estimates = [r["estimate"] for r in results if r["estimate"] is not None]
        tokens = statistics.median(r["tokens"] for r in results)
        lines.append(
            f"| {n} | {name} | {wall:.2f} | {tokens:.0f} | {rate:.1f} | {percentile(latency, 50):.2f} | "
            f"{percentile(latency, 95):.2f} | {percentile(first, 50) if first else float('nan'):.2f} | "
            f"{statistics.median(estimates) if estimates else float('nan'):.2f} | {sum(len(r['errors']) for r in results)} |"
        )
    errors = sorted({e for results in runs.values() for r in results for e in r["errors"]})
    return "\n".join(lines + ([f"\nerrors: {errors[:5]}"] if errors else []))


if __name__ == "__main__":
    main()
