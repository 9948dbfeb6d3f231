"""Hybrid candidate generation: history, request text, named items, collaborative and sequential
signals and popularity, fused into one scored list where every candidate carries its evidence.

Each signal returns {item id: score}; scores are divided by the signal's best score (negative
scores count 0) and summed with weights. Max-scaling, z-scores and reciprocal-rank fusion scored
within noise of each other on MovieLens validation items; max-scaling is the simplest to read in
evidence. The weights for history-only requests were measured there too (sequential dominates,
collaborative helps, content history and popularity add little); the request-text weights are a
product choice: what the person asks for now outranks what they did before.
"""

from __future__ import annotations

import heapq
import logging
import time

import numpy as np

from core.errors import StoreError
from retrieval.collab import CollabTable, user_vector
from retrieval.asked import AskedModel
from retrieval.comention import CoMentionModel
from retrieval.embeddings import embed_queries
from retrieval.records import Candidate, Event, Evidence, Item
from retrieval.fusion import DEFAULT_WEIGHTS, HISTORY_LAST, fuse, mmr, push_from_dislikes, signal_weights, spread, unit
from retrieval.gate import FifoGate
from retrieval.neighbours import NeighbourCache
from retrieval.request import Request, UserHistory, cjk_terms, item_metadata, words
from retrieval.sequential import SequentialModel
from retrieval.titles import Works
from retrieval.topk import top_k
from retrieval.vectors import VectorIndex

log = logging.getLogger(__name__)

CATEGORY_BOOST = 0.2  # a category named while talking about taste, next to signals scaled to 1 (tuning folds: 0.2 ~ 0 > 0.5)
HISTORY_DECAY = 0.9  # per position, newest = 1
COLLAB_LAST = 20  # newest opinions that make the user's collaborative vector (measured: 20 > 50)
NEAREST_ITEMS = 1  # newest liked item(s) also searched alone (a mean of varied tastes is mushy)
DROP_OVERFETCH = 150  # at most this many extra results per signal to make up for dropped items
FILTER_OVERFETCH = 3  # results per signal multiply by this when filters run afterwards
CONTENT_STEP = 20  # content hits asked of Chroma in multiples of this (at 10M events 3 requests in 4 fetch 52-60)
# A profile of several liked items is searched among its items' own neighbours (kept or published
# answers, rescored against the profile) when items with such answers carry at least this share of
# its weight; else Chroma searches it (an HNSW search, most of a new user's CPU at 200k items).
PROFILE_FROM_NEIGHBOURS = 0.5
VECTOR_CACHE = 50_000  # content vectors kept in process (50k x 384 float32 = 75 MB)
ITEM_CACHE = 50_000
NEAR_MIN_SIMILARITY = 0.2  # below this a liked item is not "near" enough to cite as evidence
CONFIDENT_EVENTS_PER_ITEM = 5.0  # below this, sequential/collab weights shrink proportionally
POPULAR_CACHE = 1000
# Co-mention counts only as far as the log supports it: fusion scales each signal to its best score,
# so one conversation naming two films together would weigh as much as a thousand. The weight is
# scaled by best / (best + COMENTION_SUPPORT); a best of 1 is about five short conversations (or
# one decayed history) having both (CoMentionModel's units: each user's pairs weigh 1 / their items).
COMENTION_SUPPORT = 1.0
# A category named while talking about taste also brings its own favourites: the items of that
# category among this many of the most had lately (all-time popularity without a log).
CATEGORY_POOL = 1000


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
        comention: CoMentionModel | None = None,
        concurrency: int | None = None,
    ):
        """`concurrency`: requests generating candidates at once, the rest wait their turn in
        arrival order (retrieval.gate; default one per core)."""
        self.store = store
        self.embedder = embedder
        self.content = content
        self.collab = collab
        self.sequential = sequential
        self.comention = comention if comention is not None else CoMentionModel()
        self.asked = AskedModel()  # what people who asked in similar words went on to have
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.behaviour_confidence = 0.0  # set by refit: 0 (no events) .. 1 (enough to trust)
        self.fitted_at: float | None = None
        self.signals_version: str | None = None  # the published signals served (None: fitted here, or none)
        self._popularity: dict[str, float] | None = None
        self._popular_top: list[tuple[str, float]] | None = None
        # Read-through caches: an item and its vector change only when the catalog entry does
        # (index_items drops those entries). Another worker re-ingesting an item can leave an old
        # copy here until evicted; catalog updates are rare next to requests.
        self._vector_cache: dict[str, np.ndarray] = {}
        self._item_cache: dict[str, Item] = {}
        # The content vectors a published version carries (memory-mapped, shared by the workers of
        # a machine): no Chroma `get` for them. Items indexed here since are read from Chroma.
        self._content_table = CollabTable()
        self._reindexed: set[str] = set()
        self._adopted = None  # the signals served (retrieval.signals.Signals)
        self._collab_table = CollabTable()
        self.neighbours = NeighbourCache(content) if content is not None else None  # item -> content neighbours
        self.live = None  # retrieval.live.LiveCounters: popularity and trending that follow new events
        self.freshness = None  # retrieval.freshness.Freshness: a time-sensitive catalog's decay
        self.gate = FifoGate(concurrency)

    # --- keeping the indexes in step with the store ---------------------------------------

    def index_items(self, items: list[Item], batch_size: int = 256) -> None:
        """Embed items and upsert their content vectors: retrievable right after this returns."""
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            documents = [item.document() for item in batch]
            vectors = np.asarray(self.embedder(documents), dtype=np.float32)
            # The text beside its vector: other Chroma readers (LangChain's Chroma) return only rows with text.
            self.content.upsert([i.id for i in batch], vectors, metadatas=[item_metadata(i) for i in batch], documents=documents)
            for item in batch:
                self._vector_cache.pop(item.id, None)
                self._item_cache.pop(item.id, None)
                self._reindexed.add(item.id)
        if self._popularity is not None:  # new items join the cold-start list at once (refit updates the rest)
            for item in items:
                self._popularity.setdefault(item.id, _prior(item))
            self._popular_top = None

    def refit(self, store=None, publish=None):
        """Fit every global signal from all events (retrieval.fitting: read once, vectorised) and
        serve it; `publish(signals)` (retrieval.signals.publish) shares it with other workers before
        the collaborative vectors reach Chroma (the slow part, which workers do not wait for)."""
        from retrieval.fitting import fit_signals
        from retrieval.signals import attach_content, remap_published, sync_collab_index

        signals = fit_signals(store or self.store, self.sequential or SequentialModel(), self.comention, asked=self.asked)
        if self.content is not None:
            try:
                attach_content(signals, self.content, previous=self._adopted)
            except StoreError as exc:  # workers then read vectors from Chroma, as before
                log.warning("the published signals carry no content vectors: %s", exc)
        if publish is not None:
            folder = publish(signals)  # its manifest then names the version
            if folder is not None:
                remap_published(signals, folder)  # the big catalog arrays from the files: pages shared with other workers
        self.adopt(signals)
        if self.collab is not None:
            sync_collab_index(self.collab, signals)
        return signals

    def adopt(self, signals) -> None:
        """Serve signals a fitting job computed or published (retrieval.signals): nothing here reads events."""
        self._popularity = signals.popularity_scores()
        self._popular_top = None
        self.behaviour_confidence = signals.confidence
        if self.sequential is not None:
            self.sequential.adopt(signals.item_ids, signals.transitions, signals.index)
        self.comention.adopt(signals.item_ids, signals.neighbours, signals.trending, signals.index)
        if signals.asked is not None:
            self.asked.adopt(*signals.asked, signals.item_ids, signals.index)
        else:  # published before the model existed, or nobody said anything in words
            self.asked = AskedModel(self.asked.neighbours, self.asked.max_rows)
        # Kept in process: a request needs no Chroma round trip for the collaborative signal.
        self._collab_table = CollabTable(signals.collab_ids(), signals.collab_vectors, weight=self._popularity)
        same_space = self.content is not None and signals.manifest.get("content_collection") == self.content.name
        # (_reindexed stays: an item indexed while the job read the vectors may be older in this version)
        self._content_table = CollabTable(signals.content_ids(), signals.content_vectors) if same_space else CollabTable()
        if self.neighbours is not None:
            breadth = signals.manifest.get("answer_breadth", 0) if same_space else 0
            self.neighbours.adopt(signals.item_ids, signals.answer_rows if breadth else (), signals.answer_hits,
                                  signals.answer_scores, breadth)
        self._adopted = signals  # lends its content searches to the next fit's (attach_content)
        self.fitted_at = signals.created_at or time.time()
        self.signals_version = signals.version
        if self.live is not None:
            self.live.adopt(signals)

    @staticmethod
    def _compute_popularity(store, events: list[Event]) -> tuple[dict[str, float], float]:
        """The reference definition retrieval.fitting computes vectorised (its tests compare the two). Per item: how many liked it (relative to the most liked) plus the catalog's own prior;
        and how far behaviour can be trusted (0..1: positive events per interacted item / 5).

        The behaviour half is scaled by that confidence: on a catalog with a handful of events,
        one like must not outrank the platform's own popularity figures.
        """
        counts: dict[str, float] = {}
        for event in events:
            if event.item_id and event.weight > 0:
                counts[event.item_id] = counts.get(event.item_id, 0.0) + 1.0
        interacted = {e.item_id for e in events if e.item_id}
        confidence = min(1.0, sum(counts.values()) / max(1, len(interacted)) / CONFIDENT_EVENTS_PER_ITEM)
        top = max(counts.values(), default=0.0) or 1.0
        popularity = {item.id: 0.5 * confidence * counts.get(item.id, 0.0) / top + _prior(item) for item in store.iter_items()}
        return popularity, confidence

    def popular(self, n: int) -> list[tuple[str, float]]:
        """The n most popular items (id, score), best first."""
        if self._popularity is None:  # nothing fitted or published yet: the catalog's own figures
            self._popularity = {item.id: _prior(item) for item in self.store.iter_items()}
        if self._popular_top is None:
            self._popular_top = heapq.nlargest(POPULAR_CACHE, self._popularity.items(), key=lambda x: x[1])
        if n <= len(self._popular_top):
            return self._popular_top[:n]
        return heapq.nlargest(n, self._popularity.items(), key=lambda x: x[1])

    # --- candidates ---------------------------------------------------------------------------

    def candidates(self, user_id: str, request: Request, k: int = 20, history: list[Event] | None = None) -> list[Candidate]:
        """The k best items for this user and request, each with the evidence that found it."""
        with self.gate:
            return self._candidates(user_id, request, k, history)

    def _candidates(self, user_id: str, request: Request, k: int, history: list[Event] | None) -> list[Candidate]:
        if self.live is not None:
            self.live.poll_if_due()
        events = self.store.events_for_user(user_id) if history is None else history
        user = UserHistory.from_events(events)
        disliked = {i for i, _ in user.disliked}
        avoid = [i for i in dict.fromkeys(request.avoid_item_ids) if i not in disliked]
        user.disliked = user.disliked + [(i, -2.0) for i in avoid]  # said in words: as a dislike, this turn
        drop = set(request.exclude_ids) | set(request.seed_item_ids) | {i for i, _ in user.disliked}
        if not request.include_seen:
            drop |= user.seen
        filtered = request.is_filtered()
        # Over-fetch by what will be dropped (capped: a heavy user's neighbourhood is mostly seen
        # items, and the behaviour signals carry such users) and by what the filters will reject.
        # Filters run after fusion: Chroma's `where` cost 10x an unfiltered query here, so it only
        # serves the fill below when post-filtering leaves too few.
        fetch = (max(2 * k, 50) + min(len(drop), DROP_OVERFETCH)) * (FILTER_OVERFETCH if filtered else 1)

        liked_recent = user.liked[-HISTORY_LAST:]
        seeds = list(dict.fromkeys(request.seed_item_ids))
        vectors = self._content_vectors([i for i, _ in liked_recent] + [i for i, _ in user.disliked[-HISTORY_LAST:]] + seeds)
        signals: dict[str, dict[str, float]] = {}
        anchor = self._content_signals(signals, request, user, liked_recent, seeds, vectors, fetch)
        self._behaviour_signals(signals, user, seeds, fetch)
        cold = not user.liked and not seeds
        weights = signal_weights(self.weights, self.behaviour_confidence, request, seeds, cold)
        if self.freshness is not None:
            self.freshness.weigh(weights, self.behaviour_confidence)
        if weights["popularity"] > 0:
            signals["popularity"] = dict(self.popular(fetch if cold else min(fetch, 100)))
        if seeds and weights["comention"] > 0:
            signals["comention"] = self.comention.scores(seeds, fetch)
            best = max(signals["comention"].values(), default=0.0)
            weights["comention"] *= best / (best + COMENTION_SUPPORT) if best > 0 else 0.0
        if weights["trending"] > 0:
            signals["trending"] = self.comention.trending(fetch)
        if request.conversation and weights["asked"] > 0 and self.asked.fitted:
            signals["asked"] = self.asked.scores(request.conversation, fetch)
        if (request.prefer_categories or request.prefer_years) and weights["category_favourites"] > 0:
            signals["category_favourites"] = self._favourites(request)
        proposed = list(dict.fromkeys(request.proposed_item_ids))
        if proposed and weights["proposed"] > 0:
            signals["proposed"] = {item_id: 1.0 - rank / len(proposed) for rank, item_id in enumerate(proposed)}

        fused, found_by = fuse(signals, weights)
        if self.freshness is not None:
            self.freshness.decay(fused, found_by)
        ranked = [i for i in sorted(fused, key=fused.__getitem__, reverse=True) if i not in drop]
        if request.prefer_categories or request.prefer_years:
            ranked = self._prefer(ranked, request, fused, found_by, fetch)
        # Reordering (dislike push-down, MMR) needs a wider pool and its vectors; plain requests
        # only fetch the k they return (a cold cache makes each fetched item cost).
        reorder = request.diversity > 0 or bool(user.disliked)
        items, pool = self._accepted(ranked, request, max(3 * k, 60) if reorder else k)
        if len(pool) < k and filtered:
            pool += self._filtered_fill(request, anchor, drop | set(pool), k - len(pool), items, found_by)
        if not pool:
            return []

        pool_vectors = self._content_vectors(pool)
        if reorder:
            push_from_dislikes(pool, pool_vectors, user, vectors, fused, found_by, self._above_floor)
            pool.sort(key=lambda i: -fused.get(i, 0.0))
        chosen = mmr(pool, fused, pool_vectors, k, request.diversity) if request.diversity > 0 else pool[:k]

        return self._with_evidence(chosen, items, fused, found_by, pool_vectors, liked_recent, vectors, request, user.said_liked)

    def _with_evidence(self, chosen, items, fused, found_by, pool_vectors, liked_recent, vectors, request,
                       said_liked: set[str] = frozenset()) -> list[Candidate]:
        liked_items = self._items([i for i, _ in liked_recent])
        liked_ids = [i for i, _ in liked_recent if i in vectors and i in liked_items]
        with_vectors = [i for i in chosen if i in pool_vectors]
        near: dict[str, list[tuple[str, str, float]]] = {}
        if liked_ids and with_vectors:
            similarity = np.stack([pool_vectors[i] for i in with_vectors]) @ np.stack([vectors[i] for i in liked_ids]).T
            nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :2].tolist()
            close = (self._above_floor(similarity) >= NEAR_MIN_SIMILARITY).tolist()
            values = similarity.tolist()
            for row, item_id in enumerate(with_vectors):
                near[item_id] = [(liked_ids[j], liked_items[liked_ids[j]].title, values[row][j]) for j in nearest[row] if close[row][j]]
        liked_categories = {c.lower() for item in liked_items.values() for c in item.categories}
        stated_categories = {c.lower() for i, item in liked_items.items() if i in said_liked for c in item.categories}
        liked_creators = {item.creator.lower() for item in liked_items.values() if item.creator}
        stated_creators = {item.creator.lower() for i, item in liked_items.items() if i in said_liked and item.creator}
        query_words = words(request.query)
        out = []
        for item_id in chosen:
            item = items[item_id]
            evidence = Evidence(
                near_history=near.get(item_id, []),
                matched_words=sorted(query_words & words(item.document()) | cjk_terms(request.query, item)) if query_words else [],
                shared_categories=[c for c in item.categories if c.lower() in liked_categories],
                shared_creators=[item.creator] if item.creator and item.creator.lower() in liked_creators else [],
                signals=found_by.get(item_id, {}),
                said_liked=[i for i, _, _ in near.get(item_id, []) if i in said_liked],
                said_liked_categories=[c for c in item.categories if c.lower() in stated_categories],
                said_liked_creators=[item.creator] if item.creator and item.creator.lower() in stated_creators else [],
            )
            out.append(Candidate(item, float(fused.get(item_id, 0.0)), evidence))
        return out

    def _items(self, ids: list[str]) -> dict[str, Item]:
        """Items by id through a bounded in-process cache (index_items refreshes its entries)."""
        cache = self._item_cache
        missing = [i for i in dict.fromkeys(ids) if i not in cache]
        if missing:
            _bounded_update(cache, self.store.get_items(missing), ITEM_CACHE)
        return {i: cache[i] for i in ids if i in cache}

    def _content_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        """Content vectors by id through a bounded in-process cache."""
        cache, table = self._vector_cache, self._content_table
        out = {i: cache[i] for i in ids if i in cache}
        if len(out) < len(ids) and len(table):
            out |= table.get(i for i in ids if i not in out and i not in self._reindexed)
        missing = [i for i in dict.fromkeys(ids) if i not in out]
        if missing:
            fetched = self.content.get_vectors(missing)
            _bounded_update(cache, fetched, VECTOR_CACHE)
            out |= fetched
        return {i: out[i] for i in ids if i in out}

    def _content_signals(self, signals, request, user, liked_recent, seeds, vectors, fetch) -> np.ndarray | None:
        """History, request text and seeds as content-space queries, batched in one Chroma call.

        Returns the vector that best stands for what is wanted now (request text, else seeds,
        else history), for the filtered fill.
        """
        # (signal, item whose own vector it is or None, vector, factor): items' answers are kept.
        queries: list[tuple[str, str | None, np.ndarray, float]] = []
        history_vector: np.ndarray | None = None  # the profile, whether Chroma searches it or not
        # Asked in steps (one kept answer serves nearby sizes) and cut to `fetch`: below ef_search a
        # wider ask finds the same leading hits, bar the order of equal scores at the cut.
        breadth = -(-fetch // CONTENT_STEP) * CONTENT_STEP
        liked = [(i, w) for i, w in liked_recent if i in vectors]
        disliked = [(i, w) for i, w in user.disliked[-HISTORY_LAST:] if i in vectors]
        if len(liked) == 1 and not disliked:  # the profile is that item (its own search would add nothing)
            history_vector = vectors[liked[0][0]]
            queries.append(("history", liked[0][0], history_vector, 1.0))
        elif liked:
            decayed = [(i, w * HISTORY_DECAY**age) for (i, w), age in zip(liked, np.arange(len(liked))[::-1])]
            profile = sum(w * vectors[i] for i, w in decayed)
            if disliked:
                profile = profile + 0.5 * sum(w * vectors[i] for i, w in disliked)  # w < 0: subtracts
            history_vector = unit(profile)
            near = self.neighbours.derived(history_vector, fetch, breadth,
                                           lambda: self._near_profile(history_vector, decayed, breadth))
            if near is None:
                queries.append(("history", None, history_vector, 1.0))
            else:
                signals["history"] = dict(near)
            # The newest liked items one by one too: a mean of varied tastes is mushy.
            queries += [("history", i, vectors[i], 0.9) for i, _ in liked[-NEAREST_ITEMS:]]
        seeded = [i for i in seeds if i in vectors]
        if len(seeded) == 1:
            queries.append(("seed", seeded[0], vectors[seeded[0]], 1.0))
        elif seeded:
            queries.append(("seed", None, unit(sum(vectors[i] for i in seeded)), 1.0))
            queries += [("seed", i, vectors[i], 0.9) for i in seeded]
        if request.query.strip():
            queries.append(("query", None, np.asarray(embed_queries(self.embedder, [request.query])[0], dtype=np.float32), 1.0))
        if not queries and not signals.get("history"):
            return None
        results = self.neighbours.query_many([(item_id, v) for _, item_id, v, _ in queries], fetch, breadth)
        for (name, _, _, factor), hits in zip(queries, results):
            scores = signals.setdefault(name, {})
            for item_id, similarity in hits:
                scores[item_id] = max(scores.get(item_id, float("-inf")), factor * similarity)
        if getattr(self.embedder, "similarity_floor", 0.0):
            # Any two texts score close to 1 with such an embedder: divided by the best alone (as
            # `_fuse` does), the hits of "江南水乡的散文" scored within 10% of each other and
            # popularity chose among them. Spread from their median up, the best counts 1 and the
            # lower half of the hits nothing.
            for name in ("history", "seed", "query"):
                if signals.get(name):  # a query with no hits (an empty collection) has nothing to spread
                    signals[name] = spread(signals[name])
        return queries[-1][2] if request.query.strip() or seeded else history_vector

    def _near_profile(self, profile: np.ndarray, decayed: list[tuple[str, float]], breadth: int) -> list[tuple[str, float]] | None:
        """The `breadth` items nearest the profile among the neighbours of its items, or None when
        too little of its weight has neighbours known without Chroma (or no vectors are held).

        The profile is a weighted mean of its items, so what lies near it lies near some of them:
        their answers (kept, or published for the most popular items) gathered and scored against
        the profile by the vectors the fitted version holds."""
        if not len(self._content_table):
            return None
        weight = {i: abs(w) for i, w in decayed}  # each item's part in the profile
        answers = self.neighbours.known(list(weight), breadth, breadth)
        total = sum(weight.values())
        if not total or sum(weight[i] for i in answers) < PROFILE_FROM_NEIGHBOURS * total:
            return None
        ids, matrix = self._content_table.rows(dict.fromkeys(h for hits in answers.values() for h, _ in hits))
        if len(ids) < breadth:
            return None
        # einsum, single-threaded (as CollabTable.top): BLAS threads cost more than they save here
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
        similarity = np.einsum("ij,j->i", matrix, np.asarray(profile, dtype=np.float32)) / np.where(norms > 0, norms, 1.0)
        return [(ids[j], float(similarity[j])) for j in top_k(similarity, breadth)]

    def _behaviour_signals(self, signals, user: UserHistory, seeds: list[str], fetch: int) -> None:
        """Sequential and collaborative signals; named seeds count as the newest items."""
        if self.sequential is not None and self.sequential.fitted and (user.consumed or seeds):
            scores = self.sequential.scores(user.consumed + seeds, fetch)
            if scores:
                signals["sequential"] = scores
        if self.collab is not None and (user.liked or seeds):
            history = [(i, w) for i, w in user.opinions if i not in seeds] + [(i, 2.0) for i in seeds]
            wanted = [i for i, _ in history[-COLLAB_LAST:]]
            table = self._collab_table
            try:
                collab_vectors = table.get(wanted) if len(table) else self.collab.get_vectors(wanted)  # not refit here yet
                vector = user_vector(history, collab_vectors, last=COLLAB_LAST) if collab_vectors else None
                hits = (table.top(vector, fetch) if len(table) else self.collab.query(vector, fetch)) if vector is not None else None
            except StoreError as exc:  # Chroma's copy, being written anew by a fitting job elsewhere
                log.warning("collaborative signal skipped for this request: %s", exc)
                hits = None
            if hits is not None:
                signals["collab"] = {i: s for i, s in hits if s > 0}

    def _favourites(self, request: Request) -> dict[str, float]:
        """The items of the preferred categories and era most had lately (else of all time), id -> that score."""
        met, wanted = _preferences(request), _wanted(request)

        def preferred(pool: dict[str, float]) -> dict[str, float]:
            items = self._items(list(pool))
            return {i: s for i, s in pool.items() if i in items and met(items[i]) == wanted}

        # All-time popularity is read only when nothing preferred is trending.
        return preferred(self.comention.trending(CATEGORY_POOL)) or preferred(dict(self.popular(CATEGORY_POOL)))

    def _prefer(self, ranked: list[str], request: Request, fused: dict, found_by: dict, n: int) -> list[str]:
        """Items of a preferred category, and of the era wanted, gain CATEGORY_BOOST each (among the
        n best: their items are read)."""
        met = _preferences(request)
        head = ranked[:n]
        items = self._items(head)
        for item_id in head:
            item = items.get(item_id)
            for kind in met(item) if item is not None else ():
                fused[item_id] += CATEGORY_BOOST
                found_by.setdefault(item_id, {})[kind] = 1.0
        return sorted(head, key=fused.__getitem__, reverse=True) + ranked[n:]

    def _accepted(self, ranked: list[str], request: Request, n: int) -> tuple[dict[str, Item], list[str]]:
        """The first n ranked ids that exist in the store and pass the filters, with their items."""
        items: dict[str, Item] = {}
        pool: list[str] = []
        works = Works()
        accepts = request.accepts if request.is_filtered() else None  # unfiltered: every item passes
        step = max(n, 50)
        for start in range(0, len(ranked), step):
            chunk = ranked[start : start + step]
            found = self._items(chunk)
            items.update(found)
            for item_id in chunk:  # one at a time: past the n-th, a title need not be normalised
                item = found.get(item_id)
                if item is not None and (accepts is None or accepts(item)) and works.first(item.title, item.year):
                    pool.append(item_id)
                    if len(pool) == n:
                        return items, pool
        return items, pool

    def _filtered_fill(self, request: Request, anchor, exclude: set[str], n: int, items: dict, found_by: dict) -> list[str]:
        """Strict filters can empty the fused pool: ask Chroma for matching items near what is
        wanted, then for the most popular matching ones."""
        where = request.where()
        chosen: list[str] = []

        def take(scored: list[tuple[str, float]], label: str) -> None:
            fresh = [(i, s) for i, s in scored if i not in exclude and i not in chosen]
            found = self._items([i for i, _ in fresh])
            items.update(found)
            for item_id, score in fresh:
                if len(chosen) < n and item_id in found and request.accepts(found[item_id]):
                    chosen.append(item_id)
                    found_by.setdefault(item_id, {})[label] = score

        if anchor is not None and where is not None:
            take(self.content.query(anchor, n + min(len(exclude), DROP_OVERFETCH), where), "filtered_nearest")
        if len(chosen) < n:
            popularity = self._popularity or {}
            ids = self.content.get_ids(where, POPULAR_CACHE) if where is not None else [i for i, _ in self.popular(POPULAR_CACHE)]
            take(sorted(((i, popularity.get(i, 0.0)) for i in ids), key=lambda x: -x[1]), "popularity")
        return chosen

    def _above_floor(self, similarity):
        """A similarity measured from the embedder's `similarity_floor`, where unrelated texts sit
        (0 for most; E5 scores any two texts 0.74 or more), so the thresholds on it (a liked item
        "near" enough to cite, a near copy of a disliked one) mean the same for every embedder."""
        floor = getattr(self.embedder, "similarity_floor", 0.0)
        return similarity if not floor else (similarity - floor) / (1.0 - floor)


def _wanted(request: Request) -> tuple[str, ...]:
    return ("category",) * bool(request.prefer_categories) + ("era",) * bool(request.prefer_years)


def _preferences(request: Request):
    """A test of an item against the request's soft preferences: which it meets, "category" and/or "era"."""
    categories = {c.lower() for c in request.prefer_categories}
    low, high = request.prefer_years or (None, None)

    def met(item: Item) -> tuple[str, ...]:
        kinds = ()
        if categories & {c.lower() for c in item.categories}:
            kinds += ("category",)
        if request.prefer_years and item.year is not None and (low is None or item.year >= low) and (high is None or item.year <= high):
            kinds += ("era",)
        return kinds

    return met


def _bounded_update(cache: dict, fresh: dict, limit: int) -> None:
    """Add entries, then evict the oldest beyond `limit` (insertion order)."""
    cache.update(fresh)
    try:
        while len(cache) > limit:
            cache.pop(next(iter(cache)), None)
    except (RuntimeError, StopIteration):  # another request thread evicting at the same time
        pass


def _prior(item: Item) -> float:
    """The catalog's own popularity (0..1 expected), half-weighted like the behaviour counts."""
    return 0.5 * min(max(item.popularity or 0.0, 0.0), 1.0)
