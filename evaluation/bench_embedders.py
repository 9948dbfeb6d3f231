"""Embedders side by side: speed on the demo catalog, and a Chinese / cross-lingual check.

    python -m evaluation.bench_embedders [--embedders minilm e5 hash] [--repeats 3]

Speed: the demo's 302 book descriptions embedded as passages (median of the repeats, after one
warm-up call). The check: three plot lines we wrote (a detective story, lovers in a war, an
astronaut), in Chinese and in English, and one short request for each in both languages: how many
of the 3 requests put their own plot first, for each pairing of languages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib.resources import files

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


def main(argv: list[str] | None = None) -> None:
    from retrieval.embeddings import create_embedder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embedders", nargs="*", default=["minilm", "e5", "hash"])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    books = files("assistant.demo_data").joinpath("books.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line).get("text") or json.loads(line)["title"] for line in books if line.strip()]
    pairs = [(d, q) for d in ("zh", "en") for q in ("zh", "en")]
    print(f"| embedder | passages/s ({len(texts)} demo descriptions) | " + " | ".join(f"{d} plots, {q} requests" for d, q in pairs) + " |")
    print("| --- | ---: |" + " ---: |" * len(pairs))
    for name in args.embedders:
        embedder = create_embedder(name)
        embedder(texts[:8])  # loads the model
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            embedder(texts)
            times.append(time.perf_counter() - start)
        rate = len(texts) / statistics.median(times)
        checks = [f"{hits(embedder, PLOTS[d], QUERIES[q])} / 3" for d, q in pairs]
        print(f"| {embedder.name} | {rate:.0f} | " + " | ".join(checks) + " |")


if __name__ == "__main__":
    main()
