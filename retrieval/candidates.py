"""Hybrid candidate generation: history, request text, named items, collaborative and sequential
signals and popularity, fused into one scored list where every candidate carries its evidence."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from retrieval.collab import fit_item_factors
from retrieval.records import Candidate, Event, Evidence, Item
from retrieval.sequential import SequentialModel
from retrieval.vectors import VectorIndex

HALF_LIFE_EVENTS = 15  # a positive event 15 events ago counts half as much as the newest
NOT_SEEN_TYPES = {"search"}  # event types that do not mark an item as seen

DEFAULT_WEIGHTS = {
    "history": 1.0,
    "query": 1.5,
    "seed": 1.5,
    "collab": 0.5,
    "sequential": 0.7,
    "popularity": 0.15,
}

_STOP = set(
    "a an the and or of to in on for with by from about like something anything some any more less "
    "me my i you it is are be want would love loved book books novel novels film films movie movies "
    "story stories please recommend read watch".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Request:
    """What to retrieve for: request text, filters, items named as seeds, and options."""

    query: str = ""
    categories: list[str] = field(default_factory=list)  # any of these
    exclude_categories: list[str] = field(default_factory=list)
    creators: list[str] = field(default_factory=list)
    exclude_creators: list[str] = field(default_factory=list)
    year_min: int | None = None
    year_max: int | None = None
    exclude_ids: set[str] = field(default_factory=set)
    seed_item_ids: list[str] = field(default_factory=list)
    include_seen: bool = False
    diversity: float = 0.0  # 0 = pure relevance; 0.3 = MMR that trades some relevance for variety
    extra_filters: dict = field(default_factory=dict)  # platform metadata, equality

    def accepts(self, item: Item) -> bool:
        cats = {c.lower() for c in item.categories}
        if self.categories and not cats & {c.lower() for c in self.categories}:
            return False
        if cats & {c.lower() for c in self.exclude_categories}:
            return False
        creator = (item.creator or "").lower()
        if self.creators and creator not in {c.lower() for c in self.creators}:
            return False
        if creator and creator in {c.lower() for c in self.exclude_creators}:
            return False
        if self.year_min is not None and (item.year is None or item.year < self.year_min):
            return False
        if self.year_max is not None and (item.year is None or item.year > self.year_max):
            return False
        return all(item.extra.get(key) == value for key, value in self.extra_filters.items())

    def is_filtered(self) -> bool:
        return bool(
            self.categories or self.exclude_categories or self.creators or self.exclude_creators
            or self.year_min is not None or self.year_max is not None or self.extra_filters
        )


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def item_metadata(item: Item) -> dict:
    """Chroma metadata must be scalars: categories become '|a|b|'."""
    meta = {"title": item.title[:500], "categories": "|" + "|".join(item.categories) + "|"}
    if item.year is not None:
        meta["year"] = int(item.year)
    if item.creator:
        meta["creator"] = item.creator
    if item.popularity is not None:
        meta["popularity"] = float(item.popularity)
    return meta


class Retriever:
    """Generates candidates for a user and a request from the store and the vector indexes."""

    def __init__(
        self,
        store,
        embedder,
        content: VectorIndex,
        collab: VectorIndex | None = None,
        sequential: SequentialModel | None = None,
        weights: dict | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.content = content
        self.collab = collab
        self.sequential = sequential
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self._popular: list[tuple[str, float]] = []
        self.fitted_at: float | None = None
        self.behaviour_confidence = 1.0

    # --- keeping the indexes in step with the store ---------------------------------------

    def index_items(self, items: list[Item], batch_size: int = 256) -> None:
        """Embed items and upsert their content vectors: retrievable right after this returns."""
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            vectors = self.embedder([item.document() for item in batch])
            self.content.upsert([i.id for i in batch], vectors, metadatas=[item_metadata(i) for i in batch])
        self._popular = []  # new items may change the popularity fallback

    def refit(self, store=None) -> None:
        """Recompute popularity, collaborative vectors and sequential transitions from the events."""
        store = store or self.store
        events = list(store.iter_events())
        counts = store.item_popularity()
        top = max(counts.values(), default=0) or 1.0
        popularity: dict[str, float] = {}
        for item in store.iter_items():
            prior = item.popularity if item.popularity is not None else 0.0
            popularity[item.id] = 0.5 * counts.get(item.id, 0) / top + 0.5 * min(max(prior, 0.0), 1.0)
        self._popular = sorted(popularity.items(), key=lambda x: -x[1])[:500]
        # Co-occurrence signals are noise on sparse data (a handful of users): shrink their
        # weight until there are several interactions per item.
        self.behaviour_confidence = min(1.0, len(events) / max(1, len(popularity)) / 5.0)
        if self.sequential is not None:
            self.sequential.fit(events)
        if self.collab is not None:
            ids, vectors = fit_item_factors(events)
            self.collab.reset()
            if ids:
                self.collab.upsert(ids, vectors)
        self.fitted_at = time.time()

    def popular(self, n: int) -> list[tuple[str, float]]:
        if not self._popular:
            counts = self.store.item_popularity()
            top = max(counts.values(), default=0) or 1.0
            scored = {
                item.id: 0.5 * counts.get(item.id, 0) / top + 0.5 * (item.popularity or 0.0)
                for item in self.store.iter_items()
            }
            self._popular = sorted(scored.items(), key=lambda x: -x[1])[:500]
        return self._popular[:n]

    # --- candidates ---------------------------------------------------------------------------

    def candidates(self, user_id: str, request: Request, k: int = 20, history: list[Event] | None = None) -> list[Candidate]:
        """The k best items for this user and request, each with the evidence that found it."""
        history = self.store.events_for_user(user_id) if history is None else history
        positives, negatives, seen = _split_history(history)
        fetch = max(4 * k, 60) * (4 if request.is_filtered() else 1)
        signals: dict[str, dict[str, float]] = {}

        vectors = self.content.get_vectors([i for i, _ in positives] + [i for i, _ in negatives] + list(request.seed_item_ids))
        liked = [(i, w) for i, w in positives if i in vectors]
        if liked:
            profile = sum(w * vectors[i] for i, w in liked)
            profile = profile - 0.5 * sum(abs(w) * vectors[i] for i, w in negatives if i in vectors)
            signals["history"] = dict(self.content.query(_unit(profile), fetch))
        if request.query.strip():
            query_vector = self.embedder([request.query])[0]
            signals["query"] = dict(self.content.query(query_vector, fetch))
        seeds = [vectors[i] for i in request.seed_item_ids if i in vectors]
        if seeds:
            signals["seed"] = dict(self.content.query(_unit(sum(seeds)), fetch))
        if self.sequential is not None and positives:
            signals["sequential"] = self.sequential.scores([i for i, _ in sorted(positives, key=lambda x: x[1])], fetch)
        if self.collab is not None and liked:
            cvecs = self.collab.get_vectors([i for i, _ in liked])
            if cvecs:
                signals["collab"] = dict(self.collab.query(_unit(sum(w * cvecs[i] for i, w in liked if i in cvecs)), fetch))
        cold = not liked and not seeds
        signals["popularity"] = dict(self.popular(fetch if cold and not request.query else max(fetch // 2, 20)))

        weights = dict(self.weights)
        weights["sequential"] *= self.behaviour_confidence
        weights["collab"] *= self.behaviour_confidence
        if request.query.strip() and "history" in signals:
            weights["history"] *= 0.6  # the request steers, history flavours
        if cold:
            weights["popularity"] = 0.6 if request.query.strip() else 1.0

        fused: dict[str, float] = {}
        contributions: dict[str, dict[str, float]] = {}
        for name, scores in signals.items():
            top = max(scores.values(), default=0.0)
            if top <= 0:
                continue
            for item_id, score in scores.items():
                part = weights.get(name, 0.0) * max(score, 0.0) / top
                fused[item_id] = fused.get(item_id, 0.0) + part
                contributions.setdefault(item_id, {})[name] = round(float(score), 4)

        drop = set(request.exclude_ids) | set(request.seed_item_ids) | {i for i, _ in negatives}
        if not request.include_seen:
            drop |= seen
        pool_ids = [i for i in sorted(fused, key=lambda i: -fused[i]) if i not in drop][: max(fetch, 3 * k)]
        items = self.store.get_items(pool_ids)
        pool = [i for i in pool_ids if i in items and request.accepts(items[i])]
        if len(pool) < k and request.is_filtered():
            pool += self._filtered_fill(request, drop | set(pool), k - len(pool), items)
        if not pool:
            return []

        pool_vectors = self.content.get_vectors(pool)
        disliked_vectors = np.array([vectors[i] for i, _ in negatives if i in vectors])
        if len(disliked_vectors) and pool_vectors:
            # Near copies of disliked items are pushed down, not only the disliked items themselves.
            for item_id in pool:
                if item_id in pool_vectors:
                    closest = float(np.max(disliked_vectors @ pool_vectors[item_id]))
                    fused[item_id] = fused.get(item_id, 0.0) - 1.5 * max(0.0, closest - 0.5)
        pool.sort(key=lambda i: -fused.get(i, 0.0))
        chosen = _mmr(pool, fused, pool_vectors, k, request.diversity) if request.diversity > 0 else pool[:k]

        liked_items = self.store.get_items([i for i, _ in liked[-20:]])
        query_words = words(request.query)
        out = []
        for item_id in chosen:
            item = items[item_id]
            out.append(Candidate(item, float(fused.get(item_id, 0.0)), self._evidence(item, pool_vectors.get(item_id), liked, vectors, liked_items, query_words, contributions.get(item_id, {}))))
        return out

    def _filtered_fill(self, request: Request, exclude: set[str], n: int, items: dict) -> list[str]:
        """Strict filters can empty the fused pool: scan the catalog for matching items by popularity."""
        extra = []
        for item_id, _ in self.popular(500):
            if item_id in exclude:
                continue
            item = items.get(item_id) or self.store.get_item(item_id)
            if item is not None and request.accepts(item):
                items[item_id] = item
                extra.append(item_id)
                if len(extra) >= n:
                    return extra
        for item in self.store.iter_items():
            if item.id not in exclude and item.id not in extra and request.accepts(item):
                items[item.id] = item
                extra.append(item.id)
                if len(extra) >= n:
                    break
        return extra

    def _evidence(self, item, vector, liked, vectors, liked_items, query_words, signals) -> Evidence:
        near = []
        if vector is not None and liked:
            sims = sorted(((float(vectors[i] @ vector), i) for i, _ in liked if i in vectors), reverse=True)[:2]
            near = [(i, liked_items[i].title, s) for s, i in sims if i in liked_items and s > 0.2]
        liked_cats = {c for i in liked_items.values() for c in i.categories}
        liked_creators = {i.creator for i in liked_items.values() if i.creator}
        doc_words = words(item.document())
        return Evidence(
            near_history=near,
            matched_words=sorted(query_words & doc_words),
            shared_categories=[c for c in item.categories if c in liked_cats],
            shared_creators=[item.creator] if item.creator in liked_creators else [],
            signals=signals,
        )


def _split_history(history: list[Event]) -> tuple[list[tuple[str, float]], list[tuple[str, float]], set[str]]:
    """Positive (item, recency-weighted weight) oldest first, negatives, and every item seen."""
    net: dict[str, float] = {}
    order: dict[str, int] = {}
    seen: set[str] = set()
    item_events = [e for e in history if e.item_id]
    n = len(item_events)
    for position, event in enumerate(item_events):
        if event.type not in NOT_SEEN_TYPES:
            seen.add(event.item_id)
        decay = 0.5 ** ((n - 1 - position) / HALF_LIFE_EVENTS)
        net[event.item_id] = net.get(event.item_id, 0.0) + event.weight * decay
        order[event.item_id] = position
        if event.weight < 0:
            net[event.item_id] = min(net[event.item_id], event.weight)  # a dislike wins over earlier views
    ranked = sorted(net, key=lambda i: order[i])
    positives = [(i, net[i]) for i in ranked if net[i] > 0]
    negatives = [(i, net[i]) for i in ranked if net[i] < 0]
    return positives, negatives, seen


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _mmr(pool: list[str], scores: dict[str, float], vectors: dict[str, np.ndarray], k: int, diversity: float) -> list[str]:
    """Maximal marginal relevance: each pick trades relevance against similarity to earlier picks."""
    top = max((scores.get(i, 0.0) for i in pool), default=1.0) or 1.0
    chosen: list[str] = []
    rest = list(pool)
    while rest and len(chosen) < k:
        def value(i):
            redundancy = max((float(vectors[i] @ vectors[j]) for j in chosen if i in vectors and j in vectors), default=0.0)
            return (1 - diversity) * scores.get(i, 0.0) / top - diversity * redundancy
        best = max(rest, key=value)
        chosen.append(best)
        rest.remove(best)
    return chosen
