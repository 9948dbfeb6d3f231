"""How llama.cpp's thread count behaves when other work shares the cores.

    python -m evaluation.bench_threads                 # threads 1..cores, 0..cores busy processes
    python -m evaluation.bench_threads --repeats 5 --busy 0,1,2

Each busy process spins on the CPU (pure Python arithmetic, one core each), standing in for
whatever else the machine runs: another request's retrieval, a refit, a training job. For every
(threads, busy) pair the embedded model reads the same prompt with nothing cached and writes a
fixed number of tokens; the table reports the median seconds and tokens per second, and the
ratio against the same thread count on a quiet machine. `llm_threads` (RECASSIST_LLM_THREADS)
is the setting this informs: 0 means every core.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x = (x * 31 + i) % 1_000_003


def _prompt(words: int) -> str:
    line = "A lighthouse keeper on a remote island takes in a shipwrecked boy and must decide what to do. "
    return (line * (words // len(line.split()) + 1))[: words * 7] + "\nSummary:"


def measure(llm, prompt: str, gen_tokens: int, repeats: int) -> tuple[float, float, int]:
    """Median seconds to read `prompt` (nothing cached) and to write `gen_tokens` tokens."""
    reads, writes = [], []
    n_prompt = len(llm._llama.tokenize(prompt.encode("utf-8")))
    for _ in range(repeats):
        llm.forget_prompt_cache()  # nothing cached: neither the KV cache nor saved prefix snapshots
        start = time.perf_counter()
        llm.label_logprobs(prompt, ["A"])
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        "".join(llm.stream(prompt, max_tokens=gen_tokens, stop=[]))
        writes.append(time.perf_counter() - start)
    return statistics.median(reads), statistics.median(writes), n_prompt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = os.cpu_count() or 1
    parser.add_argument("--threads", default=",".join(str(t) for t in range(1, cores + 1)), help="thread counts to try (default: 1..cores)")
    parser.add_argument("--busy", default=",".join(str(b) for b in range(cores + 1)), help="busy processes to run alongside (default: 0..cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--words", type=int, default=300, help="prompt length in words (default: %(default)s)")
    parser.add_argument("--generate", type=int, default=24, help="tokens to write (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the embedded Gemma 3 270M)")
    args = parser.parse_args(argv)

    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model

    model = args.model or ensure_embedded_model(Path(tempfile.gettempdir()) / "recassist-models")
    prompt = _prompt(args.words)
    threads = [int(t) for t in args.threads.split(",")]
    busy = [int(b) for b in args.busy.split(",")]
    results: dict[tuple[int, int], tuple[float, float, int]] = {}
    for n_threads in threads:
        llm = LlamaCppLLM(model, n_ctx=2048, n_threads=n_threads)
        measure(llm, prompt, 4, 1)  # warm the code paths
        for n_busy in busy:
            stop = mp.Event()
            procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(n_busy)]
            for p in procs:
                p.start()
            time.sleep(0.5 if n_busy else 0)
            try:
                results[n_threads, n_busy] = measure(llm, prompt, args.generate, args.repeats)
            finally:
                stop.set()
                for p in procs:
                    p.join()
            read_s, write_s, n_prompt = results[n_threads, n_busy]
            print(f"threads {n_threads}, busy {n_busy}: read {n_prompt} tokens in {read_s:.2f} s, "
                  f"wrote {args.generate} in {write_s:.2f} s", flush=True)
        del llm

    print(f"\nModel {Path(model).name}, {cores} cores, median of {args.repeats}; prompt {results[threads[0], busy[0]][2]} tokens, "
          f"{args.generate} generated\n")
    print("| llama threads | busy processes | read tokens/s | write tokens/s | read vs quiet | write vs quiet |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n_threads in threads:
        quiet = results.get((n_threads, 0))
        for n_busy in busy:
            read_s, write_s, n_prompt = results[n_threads, n_busy]
            rel = (f"{quiet[0] / read_s:.2f}x", f"{quiet[1] / write_s:.2f}x") if quiet else ("", "")
            print(f"| {n_threads} | {n_busy} | {n_prompt / read_s:.0f} | {args.generate / write_s:.1f} | {rel[0]} | {rel[1]} |")


if __name__ == "__main__":
    main()
