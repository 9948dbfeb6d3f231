"""Platform scale (a script, not a test): today's refit next to the fitting job, on a synthetic platform.

    python -m evaluation.bench_scale --items 20000 --users 20000 --events 200000
    python -m evaluation.bench_scale --items 50000 --users 100000 --events 1000000 --skip-refit

Generates the platform (evaluation.synthetic; reused when the same sizes and seed were generated
before in --work-dir), ingests it through the public path (retrieval.ingest into a SQLite store,
the catalog embedded with the hashing embedder into embedded Chroma), then measures, each step in
its own child process so each peak RSS is that step's alone:

- ingest: catalog and events, events/s;
- refit: the refit every process ran before (`legacy_refit`: every event as an Event object, vectors upserted into Chroma);
- fit: `retrieval.fitting.fit_signals`, the collaborative vectors into Chroma, `signals.publish`;
- worker: what an API worker does at start (open the store, `load_signals`, adopt them into a
  Retriever), then candidate generation for history-only requests of random users, one session
  at a time and with --sessions concurrent ones (p50 / p95 per call): the same users again, then
  as many users not served before (what in-process caches hold for them is only what others left).
  `--admit N` lets N requests generate candidates at once (retrieval.gate; default one per core).

Results: a Markdown table on stdout and results.json in the platform's folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

STEPS = ("ingest", "refit", "fit", "worker")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _open(folder: Path, ef_search: int | None = None):
    """The store and a Retriever over the folder; `ef_search` sets the content collection's HNSW
    search breadth (as `hnsw_ef_search` does; Chroma reads a changed breadth on the next open)."""
    from retrieval.candidates import Retriever
    from retrieval.embeddings import HashingEmbedder
    from retrieval.sequential import SequentialModel
    from retrieval.store import Store
    from retrieval.vectors import VectorIndex, content_collection_name, open_chroma

    store = Store.open(f"sqlite:///{folder / 'store.db'}")
    embedder = HashingEmbedder()
    client = open_chroma("persistent", path=str(folder / "chroma"))
    content = VectorIndex(client, content_collection_name(embedder), embedder,
                          hnsw={"ef_search": ef_search} if ef_search else None)
    retriever = Retriever(store, embedder, content, VectorIndex(client, "collab"), SequentialModel())
    return store, retriever


def step_ingest(folder: Path, platform: Path, args) -> dict:
    from retrieval.ingest import ingest_catalog, ingest_events

    store, retriever = _open(folder)
    began = time.perf_counter()
    catalog = ingest_catalog(platform / "catalog.jsonl", store, index=retriever.index_items, progress=False)
    middle = time.perf_counter()
    events = ingest_events(platform / "events.csv", store, progress=False)
    done = time.perf_counter()
    return {"catalog_s": middle - began, "items_per_s": catalog.read / (middle - began), "events_s": done - middle,
            "events_per_s": events.read / (done - middle), "events_stored": events.inserted, "rejected": catalog.rejected + events.rejected}


def step_refit(folder: Path, platform: Path, args) -> dict:
    store, retriever = _open(folder)
    began = time.perf_counter()
    legacy_refit(retriever, store)
    return {"seconds": time.perf_counter() - began}


def legacy_refit(retriever, store) -> None:
    """The refit every process ran before the fitting job (kept here to compare): every event read
    as an Event object, each signal fitted from those objects, the vectors upserted into Chroma."""
    from retrieval.collab import CollabTable, fit_item_factors

    events = list(store.iter_events())
    retriever._popularity, retriever.behaviour_confidence = retriever._compute_popularity(store, events)
    retriever.sequential.fit(events)
    retriever.comention.fit(events)
    ids, vectors = fit_item_factors(events)
    if ids:
        retriever.collab.upsert(ids, vectors)
    retriever._collab_table = CollabTable(ids, vectors)


def step_fit(folder: Path, platform: Path, args) -> dict:
    from retrieval.fitting import fit_signals
    from retrieval.signals import attach_content, load_signals, publish, sync_collab_index

    store, retriever = _open(folder)
    previous = load_signals(folder / "signals")  # what the serving workers hold: it lends its content searches
    began = time.perf_counter()
    signals = fit_signals(store)
    fitted = time.perf_counter()
    attach_content(signals, retriever.content, previous=previous)  # as Retriever.refit
    read = time.perf_counter()
    version = publish(signals, folder / "signals")  # workers can adopt it from here on
    published = time.perf_counter()
    fit_rss = _peak_rss_mib()  # the job's own peak, before Chroma's upsert adds its own
    sync_collab_index(retriever.collab, signals)  # for other Chroma readers; workers read the artifact
    done = time.perf_counter()
    size = sum(f.stat().st_size for f in version.iterdir())
    return {"seconds": done - began, "fit_s": fitted - began, "content_s": read - fitted, "publish_s": published - read, "chroma_s": done - published,
            "fit_peak_rss_mib": fit_rss,
            "parts": signals.manifest["timings"], "artifact_mib": size / 2**20,
            "searched": signals.manifest.get("content", {}).get("searched"),
            "transitions_nnz": signals.transitions.nnz, "neighbours_nnz": signals.neighbours.nnz}


def step_worker(folder: Path, platform: Path, args) -> dict:
    import random
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from retrieval.request import Request
    from retrieval.signals import load_signals

    if args.ef_search:
        _open(folder, args.ef_search)[1].content.collection  # set the breadth: read on the next open
    began = time.perf_counter()
    store, retriever = _open(folder, args.ef_search)
    opened = time.perf_counter()
    signals = load_signals(folder / "signals")
    loaded = time.perf_counter()
    retriever.adopt(signals)
    if args.admit is not None:  # requests generating candidates at once (retrieval.gate; default one per core)
        from retrieval.gate import FifoGate

        retriever.gate = FifoGate(args.admit)
    ready = time.perf_counter()
    drawn = random.Random(0).sample(range(args.users), min(2 * args.queries, args.users))
    users, others = drawn[: args.queries], drawn[args.queries :]  # others: not served before, caches cold for them

    def one(user: int) -> float:
        start = time.perf_counter()
        retriever.candidates(f"u{user}", Request(), k=20)
        return (time.perf_counter() - start) * 1000

    one(users[0])  # the first call opens what is opened lazily (Chroma collections, caches)
    cpu = time.process_time()
    alone = sorted(one(u) for u in users)
    cpu_ms = (time.process_time() - cpu) / len(users) * 1000  # this process's CPU, all threads (Chroma's too)
    with ThreadPoolExecutor(args.sessions) as pool:
        together = sorted(pool.map(one, users))  # the same users again, as measured since the start
        unseen = sorted(pool.map(one, others))

    def pct(values, q):
        return values[min(len(values) - 1, int(q * len(values)))]
    return {"start_s": ready - began, "open_s": opened - began, "load_s": loaded - opened, "adopt_s": ready - loaded,
            "p50_ms": statistics.median(alone), "p95_ms": pct(alone, 0.95),
            "concurrent_p50_ms": statistics.median(together), "concurrent_p95_ms": pct(together, 0.95), "sessions": args.sessions,
            "unseen_p50_ms": statistics.median(unseen) if unseen else None, "unseen_p95_ms": pct(unseen, 0.95) if unseen else None,
            "cpu_ms_per_request": cpu_ms, "cpus": os.cpu_count(), "admitted": retriever.gate.slots}


def run_step(name: str, folder: Path, platform: Path, args) -> dict:
    """Run one step in a child process; its result and its own peak RSS come back as JSON."""
    command = [sys.executable, "-m", "evaluation.bench_scale", "--step", name, "--folder", str(folder),
               "--platform", str(platform), "--users", str(args.users), "--queries", str(args.queries),
               "--sessions", str(args.sessions)] + (["--admit", str(args.admit)] if args.admit is not None else []) \
        + (["--ef-search", str(args.ef_search)] if args.ef_search else [])
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"step {name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - began
    print(f"  {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def prepare(args) -> tuple[Path, Path]:
    """The platform's files and its store folder, generated and ingested unless already there."""
    from evaluation.synthetic import Platform, generate

    name = f"i{args.items}-u{args.users}-e{args.events}-s{args.seed}"
    platform = args.work_dir / name / "platform"
    folder = args.work_dir / name
    if not (platform / "done.json").exists() or args.fresh:
        print(f"generating {name} ...", file=sys.stderr, flush=True)
        written = generate(Platform(items=args.items, users=args.users, events=args.events, seed=args.seed), platform)
        (platform / "done.json").write_text(json.dumps({"seconds": written.seconds, "users": written.users}))
    return folder, platform


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "recassist-scale",
                        help="where platforms, stores and results are kept (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="generate and ingest again even if present")
    parser.add_argument("--skip-refit", action="store_true", help="leave out today's refit (slow at 10M events)")
    parser.add_argument("--queries", type=int, default=200, help="candidate calls timed in the worker step")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions for the concurrent latency")
    parser.add_argument("--admit", type=int, help="requests the worker lets generate candidates at once "
                        "(the rest wait in arrival order; default: one per core)")
    parser.add_argument("--ef-search", type=int, help="the worker's HNSW search breadth (default: the product's, "
                        "retrieval.vectors.DEFAULT_HNSW); the collection keeps it for later runs")
    parser.add_argument("--repeats", type=int, default=2, help="refit and fit runs, alternated (the median is shown)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--platform", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if args.step:  # a child: one step, one JSON line
        result = globals()[f"step_{args.step}"](args.folder, args.platform, args)
        print(json.dumps({**result, "peak_rss_mib": _peak_rss_mib()}), flush=True)
        return
    folder, platform = prepare(args)
    results = {"sizes": {"items": args.items, "users": args.users, "events": args.events, "seed": args.seed},
               "load_average": os.getloadavg()[0]}
    if not (folder / "store.db").exists() or args.fresh:
        for stale in ("store.db", "store.db-wal", "store.db-shm"):
            (folder / stale).unlink(missing_ok=True)
        shutil.rmtree(folder / "chroma", ignore_errors=True)
        results["ingest"] = run_step("ingest", folder, platform, args)
    elif (folder / "results.json").exists():  # ingested by an earlier run: its figures stand
        results["ingest"] = json.loads((folder / "results.json").read_text()).get("ingest")
    for _ in range(args.repeats):  # alternated, so a busy spell on a shared machine hits both
        if not args.skip_refit:
            results.setdefault("refits", []).append(run_step("refit", folder, platform, args))
        results.setdefault("fits", []).append(run_step("fit", folder, platform, args))
    results["worker"] = run_step("worker", folder, platform, args)
    results["load_average_end"] = os.getloadavg()[0]
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    print(report(results))


def report(results: dict) -> str:
    s = results["sizes"]
    lines = [f"{s['items']:,} items, {s['users']:,} users, {s['events']:,} events (seed {s['seed']}); "
             f"load average {results['load_average']:.1f} at start, {results['load_average_end']:.1f} at the end", "",
             "| step | wall s | peak RSS MiB | notes |", "|---|---:|---:|---|"]
    if results.get("ingest"):
        r = results["ingest"]
        lines.append(f"| ingest (catalog + events) | {r['catalog_s'] + r['events_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['items_per_s']:,.0f} items/s, {r['events_per_s']:,.0f} events/s |")
    if "refits" in results:
        runs = results["refits"]
        r = _median_run(runs)
        lines.append(f"| today: Retriever.refit | {r['seconds']:.1f} | {max(x['peak_rss_mib'] for x in runs):.0f} | "
                     f"every event as an object; runs {_seconds(runs)} s |")
    runs = results["fits"]
    r = _median_run(runs)
    parts = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in r["parts"].items() if k != "total_s")
    content = f"content vectors and searches {r['content_s']:.1f}, " if "content_s" in r else ""
    if "fit_peak_rss_mib" in r:
        lines.append(f"| fit_signals + publish (the job) | {r['fit_s'] + r.get('content_s', 0) + r['publish_s']:.1f} | "
                     f"{max(x['fit_peak_rss_mib'] for x in runs):.0f} | fit {r['fit_s']:.1f} ({parts}), "
                     + content + f"publish {r['publish_s']:.1f}; "
                     f"artifact {r['artifact_mib']:.0f} MiB; runs {_job_seconds(runs)} s |")
    lines.append(f"| fit_signals + publish + Chroma | {r['seconds']:.1f} | {max(x['peak_rss_mib'] for x in runs):.0f} | "
                 f"fit {r['fit_s']:.1f} ({parts}), " + content + f"publish {r['publish_s']:.1f}, Chroma {r['chroma_s']:.1f}; "
                 f"artifact {r['artifact_mib']:.0f} MiB; runs {_seconds(runs)} s |")
    r = results["worker"]
    lines.append(f"| worker start (open store and Chroma, load_signals, adopt) | {r['start_s']:.2f} | {r['peak_rss_mib']:.0f} | "
                 f"open {r['open_s']:.2f}, load {r['load_s']:.2f}, "
                 f"adopt {r['adopt_s']:.2f}; candidates p50/p95 {r['p50_ms']:.0f}/{r['p95_ms']:.0f} ms alone, "
                 f"{r['concurrent_p50_ms']:.0f}/{r['concurrent_p95_ms']:.0f} ms with {r.get('sessions', 8)} sessions in parallel"
                 + (f" ({r['unseen_p50_ms']:.0f}/{r['unseen_p95_ms']:.0f} ms for users not served before)" if r.get("unseen_p50_ms") else "")
                 + (f" on {r['cpus']} CPUs; {r['cpu_ms_per_request']:.1f} ms CPU a request" if "cpus" in r else "") + " |")
    return "\n".join(lines)


def _seconds(runs: list[dict]) -> str:
    return ", ".join(f"{run['seconds']:.1f}" for run in runs)


def _job_seconds(runs: list[dict]) -> str:
    return ", ".join(f"{run['fit_s'] + run.get('content_s', 0) + run['publish_s']:.1f}" for run in runs)


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


if __name__ == "__main__":
    main()
