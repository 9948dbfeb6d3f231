"""Content neighbours kept in process (retrieval.neighbours): what the cache serves equals a fresh
Chroma query, and a write, age or size limit sends the query to Chroma again."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.neighbours import NeighbourCache
from retrieval.records import Item
from retrieval.request import Request
from retrieval.vectors import VectorIndex, open_chroma
from tests.test_candidates import events, ids, world  # noqa: F401 (world is a fixture)

DIM = 32


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def index(tmp_path) -> VectorIndex:
    """1,500 random unit vectors: enough for Chroma to answer from its HNSW graph."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1500, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(open_chroma("persistent", path=str(tmp_path / "chroma")), "vectors")
    index.upsert([f"v{n}" for n in range(len(vectors))], vectors)
    return index


def vector(index: VectorIndex, item_id: str) -> np.ndarray:
    return index.get_vectors([item_id])[item_id]


@pytest.mark.parametrize("n, breadth", [(10, None), (10, 50), (50, 50), (60, 50)])
def test_a_kept_answer_equals_a_fresh_query(index, n, breadth):
    cache = NeighbourCache(index)
    queries = [("v1", vector(index, "v1")), ("v2", vector(index, "v2"))]
    first = cache.query_many(queries, n, breadth)
    again = cache.query_many(queries, n, breadth)
    fresh = index.query_many([v for _, v in queries], max(n, breadth or n))
    assert first == again == [hits[:n] for hits in fresh]
    assert len(first[0]) == n and first[0][0][0] == "v1"
    assert (cache.hits, cache.misses) == (2, 2)


def test_a_vector_that_names_no_item_is_kept_by_its_bytes(index):
    cache = NeighbourCache(index)
    profile = vector(index, "v1") + vector(index, "v2")
    first = cache.query_many([(None, profile)], 5)
    assert first == cache.query_many([(None, profile.copy())], 5) == index.query_many([profile], 5)
    assert (cache.hits, cache.misses) == (1, 1)
    moved = profile + vector(index, "v3")  # the user liked one more item: another profile, asked anew
    assert cache.query_many([(None, moved)], 5) == index.query_many([moved], 5)
    assert (cache.hits, cache.misses) == (1, 2)


def test_one_off_profiles_do_not_push_out_the_items_answers(index):
    cache = NeighbourCache(index, items=2, vectors=2)
    cache.query_many([("v1", vector(index, "v1")), ("v2", vector(index, "v2"))], 5)
    rng = np.random.default_rng(1)
    for _ in range(5):  # five users never seen again
        cache.query_many([(None, rng.standard_normal(DIM).astype(np.float32))], 5)
    assert len(cache) == 4
    cache.query_many([("v1", vector(index, "v1")), ("v2", vector(index, "v2"))], 5)
    assert cache.hits == 2


def test_no_room_for_vectors_asks_chroma_every_time(index):
    cache = NeighbourCache(index, vectors=0)
    profile = vector(index, "v1") + vector(index, "v2")
    cache.query_many([(None, profile)], 5)
    cache.query_many([(None, profile)], 5)
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 0)


def test_a_write_through_the_index_empties_it(index):
    cache = NeighbourCache(index)
    near = vector(index, "v7")
    before = cache.query_many([("v7", near)], 5)[0]
    assert all(i != "copy" for i, _ in before)
    index.upsert(["copy"], np.asarray([near]))  # a new item right on top of v7
    after = cache.query_many([("v7", near)], 5)[0]
    assert {i for i, _ in after[:2]} == {"v7", "copy"}
    assert after == index.query_many([near], 5)[0]


@pytest.mark.parametrize("age, asked_again", [(299.0, False), (301.0, True)])
def test_an_answer_older_than_max_age_is_asked_again(index, age, asked_again):
    clock = Clock()
    cache = NeighbourCache(index, max_age_s=300.0, clock=clock)
    cache.query_many([("v3", vector(index, "v3"))], 5)
    clock.now = age
    cache.query_many([("v3", vector(index, "v3"))], 5)
    assert cache.misses == (2 if asked_again else 1)


def test_the_least_recently_used_answer_leaves_first(index):
    cache = NeighbourCache(index, items=2)
    for item_id in ("v1", "v2", "v1", "v3"):  # v2 is the least recently used when v3 comes
        cache.query_many([(item_id, vector(index, item_id))], 5)
    assert len(cache) == 2 and cache.misses == 3
    cache.query_many([("v1", vector(index, "v1"))], 5)
    cache.query_many([("v2", vector(index, "v2"))], 5)
    assert (cache.hits, cache.misses) == (2, 4)


def test_another_breadth_is_another_answer(index):
    cache = NeighbourCache(index)
    cache.query_many([("v1", vector(index, "v1"))], 5, 20)
    assert cache.query_many([("v1", vector(index, "v1"))], 5, 40) == [index.query_many([vector(index, "v1")], 40)[0][:5]]
    assert cache.misses == 2


# --- through the Retriever ------------------------------------------------------------------------


@pytest.mark.parametrize("liked", [("s1",), ("s1", "s2", "s3"), ("c2", "c3")])
def test_candidates_from_a_warm_cache_equal_the_first_answer(world, liked):
    retriever = world(events("ana", *[("like", i) for i in liked]) + events("bob", *[("like", i) for i in liked]))
    first = retriever.candidates("ana", Request(), k=10)
    cache = retriever.neighbours
    assert cache.hits == 0 and cache.misses + cache.published_hits >= 1  # the fit published its items' searches
    again = retriever.candidates("bob", Request(), k=10)  # the same newest liked item: served from the cache
    assert cache.hits + cache.published_hits >= 2
    assert [(c.item.id, c.score, c.evidence) for c in first] == [(c.item.id, c.score, c.evidence) for c in again]


def test_a_new_item_reaches_a_liked_items_kept_neighbours(world):
    retriever = world(events("ana", ("like", "k1")))
    assert "fresh" not in ids(retriever.candidates("ana", Request(), k=5))
    new = Item("fresh", "Kitchen Again", text=retriever.store.get_item("k1").text, categories=["Cooking"])
    retriever.store.upsert_items([new])
    retriever.index_items([new])
    assert ids(retriever.candidates("ana", Request(), k=5))[0] == "fresh"


def test_a_users_next_turn_reuses_the_profile_search_until_the_history_changes(world):
    retriever = world(events("ana", ("like", "s1"), ("like", "s2"), ("like", "s3")))
    first = retriever.candidates("ana", Request(), k=5)
    cache = retriever.neighbours
    misses, published = cache.misses, cache.published_hits
    again = retriever.candidates("ana", Request(), k=5)
    assert cache.misses == misses  # the profile kept, the newest item's search published by the fit
    assert [(c.item.id, c.score, c.evidence) for c in again] == [(c.item.id, c.score, c.evidence) for c in first]
    retriever.store.add_events(events("ana", ("like", "s1"), ("like", "s2"), ("like", "s3"), ("like", "c2"))[3:])
    retriever.candidates("ana", Request(), k=5)
    assert cache.misses == misses + 1 and cache.published_hits == published + 2  # a new profile; c2 was published


def test_concurrent_requests_through_one_slot_answer_as_alone(world):
    from concurrent.futures import ThreadPoolExecutor

    retriever = world(events("ana", ("like", "s1"), ("like", "r1")) + events("bob", ("like", "c2"), ("like", "c3")))
    alone = {u: ids(retriever.candidates(u, Request(), k=5)) for u in ("ana", "bob")}
    retriever.gate = type(retriever.gate)(1)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda u: (u, ids(retriever.candidates(u, Request(), k=5))), ["ana", "bob"] * 4))
    assert all(found == alone[u] for u, found in together)


def _signals_over(index: VectorIndex, popularity: np.ndarray):
    from retrieval.signals import Signals

    n = len(popularity)
    empty = __import__("scipy.sparse", fromlist=["csr_matrix"]).csr_matrix((n, n), dtype=np.float32)
    return Signals(item_ids=[f"v{j}" for j in range(n)], catalog_items=n, popularity=popularity, confidence=1.0,
                   transitions=empty, neighbours=empty, trending=np.zeros(n, np.float32),
                   collab_rows=np.zeros(0, np.int32), collab_vectors=np.zeros((0, 4), np.float32))


def test_published_searches_of_the_most_popular_items_are_served_as_chroma_answers_them(index):
    from retrieval.signals import attach_content

    popularity = np.linspace(1.0, 0.0, 1500)  # v0 the most popular
    signals = _signals_over(index, popularity)
    attach_content(signals, index, answered=40, breadth=60)
    assert signals.manifest["content"]["searched"] == 40 and len(signals.content_rows) == 1500
    assert sorted(signals.content_ids()[j] for j in signals.answer_rows.tolist()) == sorted(f"v{j}" for j in range(40))
    cache = NeighbourCache(index)
    cache.adopt(signals.item_ids, signals.answer_rows, signals.answer_hits, signals.answer_scores, 60)
    asked = []
    real = index.query_many
    index.query_many = lambda vectors, k, where=None: asked.append(len(vectors)) or real(vectors, k, where)
    served = cache.query_many([("v3", vector(index, "v3")), ("v7", vector(index, "v7"))], 40, 60)
    assert asked == [] and cache.published_hits == 2
    assert served == [hits[:40] for hits in real([vector(index, "v3"), vector(index, "v7")], 60)]
    assert cache.query_many([("v900", vector(index, "v900"))], 20, 20) == real([vector(index, "v900")], 20)  # not published
    assert cache.query_many([("v3", vector(index, "v3"))], 80, 80) == real([vector(index, "v3")], 80)  # wider than published
    assert asked == [1, 1]
    index.upsert(["v1500"], vector(index, "v3")[None, :])  # a write through the index: Chroma answers again
    assert cache.query_many([("v3", vector(index, "v3"))], 10, 60)[0][:2] in (
        [("v3", pytest.approx(1.0, abs=1e-5)), ("v1500", pytest.approx(1.0, abs=1e-5))],
        [("v1500", pytest.approx(1.0, abs=1e-5)), ("v3", pytest.approx(1.0, abs=1e-5))])
    assert asked == [1, 1, 1]


def test_a_fit_over_the_same_vectors_lends_the_searches_of_the_version_before(index):
    from retrieval.signals import attach_content

    first = _signals_over(index, np.linspace(1.0, 0.0, 1500))
    attach_content(first, index, answered=30, breadth=40)
    shifted = np.linspace(1.0, 0.0, 1500)
    shifted[[100, 101]] = 2.0  # two items become the most popular: only they are searched
    second = _signals_over(index, shifted)
    attach_content(second, index, previous=first, answered=30, breadth=40)
    assert second.manifest["content"]["searched"] == 2 and second.manifest["content"]["lent"] == 28
    assert set(second.answer_rows.tolist()) == {100, 101, *range(28)}
    for row, position in enumerate(second.answer_rows.tolist()):
        fresh = index.query_many([vector(index, f"v{position}")], 40)[0]
        assert [second.item_ids[p] for p in second.answer_hits[row].tolist()] == [i for i, _ in fresh]
        assert second.answer_scores[row].tolist() == [s for _, s in fresh]
    index.upsert(["v5"], -vector(index, "v5")[None, :])  # the catalog changed: nothing is lent
    third = _signals_over(index, shifted)
    attach_content(third, index, previous=second, answered=30, breadth=40)
    assert third.manifest["content"]["searched"] == 30


# --- answers without Chroma: known items' answers, and a profile searched among them ---------------


def test_known_answers_come_from_what_is_kept_or_published_and_count_nothing(index):
    from retrieval.signals import attach_content

    signals = _signals_over(index, np.linspace(1.0, 0.0, 1500))
    attach_content(signals, index, answered=40, breadth=60)
    cache = NeighbourCache(index)
    cache.adopt(signals.item_ids, signals.answer_rows, signals.answer_hits, signals.answer_scores, 60)
    cache.query_many([("v900", vector(index, "v900"))], 20, 60)  # kept
    counts = (cache.hits, cache.misses, cache.published_hits)
    asked = []
    real = index.query_many
    index.query_many = lambda vectors, k, where=None: asked.append(len(vectors)) or real(vectors, k, where)
    known = cache.known(["v3", "v900", "v1000"], 20, 60)
    assert asked == [] and (cache.hits, cache.misses, cache.published_hits) == counts
    assert set(known) == {"v3", "v900"}  # v1000: neither kept nor published
    assert known["v3"] == real([vector(index, "v3")], 60)[0][:20]
    assert known["v900"] == real([vector(index, "v900")], 60)[0][:20]
    assert cache.known(["v3"], 80, 80) == {}  # wider than published


def test_a_derived_answer_is_kept_by_its_vector_apart_from_chromas_own(index):
    cache = NeighbourCache(index)
    profile = vector(index, "v1") + vector(index, "v2")
    made = []

    def compute():
        made.append(1)
        return [("v7", 0.9), ("v8", 0.8), ("v9", 0.7)]

    assert cache.derived(profile, 2, 20, compute) == [("v7", 0.9), ("v8", 0.8)]
    assert cache.derived(profile.copy(), 3, 20, compute) == [("v7", 0.9), ("v8", 0.8), ("v9", 0.7)] and made == [1]
    assert cache.query_many([(None, profile)], 5, 20) == [index.query_many([profile], 20)[0][:5]] and cache.misses == 1
    assert cache.derived(profile, 2, 20, lambda: None) == [("v7", 0.9), ("v8", 0.8)]  # Chroma's answer did not replace it
    assert cache.derived(profile + vector(index, "v3"), 2, 20, lambda: None) is None  # nothing derived: nothing kept
    index.upsert(["v1500"], vector(index, "v3")[None, :])  # a write through the index: worked out again
    cache.derived(profile, 2, 20, compute)
    assert made == [1, 1]


@pytest.fixture
def shelf(tmp_path):
    """A Retriever over 160 items in four word clusters (wider than one content search), fitted."""
    from retrieval.embeddings import HashingEmbedder
    from retrieval.sequential import SequentialModel
    from retrieval.store import Store

    rng = np.random.default_rng(1)
    clusters = {"s": "rocket astronaut galaxy planet orbit stars launch crew comet nebula",
                "r": "wedding romance heart marriage kiss letters bride love flowers vows",
                "c": "detective murder police clue suspect alibi case inspector crime trial",
                "k": "recipe kitchen chef bread oven flour dinner spices soup garden"}
    items = [Item(id=f"{p}{n}", title=f"{p.upper()} {n}", text=" ".join(rng.choice(vocab.split(), 6)) + f" own{p}{n}",
                  categories=[p], popularity=float(rng.random()))
             for p, vocab in clusters.items() for n in range(40)]
    store = Store.open(f"sqlite:///{tmp_path}/shelf.db")
    store.upsert_items(items)
    embedder = HashingEmbedder()
    client = open_chroma("persistent", path=str(tmp_path / "shelf"))
    from retrieval.candidates import Retriever

    retriever = Retriever(store, embedder, VectorIndex(client, "content", embedder), VectorIndex(client, "collab"), SequentialModel())
    retriever.index_items(items)
    retriever.refit(store)
    yield retriever, store
    store.close()


def test_a_profile_of_items_with_known_answers_is_searched_among_their_neighbours(shelf):
    retriever, store = shelf
    store.add_events(events("ana", ("like", "s1"), ("like", "s2"), ("like", "c3")))
    asked, worked_out = [], []
    real, near = retriever.content.query_many, retriever._near_profile
    retriever.content.query_many = lambda vectors, k, where=None: asked.append(len(vectors)) or real(vectors, k, where)
    retriever._near_profile = lambda profile, *rest: worked_out.append((profile, near(profile, *rest))) or worked_out[-1][1]
    found = retriever.candidates("ana", Request(), k=10)
    assert asked == []  # every liked item's search was published by the fit: Chroma is not asked
    assert {c.item.id[0] for c in found[:5]} <= {"s", "c"}
    # What the profile's search found: the exact cosine top among its items' neighbours, which here
    # is also what Chroma finds for the profile itself.
    [(profile, derived)] = worked_out
    exact = real([profile], 60)[0]
    assert [i for i, _ in derived[:20]] == [i for i, _ in exact[:20]]
    assert [s for _, s in derived[:20]] == pytest.approx([s for _, s in exact[:20]], abs=1e-5)
    again = retriever.candidates("ana", Request(), k=10)  # the next turn, the same history: kept, not worked out
    assert len(worked_out) == 1 and asked == [] and ids(again) == ids(found)


def test_a_profile_whose_items_have_no_known_answers_is_asked_of_chroma(shelf, monkeypatch):
    import retrieval.candidates as candidates

    retriever, store = shelf
    store.add_events(events("ana", ("like", "s1"), ("like", "s2"), ("like", "c3")))
    monkeypatch.setattr(candidates, "PROFILE_FROM_NEIGHBOURS", 1.01)  # no share of known answers is enough
    asked = []
    real = retriever.content.query_many
    retriever.content.query_many = lambda vectors, k, where=None: asked.append(len(vectors)) or real(vectors, k, where)
    retriever.candidates("ana", Request(), k=10)
    assert asked == [1]  # the profile (c3, the newest, was published)
