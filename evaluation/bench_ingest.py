"""Events ingest at platform scale (a script, not a test): the whole-file path next to the streamed
one, into SQLite and into PostgreSQL, in one run.

    python -m evaluation.bench_ingest --events 1000000
    python -m evaluation.bench_ingest --events 200000 --engines sqlite

Generates a synthetic platform (evaluation.synthetic; reused from --work-dir when the same sizes
and seed were generated before), loads its catalog into a fresh store per run (not timed), then
times the events ingest, each run in its own child process so each peak RSS is that run's alone:

- old: the ingest before streaming, kept here to compare: the whole file read into Event objects
  (`read_events`), then stored 5,000 at a time through `write_events` (`Store.add_events`);
- new: `retrieval.ingest.ingest_events` (streamed, one transaction per batch);
- again: `ingest_events` on the same file into the same store once more: it must insert 0.

PostgreSQL is a throwaway server started on loopback with its default (durable) settings, or the
one --postgres-url names (each run gets a schema of its own there, dropped afterwards).
Results: a Markdown table on stdout and results.json in the platform's folder.

Appending to a large store, the events layout before and after (SQLite):

    python -m evaluation.bench_ingest --events 1000000 --items 200000 --users 1000000 --seed 7 \
        --append-to /tmp/scale/big/i200000-u1000000-e10000000-s0/store.db

copies that store twice (one copy kept in the layout it has, one upgraded by `upgrade_events`,
timed) and appends the platform's events to each, twice: as generated (their times spread over
the log's year, so each index grows everywhere) and moved after the store's last event in time
order (a platform's new day). The store is never written.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from evaluation.servers import free_port

RUNS = ("old", "new", "again")
OLD_BATCH = 5000  # what retrieval.ingest wrote per transaction before streaming


def legacy_ingest_events(path: Path, store) -> dict:
    """The events ingest before streaming: every row of the file in memory, then 5,000 per write."""
    from retrieval.ingest import read_events
    from retrieval.writes import write_events

    result = read_events(path, known_item_ids=store.item_ids())
    inserted = sum(write_events(store, result.records[start : start + OLD_BATCH])
                   for start in range(0, len(result.records), OLD_BATCH))
    return {"read": result.total_rows, "inserted": inserted, "duplicates": len(result.records) - inserted,
            "rejected": len(result.rejects)}


def child(run: str, url: str, events: Path) -> dict:
    """One timed ingest (in a process of its own)."""
    from retrieval.ingest import ingest_events
    from retrieval.store import Store

    with Store.open(url) as store:
        began = time.perf_counter()
        if run == "old":
            counts = legacy_ingest_events(events, store)
        else:
            report = ingest_events(events, store, progress=False)
            counts = {"read": report.read, "inserted": report.inserted, "duplicates": report.unchanged,
                      "rejected": report.rejected}
        seconds = time.perf_counter() - began
        stored = store.event_count()
    return {**counts, "seconds": seconds, "events_per_s": counts["read"] / seconds, "stored": stored,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(run: str, url: str, events: Path) -> dict:
    command = [sys.executable, "-m", "evaluation.bench_ingest", "--child", run, "--url", url, "--file", str(events)]
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run {run} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = {**json.loads(done.stdout.strip().splitlines()[-1]), "load_average": load}
    print(f"  {run}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def load_catalog(url: str, catalog: Path) -> None:
    """The catalog into the store at `url`, in a child process: this process's peak memory would
    become every timed child's (Linux keeps the peak across exec)."""
    subprocess.run([sys.executable, "-m", "evaluation.bench_ingest", "--load-catalog", url, str(catalog)], check=True)


def _load_catalog(url: str, catalog: Path) -> None:
    from retrieval.ingest import ingest_catalog
    from retrieval.store import Store

    with Store.open(url) as store:
        ingest_catalog(catalog, store, progress=False)  # no vector index: the events ingest needs ids only


def bench_sqlite(folder: Path, platform: Path, runs: tuple[str, ...] = RUNS) -> dict:
    template = folder / "catalog.db"
    if not template.exists():  # loaded under another name first: a run stopped halfway leaves no template
        partial = folder / "catalog.db.partial"
        for stale in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            stale.unlink(missing_ok=True)
        load_catalog(f"sqlite:///{partial}", platform / "catalog.jsonl")
        partial.rename(template)
    results = {}
    for run in ("old", "new"):
        if run not in runs:
            continue
        db = folder / f"{run}.db"
        for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            stale.unlink(missing_ok=True)
        shutil.copy(template, db)
        results[run] = run_child(run, f"sqlite:///{db}", platform / "events.csv")
        if run == "old":
            db.unlink()
    if "again" in runs:
        results["again"] = run_child("again", f"sqlite:///{folder / 'new.db'}", platform / "events.csv")
    return results


def bench_postgres(url: str, platform: Path, runs: tuple[str, ...] = RUNS) -> dict:
    import psycopg

    results, schemas = {}, {}
    try:
        for run in ("old", "new"):
            if run not in runs:
                continue
            schemas[run] = f"bench_{run}_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"CREATE SCHEMA {schemas[run]}")
            run_url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schemas[run]}"
            load_catalog(run_url, platform / "catalog.jsonl")
            results[run] = run_child(run, run_url, platform / "events.csv")
        if "again" in runs:
            results["again"] = run_child("again", run_url, platform / "events.csv")
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            for schema in schemas.values():
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return results


@contextmanager
def throwaway_postgres(settings: list[str] = ()) -> Iterator[str]:
    """A PostgreSQL server on loopback, default settings but `settings` ("name=value"), run as
    `postgres` when we are root."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    bin_dir = found[-1].parent if found else Path(shutil.which("initdb") or "initdb").parent
    folder, port = Path(tempfile.mkdtemp(prefix="recassist-bench-pg-")), free_port()
    prefix = []
    if os.geteuid() == 0:  # the server refuses to run as root
        pwd.getpwnam("postgres")
        shutil.chown(folder, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]

    def tool(*args: str) -> None:
        subprocess.run(prefix + [str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, timeout=120)

    data = folder / "data"
    try:
        tool("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C")
        tool("pg_ctl", "start", "-D", str(data), "-w", "-l", str(folder / "server.log"),
             "-o", " ".join([f"-h 127.0.0.1 -p {port} -k {folder}"] + [f"-c {setting}" for setting in settings]))
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            tool("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prepare(args) -> Path:
    from evaluation.synthetic import Platform, generate

    platform = args.work_dir / f"i{args.items}-u{args.users}-e{args.events}-s{args.seed}"
    if not (platform / "done.json").exists():
        print(f"generating {platform.name} ...", file=sys.stderr, flush=True)
        written = generate(Platform(items=args.items, users=args.users, events=args.events, seed=args.seed), platform)
        (platform / "done.json").write_text(json.dumps({"seconds": written.seconds}))
    return platform


def write_later(source: Path, out: Path, last: float) -> None:
    """`source`'s events moved to begin just after `last`, sorted by time."""
    import csv

    with open(source, newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    at = header.index("timestamp")
    first = min(float(row[at]) for row in rows)
    for row in rows:
        row[at] = repr(float(row[at]) - first + last + 1.0)
    rows.sort(key=lambda row: float(row[at]))
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)


def bench_append(store: Path, folder: Path, platform: Path) -> dict:
    """Append `platform`'s events to copies of `store` in the older layout and the current one."""
    import sqlite3

    from retrieval.migrations import upgrade_events
    from retrieval.sql import Database

    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        last = conn.execute("SELECT MAX(ts) FROM events").fetchone()[0] or 0.0
        stored = conn.execute("SELECT MAX(rowid) FROM events").fetchone()[0] or 0
    later = folder / "events-later.csv"  # the same events, after the store's last one, in time order
    # In a child: this process's peak memory would be every timed child's (Linux keeps it across exec).
    subprocess.run([sys.executable, "-m", "evaluation.bench_ingest", "--make-later", str(platform / "events.csv"),
                    str(later), repr(float(last))], check=True)
    results = {"stored_before": stored}
    for layout in ("legacy", "current"):
        for name, events in (("spread", platform / "events.csv"), ("later", later)):
            db = folder / f"append-{layout}.db"
            for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                stale.unlink(missing_ok=True)
            shutil.copy(store, db)
            if layout == "current":
                database = Database(f"sqlite:///{db}")
                try:
                    results.setdefault("upgrade", upgrade_events(database))
                finally:
                    database.close()
            results[f"{layout}-{name}"] = run_child("new", f"sqlite:///{db}", events)
            db.unlink()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engines", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--postgres-url", help="an existing server to use (default: start a throwaway one)")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the throwaway server, e.g. shared_buffers=1GB (repeatable)")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "recassist-ingest",
                        help="where platforms, stores and results are kept (default: %(default)s)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="which runs (default: all; 'again' needs 'new'): at 10M events the whole-file 'old' needs ~10 GB")
    parser.add_argument("--append-to", type=Path, metavar="STORE.db",
                        help="append the events to copies of this SQLite store instead, in its layout and upgraded")
    parser.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--make-later", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--load-catalog", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_catalog:
        _load_catalog(args.load_catalog[0], Path(args.load_catalog[1]))
        return
    if args.make_later:
        write_later(Path(args.make_later[0]), Path(args.make_later[1]), float(args.make_later[2]))
        return
    if args.child:  # one timed run, one JSON line
        print(json.dumps(child(args.child, args.url, args.file)), flush=True)
        return
    platform = prepare(args)
    if args.append_to:
        folder = args.work_dir / "append"
        folder.mkdir(parents=True, exist_ok=True)
        results = bench_append(args.append_to, folder, platform)
        (folder / "results.json").write_text(json.dumps(results, indent=2))
        print(append_report(results, args))
        return
    results = {"sizes": {"items": args.items, "users": args.users, "events": args.events, "seed": args.seed},
               "cpus": os.cpu_count(), "load_average": os.getloadavg()[0], "pg_settings": args.pg_setting}
    if "sqlite" in args.engines:
        print("SQLite", file=sys.stderr, flush=True)
        results["sqlite"] = bench_sqlite(platform, platform, tuple(args.runs))
    if "postgresql" in args.engines:
        print("PostgreSQL", file=sys.stderr, flush=True)
        if args.postgres_url:
            results["postgresql"] = bench_postgres(args.postgres_url, platform, tuple(args.runs))
        else:
            with throwaway_postgres(args.pg_setting) as url:
                results["postgresql"] = bench_postgres(url, platform, tuple(args.runs))
    results["load_average_end"] = os.getloadavg()[0]
    (platform / "results.json").write_text(json.dumps(results, indent=2))
    print(report(results))


def append_report(results: dict, args) -> str:
    names = {"spread": "times spread over the log", "later": "after the log, in time order"}
    up = results["upgrade"]
    lines = [f"{args.events:,} events appended to a store of {results['stored_before']:,} (SQLite); upgrading its "
             f"layout took {up['seconds']:.1f} s", "",
             "| layout | events | seconds | events/s | peak RSS MiB | inserted | load avg |", "|---|---|---:|---:|---:|---:|---:|"]
    for layout in ("legacy", "current"):
        for name in ("spread", "later"):
            r = results[f"{layout}-{name}"]
            lines.append(f"| {'older (key on id)' if layout == 'legacy' else 'current (time, id)'} | {names[name]} | "
                         f"{r['seconds']:.1f} | {r['events_per_s']:,.0f} | {r['peak_rss_mib']:.0f} | {r['inserted']:,} | "
                         f"{r['load_average']:.1f} |")
    return "\n".join(lines)


def report(results: dict) -> str:
    s = results["sizes"]
    lines = [f"{s['events']:,} synthetic events ({s['items']:,} items, {s['users']:,} users, seed {s['seed']}); "
             f"{results['cpus']} CPUs, load average {results['load_average']:.1f} at start, "
             f"{results['load_average_end']:.1f} at the end"
             + (f"; PostgreSQL with {', '.join(results['pg_settings'])}" if results.get("pg_settings") else ""), "",
             "| engine | path | seconds | events/s | peak RSS MiB | read | inserted | duplicates | rejected | stored "
             "| load avg |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = {"old": "old (whole file, 5,000 per write)", "new": "new (streamed)", "again": "new, same file again"}
    for engine in ("sqlite", "postgresql"):
        for run, r in results.get(engine, {}).items():
            lines.append(f"| {engine} | {names[run]} | {r['seconds']:.1f} | {r['events_per_s']:,.0f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['read']:,} | {r['inserted']:,} | {r['duplicates']:,} | {r['rejected']:,} | {r['stored']:,} | "
                         f"{r['load_average']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
