"""Where should the local model run? In-process, in our supervised process, or llama.cpp's own server.

    python -m evaluation.bench_process --threads 2 --repeats 5

The same ranking and reason calls, interleaved call by call so that a noisy machine slows every
backend alike, against:
- inline:  LlamaCppLLM in this process (a crash in llama.cpp ends the caller);
- process: ModelSupervisor + ModelProcessLLM, the default (`llm_process = "process"`);
- sidecar: `python -m llama_cpp.server` (needs `--logits_all true` for logprobs, which makes every
           prompt token produce vocabulary-sized logits) through the OpenAI-compatible backend,
           whose label probabilities come from the server's top 20 only.
Prints a Markdown table: median seconds per call and the ratio to inline. The reasons are written
both one after another and in one batched decode (`stream_many`), where the backend can.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from evaluation.bench_ranking import DEFAULT_DATA, load_scenario
from evaluation.servers import free_port, loopback_process


@contextlib.contextmanager
def sidecar(model_path: Path, threads: int):
    """llama.cpp's OpenAI-compatible server on a free loopback port, as the product would manage it."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", str(threads), "--n_threads_batch", str(threads), "--logits_all", "true"
           ]
    log_path = Path(tempfile.gettempdir()) / f"llama-server-{port}.log"
    what = "llama_cpp.server (it needs pip install 'llama-cpp-python[server]')"
    with loopback_process(cmd, f"http://127.0.0.1:{port}/v1/models", what=what, log_path=log_path, timeout_s=120):
        yield f"http://127.0.0.1:{port}/v1"


class _OneAtATime:
    """A backend seen without its batch capability: reasons are then written one after another."""

    supports_batch = False

    def __init__(self, llm):
        self._llm = llm

    def __getattr__(self, name):
        return getattr(self._llm, name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-sidecar", action="store_true", help="compare inline and process only")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)

    from assistant.explain import llm_reasons
    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model
    from assistant.llm.openai_compat import OpenAICompatLLM
    from assistant.llm.process import ModelProcessLLM, ModelSupervisor
    from assistant.ranking import rank
    from prompts import Prompts

    model_path = args.model or ensure_embedded_model(Path(tempfile.gettempdir()) / "recassist-models")
    history, cands, source = load_scenario(args.data, 20, 10)
    other = list(reversed(history))
    known = {c.item.title for c in cands} | {h.title for h in history}

    backends: dict[str, object] = {}
    started = time.perf_counter()
    backends["inline"] = LlamaCppLLM(model_path, n_ctx=2048, n_threads=args.threads)
    loads = {"inline": time.perf_counter() - started}
    started = time.perf_counter()
    supervisor = ModelSupervisor(model_path, n_ctx=2048, threads=args.threads)
    info = supervisor.start()
    backends["process"] = ModelProcessLLM(supervisor.socket_path, supervisor=supervisor, info=info)
    loads["process"] = time.perf_counter() - started
    with contextlib.ExitStack() as stack:
        if not args.no_sidecar:
            started = time.perf_counter()
            url = stack.enter_context(sidecar(model_path, args.threads))
            backends["sidecar"] = OpenAICompatLLM(url, model=str(model_path), prompt_style="completion",
                                                  context_window=2048, timeout=120)
            loads["sidecar"] = time.perf_counter() - started
        prompts = {name: Prompts.for_llm(llm) for name, llm in backends.items()}
        priors = {name: {} for name in backends}
        words = iter(f"something {w} {i}" for i in range(1000) for w in ("sad", "epic", "short", "strange", "calm"))

        def rank_warm(name):
            # History cached by the previous call; a new request each time (what a next turn reads).
            return rank(backends[name], prompts[name], history, cands, request=next(words), shuffles=1, priors=priors[name])

        def rank_new_user(name):
            # Another user's history first: only the template head is shared.
            rank(backends[name], prompts[name], other, cands, request="a thrilling film", shuffles=1, priors=priors[name])
            start = time.perf_counter()
            rank(backends[name], prompts[name], history, cands, request="a thrilling film", shuffles=1, priors=priors[name])
            return time.perf_counter() - start

        def reasons(name, batched: bool):
            llm = backends[name] if batched else _OneAtATime(backends[name])
            first = None
            start = time.perf_counter()
            for chunk in llm_reasons(llm, prompts[name], cands[:5], "a thrilling film", "en", known):
                if chunk.delta and first is None:
                    first = time.perf_counter() - start
            return time.perf_counter() - start, first

        for name in backends:  # calibration and first-call costs out of the way
            rank_warm(name)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):
            for name in backends:  # interleaved: the machine's mood hits every backend alike
                start = time.perf_counter()
                rank_warm(name)
                times.setdefault(("rank 20 candidates, one pass, warm", name), []).append(time.perf_counter() - start)
                times.setdefault(("rank 20 candidates, one pass, new user", name), []).append(rank_new_user(name))
                for batched in (False, True) if getattr(backends[name], "supports_batch", False) else (False,):
                    how = "one decode (batched)" if batched else "one after another"
                    whole, first = reasons(name, batched)
                    times.setdefault((f"5 reasons, {how}: whole", name), []).append(whole)
                    if first is not None:
                        times.setdefault((f"5 reasons, {how}: first piece", name), []).append(first)

    supervisor.stop()
    names = list(backends)
    load = os.getloadavg()[0]
    print(f"\n{Path(model_path).name}, {args.threads} threads; {source}; median of {args.repeats}, interleaved; "
          f"load average {load:.1f} on {os.cpu_count()} cores; start-up: "
          + ", ".join(f"{n} {loads[n]:.1f} s" for n in names) + "\n")
    print("| call | " + " | ".join(names) + " | " + " | ".join(f"{n} / inline" for n in names[1:]) + " |")
    print("| --- | " + " | ".join("---:" for _ in names + names[1:]) + " |")
    for call in dict.fromkeys(c for c, _ in times):
        med = {n: statistics.median(times[(call, n)]) for n in names if (call, n) in times}
        cells = [f"{med[n]:.3f}" if n in med else "-" for n in names]
        ratios = [f"{med[n] / med['inline']:.2f}x" if n in med and med.get("inline") else "-" for n in names[1:]]
        print(f"| {call} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
