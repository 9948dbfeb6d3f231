"""How much of each item's sequential row a request needs (a script, not a test).

The fit keeps each item's `SequentialModel.keep` largest transitions. This reads a published
signals version, cuts its rows further in memory to each --keep, and reports for the histories of
--users random users: how many of the top --n sequential scores stay the same, and the CPU a
request's scores take. Run it on a version fitted with rows whole (`keep=None`) to see what the
cut costs:

    python -m evaluation.bench_rows --folder /tmp/scale/big/i200000-u1000000-e10000000-s0 \\
        --version v001796629499868839-24602 --keep 200 500 1000
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="a bench_scale store folder (store.db, signals/)")
    parser.add_argument("--version", help="the signals version to read (default: the current one)")
    parser.add_argument("--keep", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--users", type=int, default=400, help="random users whose histories are scored")
    parser.add_argument("--n", type=int, default=70, help="top scores compared (a request asks for about this many)")
    parser.add_argument("--population", type=int, default=1_000_000, help="user ids are u0 .. u<population-1>")
    args = parser.parse_args(argv)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

    from retrieval.request import UserHistory
    from retrieval.sequential import SequentialModel
    from retrieval.signals import load_signals
    from retrieval.store import Store
    from retrieval.topk import top_per_row

    root = args.folder / "signals"
    if args.version:  # read that version as if it were current, without touching CURRENT
        signals = load_signals(root, version=args.version)
    else:
        signals = load_signals(root)
    matrix = signals.transitions.tocsr()
    lengths = np.diff(matrix.indptr)
    print(f"{matrix.nnz:,} entries; row length p50 {np.percentile(lengths, 50):.0f}, p99 {np.percentile(lengths, 99):.0f}, "
          f"max {lengths.max():,}; fitted with keep={signals.manifest['knobs']['sequential'].get('keep')}")
    store = Store.open(f"sqlite:///{args.folder / 'store.db'}")
    histories = [UserHistory.from_events(store.events_for_user(f"u{u}")).consumed
                 for u in random.Random(1).sample(range(args.population), args.users)]
    histories = [h for h in histories if h]

    def measure(model) -> tuple[list[list[str]], float]:
        for history in histories[:50]:  # warm
            model.scores(history, args.n)
        began = time.process_time()
        tops = [list(model.scores(history, args.n)) for history in histories]
        return tops, (time.process_time() - began) / len(histories) * 1000

    whole, whole_ms = measure(SequentialModel(keep=None).adopt(signals.item_ids, matrix, signals.index))
    print(f"| keep | entries | top {args.n} the same | scores, ms CPU a request |\n|---:|---:|---:|---:|")
    print(f"| as read | {matrix.nnz:,} | 1.000 | {whole_ms:.3f} |")
    for keep in sorted(args.keep, reverse=True):
        cut = top_per_row(matrix.copy(), keep)
        tops, ms = measure(SequentialModel(keep=keep).adopt(signals.item_ids, cut, signals.index))
        same = np.mean([len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(whole, tops)])
        print(f"| {keep:,} | {cut.nnz:,} | {same:.3f} | {ms:.3f} |", flush=True)


if __name__ == "__main__":
    main()
