"""Freshness on a news platform, by replay: does decaying old items and following new events pay?

    python -m evaluation.news --items 2000 --users 1500 --events 40000 --days 30 --test-hours 48 \
        --requests 400 --half-life-hours 24 --work-dir /tmp/news --out report.json

A synthetic news platform (`evaluation.synthetic --news`: items published across the span, read
in their first days) is split in time: the signals are fitted on the events before the last
`test_hours`. The rest is replayed in time order: before each request, every event before it is
stored (the user's own history counts at once in every variant, as in the product); the request
is `Retriever.candidates(user, Request(), k=20)` at that moment, and the answer is the user's next
positive event on an item they had not had (users without training events are cold starts).

Variants, all on the same requests:
- `fit`: the signals of the fit at the split, nothing else (the product before live counters);
- `live`: popularity, trending and co-occurrence follow the replayed events (`retrieval.live`);
- `fit+fresh`, `live+fresh`: the same with `retrieval.freshness` at `half_life_hours`, ages
  counted from the request's time.

Reported per variant: Recall@10, Recall@20, NDCG@10 and timeliness (`evaluation.timeliness`) of
the top 10.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.synthetic import END, Platform, generate, news_periods
from evaluation.timeliness import HOUR, RECENT_HOURS, timeliness

VARIANTS = ("fit", "live", "fit+fresh", "live+fresh")


def requests_of(events, cutoff: float, n: int, seed: int) -> list[tuple[float, str, str]]:
    """(time, user, item): each user's first positive event after `cutoff` on an item not had before, n sampled."""
    had: dict[str, set[str]] = {}
    chosen: dict[str, tuple[float, str, str]] = {}
    for event in sorted(events, key=lambda e: (e.timestamp, e.user_id)):
        if not event.item_id:
            continue
        if event.timestamp >= cutoff and event.user_id not in chosen and event.weight > 0 \
                and event.item_id not in had.get(event.user_id, ()):
            chosen[event.user_id] = (event.timestamp, event.user_id, event.item_id)
        had.setdefault(event.user_id, set()).add(event.item_id)
    picked = list(chosen.values())
    if len(picked) > n:
        rows = np.random.default_rng(seed).choice(len(picked), size=n, replace=False)
        picked = [picked[r] for r in sorted(rows)]
    return sorted(picked)


@dataclass
class Prepared:
    """A platform split at the cutoff: the training store and fit, the events to replay, the requests."""

    base: Path
    signals: object
    embedder: object
    chroma: object
    content: object
    replay: list
    requests: list[tuple[float, str, str]]
    published: dict[str, float | None]
    summary: dict


def run(args) -> dict:
    """Every variant of `args.variants` on one prepared platform."""
    prepared = prepare(args)
    results = {"platform": prepared.summary, "variants": {}}
    ranks = {}
    for name in args.variants:
        results["variants"][name] = replay(prepared, name, args.half_life_hours)
        ranks[name] = np.array(results["variants"][name].pop("ranks"))
        print(f"{name:12s} {_line(results['variants'][name])}", file=sys.stderr, flush=True)
    results["paired"] = _paired(ranks, args.seed)
    return results


def _paired(ranks: dict[str, np.ndarray], seed: int) -> dict:
    """Recall@10 and @20 differences on the same requests, with bootstrap intervals."""
    from evaluation.bootstrap import paired_difference

    pairs = [("fit+fresh", "fit"), ("live+fresh", "live"), ("live", "fit"), ("live+fresh", "fit+fresh")]
    out = {}
    for a, b in pairs:
        if a in ranks and b in ranks:
            out[f"{a} - {b}"] = {f"Recall@{k}": str(paired_difference(((ranks[a] > 0) & (ranks[a] <= k)).astype(float),
                                                                       ((ranks[b] > 0) & (ranks[b] <= k)).astype(float), seed=seed))
                                 for k in (10, 20)}
    return out


def prepare(args) -> Prepared:
    from retrieval.embeddings import create_embedder
    from retrieval.fitting import fit_signals
    from retrieval.ingest import read_catalog, read_events
    from retrieval.store import Store
    from retrieval.vectors import VectorIndex, content_collection_name, open_chroma

    work = Path(args.work_dir)
    platform = Platform(items=args.items, users=args.users, events=args.events, seed=args.seed, days=args.days,
                        news=True, periods=news_periods(args.days))
    written = generate(platform, work / "platform", progress=False)
    items = read_catalog(written.catalog).records
    events = read_events(written.events).records
    cutoff = END - args.test_hours * HOUR
    train = [e for e in events if e.timestamp < cutoff]
    replay = sorted((e for e in events if e.timestamp >= cutoff), key=lambda e: (e.timestamp, e.id))
    requests = requests_of(events, cutoff, args.requests, args.seed)
    published = {item.id: item.published_at for item in items}

    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    embedder = create_embedder(args.embedding)
    chroma = open_chroma("persistent", path=str(base / "chroma"))
    content = VectorIndex(chroma, content_collection_name(embedder), embedder)
    with Store.open(f"sqlite:///{base / 'train.db'}") as store:
        store.upsert_items(items)
        store.add_events(train)
        from retrieval.candidates import Retriever

        Retriever(store, embedder, content).index_items(items)
        signals = fit_signals(store)
    trained_users = {e.user_id for e in train}
    summary = {"items": len(items), "events": len(events), "train_events": len(train), "replayed_events": len(replay),
               "requests": len(requests), "cold_requests": sum(1 for _, u, _ in requests if u not in trained_users),
               "answer_median_age_h": float(np.median([(t - published[i]) / HOUR for t, _, i in requests])) if requests else None}
    return Prepared(base, signals, embedder, chroma, content, replay, requests, published, summary)


def replay(prepared: Prepared, name: str, half_life_hours: float = 24.0) -> dict:
    """One variant (see VARIANTS) replayed on a copy of the training store."""
    from retrieval.candidates import Retriever
    from retrieval.freshness import Freshness
    from retrieval.live import LiveCounters
    from retrieval.request import Request
    from retrieval.sequential import SequentialModel
    from retrieval.store import Store
    from retrieval.vectors import VectorIndex

    p = prepared
    path = p.base.parent / f"{name.replace('+', '-')}.db"
    shutil.copy(p.base / "train.db", path)
    now = {"t": 0.0}
    store = Store.open(f"sqlite:///{path}")
    try:
        # The collaborative vectors are served from the adopted signals' table; the index is never queried.
        retriever = Retriever(store, p.embedder, p.content, VectorIndex(p.chroma, "collab-unused", None), SequentialModel())
        if name.startswith("live"):
            LiveCounters(store, poll_s=float("inf")).attach(retriever)
        if name.endswith("+fresh"):
            retriever.freshness = Freshness(store, half_life_hours, clock=lambda: now["t"])
        retriever.adopt(p.signals)
        ranks, ages, latency, position = [], [], [], 0
        began = time.perf_counter()
        for t, user, target in p.requests:
            end = position
            while end < len(p.replay) and p.replay[end].timestamp < t:
                end += 1
            if end > position:
                store.add_events(p.replay[position:end])
                position = end
                if retriever.live is not None:
                    retriever.live.poll()
            now["t"] = t
            step = time.perf_counter()
            found = [c.item.id for c in retriever.candidates(user, Request(), k=20)]
            latency.append(time.perf_counter() - step)
            ranks.append(found.index(target) + 1 if target in found else 0)
            ages.append(np.array([(t - p.published[i]) / HOUR for i in found[:10] if p.published.get(i) is not None]))
        ranks = np.array(ranks)
        hit10, hit20 = (ranks > 0) & (ranks <= 10), ranks > 0
        ndcg = np.where(hit10, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
        return {"Recall@10": float(hit10.mean()), "Recall@20": float(hit20.mean()), "NDCG@10": float(ndcg.mean()),
                "timeliness": timeliness(ages, RECENT_HOURS), "candidates_ms_p50": 1000 * float(np.median(latency)),
                "ranks": ranks.tolist(),
                "seconds": time.perf_counter() - began}
    finally:
        store.close()


def _line(v: dict) -> str:
    t = v["timeliness"]
    share = next((x for k, x in t.items() if k.startswith("share_within_")), float("nan"))
    return (f"Recall@10 {v['Recall@10']:.3f}  Recall@20 {v['Recall@20']:.3f}  NDCG@10 {v['NDCG@10']:.3f}  "
            f"median age {t.get('median_age_h', float('nan')):.1f} h  mean age {t.get('mean_age_h', float('nan')):.1f} h  "
            f"within {RECENT_HOURS:g} h {share:.3f}  ({v['seconds']:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-hours", type=float, default=48.0, help="the replayed span at the end of the log")
    parser.add_argument("--requests", type=int, default=400, help="requests sampled in the replayed span")
    parser.add_argument("--half-life-hours", type=float, default=24.0)
    parser.add_argument("--embedding", default="hash", help="embedder for the content vectors (default: hash)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args)
    results["command"] = "python -m evaluation.news " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
