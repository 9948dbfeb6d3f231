"""Speed of LLM ranking and explanations with the embedded model, side by side, in one run.

    python -m evaluation.bench_ranking --threads 2 --repeats 3

Compares ranking 20 candidates by ONE forward pass over their labels (what recassist does)
with generating the ranked list of titles as text (LLMRank style), and measures the time to the
first streamed reason, prompt tokens per turn and the second turn with cached prompt prefixes.
Prints a Markdown table. Uses MovieLens-small from ../shared/data when present (a real user's
history and the most-rated unseen films as candidates), synthetic items otherwise.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from evaluation.movielens import split_title
from retrieval.records import Candidate, Evidence, Item

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "movielens-small"


def load_scenario(data_dir: Path, n_candidates: int, n_history: int) -> tuple[list[Item], list[Candidate], str]:
    """A user's liked films (oldest first) and the most-rated films they have not rated."""
    if not (data_dir / "ratings.csv").exists():
        history = [Item(f"h{i}", f"Film {i}", categories=["Drama"], year=1980 + i) for i in range(n_history)]
        cands = [Candidate(Item(f"c{i}", f"Other film {i}", categories=["Comedy"], year=1990 + i), 1 - i / 100) for i in range(n_candidates)]
        return history, cands, "synthetic items"
    from evaluation.movielens import _read_links, _read_tmdb

    # TMDB overviews where the shared data has them: the reason prompt sums up a description.
    tmdb_file = data_dir.parent / "tmdb-5000" / "tmdb_5000_movies.csv"
    overviews = _read_tmdb(tmdb_file) if tmdb_file.is_file() else {}
    tmdb_of = _read_links(data_dir / "links.csv") if (data_dir / "links.csv").is_file() else {}
    movies: dict[str, Item] = {}
    with open(data_dir / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            title, year = split_title(row["title"])  # as the evaluation's catalog spells titles
            text = overviews.get(tmdb_of.get(row["movieId"], ""), ("", []))[0]
            movies[row["movieId"]] = Item(row["movieId"], title, text=text, categories=row["genres"].split("|"), year=year)
    ratings: dict[str, list[tuple[float, str, float]]] = {}
    counts: Counter = Counter()
    with open(data_dir / "ratings.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ratings.setdefault(row["userId"], []).append((float(row["timestamp"]), row["movieId"], float(row["rating"])))
            counts[row["movieId"]] += 1
    user = "1" if "1" in ratings else next(iter(ratings))
    liked = [m for _, m, r in sorted(ratings[user]) if r >= 4.5 and m in movies]
    seen = {m for _, m, _ in ratings[user]}
    history = [movies[m] for m in liked[-n_history:]]
    popular = [m for m, _ in counts.most_common() if m not in seen and m in movies][:n_candidates]
    cands = [
        Candidate(movies[m], 1 - k / 100, Evidence(shared_categories=sorted(set(movies[m].categories) & {c for h in history for c in h.categories})[:2]))
        for k, m in enumerate(popular)
    ]
    return history, cands, f"MovieLens-small user {user}"


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)

    from assistant.explain import llm_reasons, summarize_list
    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model
    from assistant.ranking import count_prompt_tokens, item_line, rank
    from prompts import Prompts

    model_path = args.model or ensure_embedded_model(Path(tempfile.gettempdir()) / "recassist-models")
    history, cands, source = load_scenario(args.data, args.candidates, args.history)
    other_history = list(reversed(history))  # another user: shares the template head, not the history
    start = time.perf_counter()
    llm = LlamaCppLLM(model_path, n_ctx=2048, n_threads=args.threads)
    load_s = time.perf_counter() - start
    prompts = Prompts.for_llm(llm)
    rows: list[tuple[str, float, str]] = []

    priors: dict = {}  # the calibration answer, kept per model as the agent keeps it

    def first_call():
        llm.forget_prompt_cache()
        priors.clear()
        return rank(llm, prompts, history, cands, request="a thrilling film", shuffles=1, priors=priors)

    def one_pass_cold():
        # A new conversation: nothing of this prompt is in the KV cache; the calibration is known.
        llm.forget_prompt_cache()
        return rank(llm, prompts, history, cands, request="a thrilling film", shuffles=1, priors=priors)

    def one_pass_new_conversation():
        # A running server meeting a new user: the template's head is cached (snapshots), not this history.
        llm.forget_prompt_cache()
        for _ in range(2):
            rank(llm, prompts, other_history, cands, request="a thrilling film", shuffles=1, priors=priors)
        start = time.perf_counter()
        result = rank(llm, prompts, history, cands, request="a thrilling film", shuffles=1, priors=priors)
        result.elapsed_ms = (time.perf_counter() - start) * 1000
        return result

    def one_pass_warm():
        # The instructions, examples and history are cached from the previous call; a new request and order.
        rank(llm, prompts, history, cands, request="a thrilling film", shuffles=1, priors=priors)
        start = time.perf_counter()
        result = rank(llm, prompts, history, list(reversed(cands)), request="something funny", shuffles=1, priors=priors)
        result.elapsed_ms = (time.perf_counter() - start) * 1000
        return result

    # How fast this machine reads and writes right now (shared machines vary a lot).
    probe = " ".join(item_line(c.item) for c in cands) * 2
    read_s, _ = median_time(lambda: (llm.forget_prompt_cache(), llm.label_logprobs(probe, ["A"])), args.repeats)
    read_rate = llm.count_tokens(probe) / read_s
    llm.forget_prompt_cache()
    start = time.perf_counter()
    written = llm.count_tokens("".join(llm.stream("Once upon a time", max_tokens=64)))
    write_rate = written / (time.perf_counter() - start)

    first_s, first_result = median_time(first_call, args.repeats)
    cold_s, cold = median_time(one_pass_cold, args.repeats)
    new_runs = [one_pass_new_conversation() for _ in range(args.repeats)]
    new_s = statistics.median(r.elapsed_ms for r in new_runs) / 1000
    warm_runs = [one_pass_warm() for _ in range(args.repeats)]
    warm_s = statistics.median(r.elapsed_ms for r in warm_runs) / 1000
    requests = iter(f"something {word}" for word in ("sad", "epic", "short", "strange", "calm", "loud", "odd") * 3)
    # Like one_pass_warm: the history is cached, each call brings a new request, so both orders read their candidates.
    two_s, two = median_time(lambda: rank(llm, prompts, history, cands, request=next(requests), shuffles=2, seed=1, priors=priors), args.repeats)

    # The baseline reads the same lines: its template's `lines:` block matches the rank template's.
    template = prompts.get("rank_titles")
    lines = template.lines

    def titles_prompt_for(request: str, candidates, user_history=history) -> str:
        return template.render(history=[item_line(h, lines=lines) for h in user_history], request=request,
                               candidates=[item_line(c.item, lines=lines) for c in candidates])

    titles_prompt = titles_prompt_for("a thrilling film", cands)

    # The fairest budget for the baseline: exactly what listing every candidate title takes.
    answer_tokens = llm.count_tokens("\n".join(c.item.title for c in cands)) + 1

    def generate_titles():
        llm.forget_prompt_cache()
        return "".join(llm.stream(titles_prompt, max_tokens=answer_tokens, stop=template.output.stop))

    gen_s, gen_text = median_time(generate_titles, max(1, args.repeats - 1))
    gen_tokens = llm.count_tokens(gen_text)

    def generate_titles_warm():
        # As one_pass_warm: instructions and history cached by a first call, then a new request and order.
        "".join(llm.stream(titles_prompt, max_tokens=answer_tokens, stop=template.output.stop))
        prompt = titles_prompt_for("something funny", list(reversed(cands)))
        start = time.perf_counter()
        "".join(llm.stream(prompt, max_tokens=answer_tokens, stop=template.output.stop))
        return time.perf_counter() - start

    gen_warm_s = statistics.median(generate_titles_warm() for _ in range(max(1, args.repeats - 1)))

    def generate_titles_new_conversation():
        llm.forget_prompt_cache()
        for _ in range(2):
            "".join(llm.stream(titles_prompt_for("a thrilling film", cands, other_history), max_tokens=answer_tokens, stop=template.output.stop))
        start = time.perf_counter()
        "".join(llm.stream(titles_prompt, max_tokens=answer_tokens, stop=template.output.stop))
        return time.perf_counter() - start

    gen_new_s = statistics.median(generate_titles_new_conversation() for _ in range(max(1, args.repeats - 1)))

    # One whole turn as the product runs it: rank (2 orders), reasons for the top 5 streamed, and
    # the summary when `llm_summary` (auto) asks this model for it; then a second turn.
    from assistant.settings import Settings

    known = {c.item.title for c in cands} | {h.title for h in history}
    summary_on = Settings.load(env={}, llm_model_path=args.model).effective_llm_summary
    turn_label = "rank (2 orders) + 5 streamed reasons" + (" + summary" if summary_on else " (the summary built from the cards, as llm_summary auto does for this model)")

    def turn(request: str) -> dict:
        t0 = time.perf_counter()
        before = dict(llm.stats)
        result = rank(llm, prompts, history, cands, request=request, shuffles=2, priors=priors)
        t_rank = time.perf_counter() - t0
        first_delta = None
        t1 = time.perf_counter()
        for chunk in llm_reasons(llm, prompts, result.candidates[:5], request, "en", known):
            if chunk.delta and first_delta is None:
                first_delta = time.perf_counter() - t1
        summarize_list(llm if summary_on else None, prompts, result.candidates[:5], "en", request, known)
        return {
            "rank_s": t_rank,
            "first_reason_s": first_delta if first_delta is not None else float("nan"),
            "turn_s": time.perf_counter() - t0,
            "prompt_tokens": llm.stats["prompt_tokens"] - before["prompt_tokens"],
            "read_tokens": llm.stats["evaluated_tokens"] - before["evaluated_tokens"],
        }

    llm.forget_prompt_cache()
    first = turn("a thrilling film")
    second = turn("something funny")
    llm._snapshots, saved = None, llm._snapshots
    llm.forget_prompt_cache()
    turn("a thrilling film")
    no_snap = turn("something funny")
    llm._snapshots = saved

    rows += [
        (f"rank {len(cands)} candidates, first call after loading (calibration + one pass)", first_s, f"{first_result.total_prompt_tokens} prompt tokens"),
        (f"rank {len(cands)} candidates, one forward pass, cold cache", cold_s, f"{cold.prompt_tokens} prompt tokens"),
        (f"rank {len(cands)} candidates, one forward pass, new conversation (template head cached)", new_s, f"{new_runs[-1].prompt_tokens} prompt tokens"),
        (f"rank {len(cands)} candidates, one forward pass, warm (instructions + history cached)", warm_s, f"{warm_runs[-1].prompt_tokens} prompt tokens"),
        (f"rank {len(cands)} candidates, two orders (default shuffles=2), warm", two_s, f"{two.passes} passes"),
        (f"rank by generating the titles as text (LLMRank style), cold", gen_s, f"{count_prompt_tokens(llm, titles_prompt)} prompt + {gen_tokens} generated tokens"),
        (f"rank by generating the titles as text, new conversation (template head cached)", gen_new_s, ""),
        (f"rank by generating the titles as text, warm (instructions + history cached)", gen_warm_s, "same budget of generated tokens"),
        (f"turn 1: {turn_label}", first["turn_s"], f"{first['prompt_tokens']} prompt tokens, {first['read_tokens']} read"),
        ("turn 1: time to first streamed reason (after ranking)", first["first_reason_s"], ""),
        ("turn 2: rank (2 orders), prefixes restored from snapshots", second["rank_s"], f"turn reads {second['read_tokens']} of {second['prompt_tokens']} tokens"),
        ("turn 2: rank (2 orders), KV cache only (no snapshots)", no_snap["rank_s"], f"turn reads {no_snap['read_tokens']} of {no_snap['prompt_tokens']} tokens"),
        ("turn 2: time to first streamed reason, snapshots", second["first_reason_s"], ""),
        ("turn 2: whole turn, snapshots / KV cache only", second["turn_s"], f"{no_snap['turn_s']:.2f} s without snapshots"),
    ]
    speedup = gen_s / cold_s if cold_s else float("nan")
    speedup_warm = gen_warm_s / warm_s if warm_s else float("nan")
    speedup_new = gen_new_s / new_s if new_s else float("nan")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nModel {llm.model}, {args.threads} threads, loaded in {load_s:.1f} s; {source}; "
          f"median of {args.repeats}; load average {load:.1f} on {os.cpu_count()} cores; "
          f"right now it reads {read_rate:.0f} prompt tokens/s and writes {write_rate:.0f} tokens/s\n")
    print("| measurement | seconds | notes |\n| --- | ---: | --- |")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.2f} | {note} |")
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print(f"\nOne pass vs generation, in the same cache state: {speedup:.1f}x cold, {speedup_new:.1f}x new conversation, "
          f"{speedup_warm:.1f}x warm. Targets: one pass < 1.5 s ({met(cold_s < 1.5)} cold, {met(new_s < 1.5)} new "
          f"conversation, {met(warm_s < 1.5)} warm), >= 3x faster than generation ({met(speedup >= 3)} cold, "
          f"{met(speedup_new >= 3)} new conversation, {met(speedup_warm >= 3)} warm).")


if __name__ == "__main__":
    main()
