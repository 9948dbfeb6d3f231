"""llama.cpp builds side by side: prompt reading and writing speed of each, alternating runs.

    python -m evaluation.bench_build ~/.cache/recassist/wheels/llama-cpp-python-0.3.36-*/ --runs 3

Each argument is a folder from the wheel cache (scripts/bootstrap.sh keys them by version and
CPU flags) or a folder of native libraries; the installed build is measured too, as "installed".
Every run is a fresh process that loads the embedded model through LLAMA_CPP_LIB_PATH, reads a
~1,000-token prompt 5 times and writes 64 tokens 3 times (medians). Runs alternate between the
builds, so a noisy machine slows each alike. A build that dies by a signal is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def measure(threads: int) -> dict:
    from assistant.llm.llama import LlamaCppLLM, ensure_embedded_model
    from assistant.llm.worker import build_features

    llm = LlamaCppLLM(ensure_embedded_model(Path(tempfile.gettempdir()) / "recassist-models"), n_ctx=2048, n_threads=threads)
    prompt = "The old lighthouse keeper watched the storm roll in over the grey sea, counting the ships. " * 40
    n = llm.count_tokens(prompt)
    reads = []
    for _ in range(5):
        llm.forget_prompt_cache()
        start = time.perf_counter()
        llm.label_logprobs(prompt, ["A"])
        reads.append(time.perf_counter() - start)
    writes = []
    for _ in range(3):
        llm.forget_prompt_cache()
        llm.label_logprobs("Once upon a time", ["A"])  # the prompt is read before the clock starts
        start = time.perf_counter()
        text = "".join(llm.stream("Once upon a time", max_tokens=64))
        writes.append(llm.count_tokens(text) / (time.perf_counter() - start))
    features = [f for f in build_features() if f.startswith(("AVX", "FMA", "F16C", "BMI2", "SSE", "AMX"))]
    return {"read": n / statistics.median(reads), "write": statistics.median(writes), "features": features}


def lib_dir(path: Path, scratch: Path) -> Path:
    """The folder of native libraries in `path` (a wheel cache folder is unpacked once)."""
    wheels = sorted(path.glob("llama_cpp_python-*.whl"))
    if not wheels:
        return path
    target = scratch / path.name
    if not target.exists():
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(target, [n for n in zf.namelist() if n.startswith("llama_cpp/lib/")])
    return target / "llama_cpp" / "lib"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("builds", nargs="*", type=Path, help="wheel cache folders or native library folders")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child's side
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.threads)))
        return
    scratch = Path(tempfile.mkdtemp(prefix="recassist-builds-"))
    builds = {"installed": None} | {b.name: lib_dir(b.expanduser(), scratch) for b in args.builds}
    results: dict[str, list[dict]] = {name: [] for name in builds}
    for _ in range(args.runs):
        for name, libs in builds.items():
            env = dict(os.environ) | ({"LLAMA_CPP_LIB_PATH": str(libs)} if libs else {})
            proc = subprocess.run([sys.executable, "-m", "evaluation.bench_build", "--measure", "--threads", str(args.threads)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                from assistant.llm.process import describe_exit

                results[name].append({"error": describe_exit(proc.returncode)})
            else:
                results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\n{args.threads} threads, {args.runs} alternating runs each; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores\n")
    print("| build | instructions | prompt reading, tokens/s | writing, tokens/s |\n| --- | --- | ---: | ---: |")
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"| {name} | - | {runs[0]['error']} | |")
            continue
        reads = " / ".join(f"{r['read']:.0f}" for r in ok)
        writes = " / ".join(f"{r['write']:.1f}" for r in ok)
        print(f"| {name} | {' '.join(ok[0]['features'])} | {reads} | {writes} |")


if __name__ == "__main__":
    main()
