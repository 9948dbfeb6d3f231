"""The product's own components under evaluation: an Engine per stage and its Retriever as a variant.

Each stage gets its own data directory whose event store holds exactly that stage's history
(validation: training events; test: training + validation), so the Retriever is fitted on
nothing it should not see. Item vectors come from the harness's cache through a caching
embedder, so building a stage store costs a Chroma insert, not a re-embedding.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation.protocols import full_ranking
from evaluation.splits import Split, Stage

log = logging.getLogger(__name__)

PRODUCT_PATH = "product Retriever.candidates(user, Request(), k=100, history=events): one vector-store query per user"


class CachedEmbedder:
    """Serves known documents from precomputed vectors and embeds anything else with `inner`."""

    def __init__(self, inner, documents: Sequence[str], vectors: np.ndarray):
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self._known = {doc: vectors[i] for i, doc in enumerate(documents)}
        self.misses = 0

    def __call__(self, texts):
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = [i for i, t in enumerate(texts) if t not in self._known]
        for i, text in enumerate(texts):
            if text in self._known:
                out[i] = self._known[text]
        if missing:
            self.misses += len(missing)
            out[missing] = self.inner([texts[i] for i in missing])
        return out


def _key(split: Split, stage: str, embedder_name: str) -> str:
    payload = "|".join([stage, embedder_name, str(split.min_count), str(sorted(split.counts.items())), split.items[0].id, split.items[-1].id])
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:12]


def stage_engine(cfg, split: Split, stage: str, embedder, *, llm=None, fresh: bool = False, llm_backend: str = "none", **settings):
    """An Engine whose store holds the split's catalog and the stage's history events (built once, reused).

    `settings` override the Engine's settings (the conversations ask the LLM for every summary)."""
    from assistant.engine import Engine
    from assistant.settings import Settings
    from retrieval.writes import write_events, write_items

    data_dir = Path(cfg.work_dir) / "engines" / f"{stage}-{_key(split, stage, embedder.name)}"
    ready = data_dir / "READY"
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    settings = Settings.load(
        env={}, data_dir=data_dir, llm_backend=llm_backend if llm is None else cfg.backend,
        embedding_backend=cfg.embedding, prompt_variant=cfg.prompt_variant or None, **settings,
    )
    engine = Engine(settings, llm=llm, embedder=embedder)
    if ready.is_file():
        return engine
    began = time.perf_counter()
    index = engine.retriever.index_items  # built before the catalog lands, so each item is embedded once
    for start in range(0, len(split.items), 512):
        write_items(engine.store, index, list(split.items[start : start + 512]))
    events = [event for user in split.users for event in user.history(stage if stage in ("valid", "test") else "test")]
    write_events(engine.store, events)
    engine.retriever.refit(engine.store)
    ready.write_text(f"built in {time.perf_counter() - began:.0f} s\n", encoding="utf-8")
    return engine


class ProductSequential:
    """The shipped SequentialModel as a batched scorer: fitted on the stage's events, read per user."""

    name = "sequential-product"

    def __init__(self, split: Split):
        self.split = split
        self.model = None

    def fit(self, stage: Stage) -> "ProductSequential":
        from retrieval.sequential import SequentialModel

        self.model = SequentialModel().fit(e for user in self.split.users for e in user.history(stage.name))
        return self

    def score(self, stage: Stage, rows: Sequence[int]) -> np.ndarray:
        from retrieval.request import UserHistory

        index = {item_id: j for j, item_id in enumerate(stage.item_ids)}
        out = np.zeros((len(rows), stage.n_items), dtype=np.float32)
        for k, row in enumerate(rows):
            user = self.split.users[row]
            # As the Retriever reads a user: every consumed item, newest last.
            recent = UserHistory.from_events(user.history(stage.name)).consumed
            for item_id, value in self.model.scores(recent, n=stage.n_items).items():
                if item_id in index:
                    out[k, index[item_id]] = value
        return out


class ProductRetriever:
    """The Retriever as the agent calls it, with an empty request: history alone decides."""

    name = "retriever"
    path = PRODUCT_PATH
    description = "the product's hybrid Retriever (content + collaborative vectors in Chroma, sequential signal), as shipped"

    def __init__(self, cfg, split: Split, embedder):
        self.cfg, self.split, self.embedder = cfg, split, embedder
        self.index = split.item_index()
        self._engines: dict[str, object] = {}
        self.outside_catalog = 0

    def prepare(self, stage: Stage) -> None:
        if stage.name not in self._engines:
            self._engines[stage.name] = stage_engine(self.cfg, self.split, stage.name, self.embedder)

    def ranked(self, stage: Stage, row: int, k: int) -> list[int]:
        from retrieval.request import Request

        engine = self._engines[stage.name]
        user = self.split.users[row]
        history = user.history(stage.name)
        candidates = engine.retriever.candidates(user.user_id, Request(), k, history=history)
        out = []
        for candidate in candidates:
            j = self.index.get(candidate.item.id)
            if j is None:
                self.outside_catalog += 1
            else:
                out.append(j)
        return out

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


def run_product_retriever(cfg, split, stages, rows, keys, want_a, results, per_user, embedder, vectors) -> None:
    """Protocol (a) for the product Retriever, per user; skipped with a reason when it is not available."""
    from evaluation.runner import latency_summary, summarize

    try:
        import retrieval.candidates  # noqa: F401
    except ImportError as exc:
        results["variants"]["retriever"] = {"description": ProductRetriever.description, "path": f"not run: {exc}", "path_short": "not run"}
        log.warning("retriever variant skipped: %s", exc)
        return
    if not want_a:
        return
    cached = CachedEmbedder(embedder, [item.document() for item in split.items], vectors)
    variant = ProductRetriever(cfg, split, cached)
    try:
        for stage_name, stage in stages.items():
            ranking = full_ranking(variant, stage, rows, keys, progress=cfg.progress)
            per_user[("a", stage_name, "retriever")] = ranking
            results["protocol_a"].setdefault(stage_name, {})["retriever"] = summarize(ranking, cfg.seed)
            if stage_name == "test":
                results["latency_ms"]["retrieve: product Retriever"] = latency_summary(ranking.latency_ms, "per user, one Chroma query each")
    finally:
        variant.close()
    results["variants"]["retriever"] = {
        "description": ProductRetriever.description,
        "path": PRODUCT_PATH + f" (MRR counts 0 beyond rank 100; {variant.outside_catalog} returned ids outside the evaluated catalog)",
        "path_short": "product, per user",
    }
