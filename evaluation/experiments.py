"""Protocol (a) experiments: which signals and knobs raise accuracy, measured without the test item.

Every candidate signal scores the whole catalog at three held-out positions per user: the
validation item (second-to-last) and the two items before it, each time refitted on what came
before that position only. One position's NDCG@10 has a standard error of about 0.01 over 610
users; three positions triple the evidence behind each choice and never touch the test item.

    python -m evaluation.experiments                 # signals alone and fused with sequential (~10 min, 2 cores,
                                                     # plus 2-7 min for the SASRec row's three fits)
    python -m evaluation.experiments --product       # the product Retriever at the same positions (~5 min)
    python -m evaluation.experiments --product --dislike-margin 0.5 --reading positive
    python -m evaluation.experiments --signals sasrec                # SASRec-CE alone and fused (torch)
    python -m evaluation.experiments --signals sasrec --sasrec hidden=128,dropout=0.5,epochs=80

Findings and the table: evaluation/reports/experiments.md.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import sparse

from core.errors import ConfigError
from evaluation import metrics, protocols, scorers
from evaluation.splits import Split, Stage, UserSplit

POSITIONS = (0, 1, 2)  # 0 = the validation item; k = the k-th training item from the end
FUSION_WEIGHTS = (0.1, 0.2, 0.4, 0.7)


def held_out(split: Split, k: int) -> Split:
    """The split moved k items back: train[-k] is held out, the model sees train[:-k] (k=0: as is)."""
    if k == 0:
        return split
    users = [UserSplit(u.user_id, u.train[:-k], u.train[-k], [*u.train, u.valid][len(u.train) - k + 1]) for u in split.users]
    return Split(split.items, users, split.min_count, {**split.counts, "held_out_position": k})


def accuracy(scores: np.ndarray, stage: Stage, keys: np.ndarray) -> tuple[float, float]:
    """(Recall@10, NDCG@10) of the stage's held-out items."""
    ranks = metrics.target_ranks(scores, stage.targets, stage.histories, keys)
    return float(metrics.recall_at(ranks, 10).mean()), float(metrics.ndcg_at(ranks, 10).mean())


# --- signals that are not (yet) evaluation variants -------------------------------------------


class ProductSequential:
    """retrieval.sequential.SequentialModel fitted on the stage, fed each user's history as read."""

    name = "sequential"

    def __init__(self, reading: str = "consumed", **knobs):
        self.reading, self.knobs = reading, knobs

    def fit(self, stage: Stage) -> "ProductSequential":
        from retrieval.sequential import SequentialModel

        self.model = SequentialModel(**self.knobs).fit_sequences([h.tolist() for h in stage.histories])
        self.columns = np.asarray(self.model.item_ids, dtype=np.int64)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        for n, row in enumerate(rows):
            history = stage.histories[row]
            if self.reading == "positive":  # the reading before: items rated 2.5 or lower left out
                history = history[stage.weights[row] >= 0]
            out[n, self.columns] = self.model.score_array(history.tolist())
        return out


class ProductCollab:
    """retrieval.collab: SVD item vectors, the user's decayed and rating-weighted mean, cosine."""

    name = "collab-svd"

    def __init__(self, dim: int = 64, last: int = 20, decay: float = 0.8):
        self.dim, self.last, self.decay = dim, last, decay

    def fit(self, stage: Stage) -> "ProductCollab":
        from retrieval.collab import factorize

        positive = scorers.interaction_matrix(stage, binary=False)
        positive.data = (positive.data > 0).astype(np.float64)
        positive.eliminate_zeros()
        self.vectors = factorize(positive.tocsr(), self.dim)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        from retrieval.collab import user_vector

        table = {j: self.vectors[j] for j in range(len(self.vectors))}
        out = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        for n, row in enumerate(rows):
            history = list(zip(stage.histories[row].tolist(), stage.weights[row].tolist()))
            vector = user_vector(history, table, decay=self.decay, last=self.last)
            if vector is not None:
                out[n] = self.vectors @ vector
        return out


class RecentPopularity:
    """How many interactions each item had in the time before "now" (decay tau).

    now = the user's latest interaction, or with at="request" the time of the held-out one: a live
    system knows when it is asked. Only interactions strictly before now count, so nothing leaks.
    """

    name = "recent-popularity"

    def __init__(self, tau_days: float = 30.0, horizon: float = 5.0, at: str = "latest"):
        self.tau, self.horizon, self.at = tau_days * 86400.0, horizon, at

    def fit(self, stage: Stage) -> "RecentPopularity":
        times, items = np.concatenate(stage.times), np.concatenate(stage.histories)
        order = np.argsort(times, kind="stable")
        self.times, self.items = times[order], items[order]
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        for n, row in enumerate(rows):
            if self.at == "request":
                now = stage.target_times[row]
                hi = np.searchsorted(self.times, now, side="left")
            else:
                now = stage.times[row][-1]  # nothing after the user's latest interaction is counted
                hi = np.searchsorted(self.times, now, side="right")
            lo = np.searchsorted(self.times, now - self.horizon * self.tau)
            weights = np.exp(-(now - self.times[lo:hi]) / self.tau)
            out[n] = np.bincount(self.items[lo:hi], weights=weights, minlength=stage.n_items)
        return out


class PairContext:
    """Second order: what followed the user's last two items, in that order, in other histories."""

    name = "pair-context"

    def __init__(self, window: int = 5, step_decay: float = 0.8):
        self.window, self.step_decay = window, step_decay

    def fit(self, stage: Stage) -> "PairContext":
        follows: dict[tuple[int, int], Counter] = defaultdict(Counter)
        for history in stage.histories:
            h = history.tolist()
            for t in range(2, len(h)):
                for gap, item in enumerate(h[t : t + self.window]):
                    follows[(h[t - 2], h[t - 1])][item] += self.step_decay**gap
        self.follows = follows
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        for n, row in enumerate(rows):
            h = stage.histories[row]
            for item, value in self.follows.get((int(h[-2]), int(h[-1])), {}).items():
                out[n, item] = value
        return out


class NextItemRidge:
    """SLIT-style closed form: ridge regression from a decayed profile of the last items to the next item."""

    name = "next-item-ridge"

    def __init__(self, l2: float = 100.0, last: int = 10, decay: float = 0.8):
        self.l2, self.last, self.decay = l2, last, decay

    def _profile(self, prefixes: list[np.ndarray], n_items: int) -> sparse.csr_matrix:
        rows, cols, vals = [], [], []
        for n, prefix in enumerate(prefixes):
            recent = prefix[-self.last :]
            rows.append(np.full(len(recent), n))
            cols.append(recent)
            vals.append(self.decay ** np.arange(len(recent))[::-1])
        return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(prefixes), n_items))

    def fit(self, stage: Stage) -> "NextItemRidge":
        prefixes = [h[:t] for h in stage.histories for t in range(1, len(h))]
        nexts = np.concatenate([h[1:] for h in stage.histories])
        x = self._profile(prefixes, stage.n_items)
        y = sparse.csr_matrix((np.ones(len(nexts)), (np.arange(len(nexts)), nexts)), shape=(len(nexts), stage.n_items))
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        self.weights = np.linalg.solve(gram, (x.T @ y).toarray()).astype(np.float32)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        return np.asarray(self._profile([stage.histories[r] for r in rows], stage.n_items) @ self.weights)


class SASRec:
    """evaluation.sasrec.SASRecModel (full-softmax CE) trained on the stage's histories."""

    name = "sasrec"
    # Its probabilities peak sharper than the sequential scores, so heavier weights are in reach too.
    fusion_weights = (*FUSION_WEIGHTS, 1.0, 1.5)

    def __init__(self, **knobs):
        self.knobs = knobs

    def fit(self, stage: Stage) -> "SASRec":
        from evaluation.sasrec import SASRecModel

        self.model = SASRecModel(**self.knobs).fit_sequences([h.tolist() for h in stage.histories])
        self.columns = np.asarray(self.model.item_ids, dtype=np.int64)
        seconds = self.model.epoch_seconds
        print(f"  sasrec {self.knobs}: {len(seconds)} epochs, {np.mean(seconds or [0]):.2f} s each, {sum(seconds):.0f} s", flush=True)
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        out[:, self.columns] = self.model.score_matrix([stage.histories[r].tolist() for r in rows])
        return out


def signals(vectors: np.ndarray | None, sasrec: dict | None = None) -> dict[str, Callable[[], object]]:
    """Every candidate, by the name the experiment log uses."""
    out = {
        "sequential (product SequentialModel)": lambda: ProductSequential(),
        "sequential, positive-only reading (before)": lambda: ProductSequential(reading="positive"),
        "sequential, window 15, backward 0.5": lambda: ProductSequential(window=15, backward=0.5),
        "sequential (numpy, LlamaRec-tuned: window 5)": lambda: scorers.Sequential(window=5, step_decay=1.0, backward=0.3, last=10, decay=0.8),
        "EASE, whole history (l2 100)": lambda: scorers.EASE(l2=100.0),
        "EASE, recent (l2 300, last 20, decay 0.9)": lambda: scorers.EASE(l2=300.0, last=20, decay=0.9),
        "EASE, recent (l2 100, last 10, decay 0.8)": lambda: scorers.EASE(l2=100.0, last=10, decay=0.8),
        "ItemKNN, recent (last 10, decay 0.8)": lambda: scorers.ItemKNN(last=10, decay=0.8),
        "collab SVD (product collab.py)": lambda: ProductCollab(),
        "next-item ridge (SLIT)": lambda: NextItemRidge(),
        "pair context (last two items)": lambda: PairContext(),
        "recent popularity (30 days before)": lambda: RecentPopularity(30.0),
        "recent popularity (1 day before)": lambda: RecentPopularity(1.0),
        "request-time popularity (30 days before the held-out item's time)": lambda: RecentPopularity(30.0, at="request"),
        "request-time popularity (90 days before the held-out item's time)": lambda: RecentPopularity(90.0, at="request"),
        "popularity": lambda: scorers.Popularity(),
    }
    if sasrec:  # the knobs being tried replace the defaults' row
        out[f"SASRec-CE ({_knob_text(sasrec)})"] = lambda: SASRec(**sasrec)
    else:
        out["SASRec-CE (evaluation.sasrec defaults)"] = lambda: SASRec()
    if vectors is not None:
        out["content (MiniLM, last 5)"] = lambda: scorers.Content(vectors, last=5, decay=0.8)
    return out


def run_signals(split: Split, keys: np.ndarray, vectors: np.ndarray | None,
                candidates: dict[str, Callable[[], object]] | None = None) -> list[dict]:
    """Each signal alone and fused (max-scaled, best weight) with the product sequential signal (the first)."""
    stages = [held_out(split, k).stage("valid") for k in POSITIONS]
    rows = np.arange(len(split.users))
    table = []
    base: list[np.ndarray] = []
    for name, make in (candidates or signals(vectors)).items():
        began = time.perf_counter()
        instances = [make() for _ in stages]
        matrices = [scorers.scale_rows(signal.fit(stage).score(stage, rows)) for signal, stage in zip(instances, stages)]
        alone = [accuracy(m, stage, keys) for m, stage in zip(matrices, stages)]
        entry = {"signal": name, "alone": alone, "seconds": time.perf_counter() - began}
        if not base:
            base = matrices
        else:
            weights = getattr(instances[0], "fusion_weights", FUSION_WEIGHTS)
            tried = {w: [accuracy(b + w * m, stage, keys) for b, m, stage in zip(base, matrices, stages)] for w in weights}
            weight = max(tried, key=lambda w: np.mean([n for _, n in tried[w]]))
            entry.update(fused_weight=weight, fused=tried[weight])
        table.append(entry)
        print(_row(entry), flush=True)
    return table


def run_product(split: Split, keys: np.ndarray, work_dir: Path, vectors: np.ndarray) -> list[tuple[float, float]]:
    """The product Retriever (empty request, history only) at each held-out position."""
    from evaluation.product import CachedEmbedder, ProductRetriever
    from evaluation.runner import EvalConfig
    from retrieval.embeddings import create_embedder

    embedder = CachedEmbedder(create_embedder("minilm"), [item.document() for item in split.items], vectors)
    cfg = EvalConfig(out=work_dir / "unused", work_dir=work_dir, progress=False)
    out = []
    for k in POSITIONS:
        moved = held_out(split, k)
        variant = ProductRetriever(cfg, moved, embedder)
        try:
            stage = moved.stage("valid")
            ranking = protocols.full_ranking(variant, stage, np.arange(len(moved.users)), keys)
        finally:
            variant.close()
        acc = ranking.accuracy()
        out.append((float(acc["Recall@10"].mean()), float(acc["NDCG@10"].mean())))
        print(f"product Retriever, position {k}: Recall@10 {out[-1][0]:.4f} NDCG@10 {out[-1][1]:.4f}", flush=True)
    mean = np.mean(out, axis=0)
    print(f"product Retriever, mean of {len(POSITIONS)} positions: Recall@10 {mean[0]:.4f} NDCG@10 {mean[1]:.4f}")
    return out


def chosen(candidates: dict[str, Callable[[], object]], wanted: str | None) -> dict[str, Callable[[], object]]:
    """The first candidate (the fusion base) and those whose name contains one of the comma-separated words."""
    if not wanted:
        return candidates
    words = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    names = list(candidates)
    keep = [names[0]] + [n for n in names[1:] if any(w in n.lower() for w in words)]
    if len(keep) == 1 and not any(w in names[0].lower() for w in words):
        raise ConfigError(f"--signals {wanted!r} matches no signal; names are: {', '.join(names)}")
    return {n: candidates[n] for n in keep}


def parse_knobs(text: str) -> dict:
    """'hidden=128,dropout=0.5' -> {'hidden': 128, 'dropout': 0.5} (ints stay ints)."""
    knobs = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--sasrec: {part!r} is not KNOB=VALUE (e.g. hidden=128,dropout=0.5)")
        try:
            knobs[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ConfigError(f"--sasrec: {key.strip()}={value!r} is not a number") from None
    return knobs


def _knob_text(knobs: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in knobs.items())


def _row(entry: dict) -> str:
    def cell(values):
        return f"{values[0][0]:.4f} / {values[0][1]:.4f} | {np.mean([r for r, _ in values]):.4f} / {np.mean([n for _, n in values]):.4f}"

    fused = f"{cell(entry['fused'])} (w {entry['fused_weight']})" if "fused" in entry else "- | -"
    return f"| {entry['signal']} | {cell(entry['alone'])} | {fused} | {entry['seconds']:.0f} s |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--product", action="store_true", help="measure the product Retriever instead of the batched signals")
    parser.add_argument("--dislike-margin", type=float, help="override retrieval.fusion.DISLIKE_MARGIN (product run)")
    parser.add_argument("--reading", choices=("consumed", "positive"), default="consumed",
                        help="positive: feed the product's sequential signal only items with weight >= 0 (the reading before)")
    parser.add_argument("--signals", metavar="WORDS",
                        help="only signals whose name contains one of these comma-separated words (the product sequential base always runs)")
    parser.add_argument("--sasrec", metavar="KNOBS", type=parse_knobs,
                        help="add a SASRec-CE row with these evaluation.sasrec.SASRecModel knobs, e.g. hidden=128,dropout=0.5,epochs=80")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "recassist-eval")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from evaluation.itemvectors import content_vectors
    from evaluation.runner import EvalConfig, load_data
    from evaluation.splits import leave_one_out
    from retrieval.embeddings import create_embedder

    items, events, _ = load_data(EvalConfig(out=args.work_dir / "unused", work_dir=args.work_dir))
    split = leave_one_out(items, events, min_count=5)
    keys = protocols.tie_key(len(split.items), args.seed)
    needs_vectors = args.product or not args.signals or "content" in args.signals.lower()
    vectors = content_vectors(split.items, create_embedder("minilm"), args.work_dir / "vectors") if needs_vectors else None
    if not args.product:
        candidates = chosen(signals(vectors, args.sasrec), args.signals)
        print("| signal | alone: valid R@10 / NDCG@10 | 3 positions | + sequential: valid | 3 positions | time |")
        run_signals(split, keys, vectors, candidates)
        return
    import retrieval.candidates as candidates
    import retrieval.fusion as fusion

    if args.dislike_margin is not None:
        fusion.DISLIKE_MARGIN = args.dislike_margin
    if args.reading == "positive":
        read = candidates.UserHistory.from_events

        def positive_reading(events):
            history = read(events)
            negative = {i for i, _ in history.disliked}
            history.consumed = [i for i in history.consumed if i not in negative]
            return history

        candidates.UserHistory.from_events = positive_reading
    run_product(split, keys, args.work_dir, vectors)


if __name__ == "__main__":
    main()
