"""Candidate generation as a specification: a tiny catalog in four word-clusters, real Store and
embedded Chroma in a temp dir, the hashing embedder (shared words => similar vectors)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from retrieval.candidates import Retriever

from retrieval.request import Request, UserHistory, words
from retrieval.embeddings import HashingEmbedder
from retrieval.records import Event, Item, rating_weight
from retrieval.sequential import SequentialModel
from retrieval.store import Store
from retrieval.vectors import VectorIndex, open_chroma

CLUSTERS = {
    "s": ("Science Fiction", "rocket astronaut galaxy planet orbit stars launch crew"),
    "r": ("Romance", "wedding romance heart marriage kiss letters bride love"),
    "c": ("Crime", "detective murder police clue suspect alibi case inspector"),
    "k": ("Cooking", "recipe kitchen chef bread oven flour dinner spices"),
}
CREATORS = ["Ann Lee", "Bo Chen", "Cy Diaz", "Di Eze", "Ed Fox"]


def catalog() -> list[Item]:
    items = []
    for prefix, (category, vocab) in CLUSTERS.items():
        vocab = vocab.split()
        for n in range(1, 6):
            # Each item: most of its cluster's words plus one word of its own.
            text = " ".join(vocab[(n + j) % len(vocab)] for j in range(6)) + f" unique{prefix}{n}"
            items.append(Item(
                id=f"{prefix}{n}", title=f"{category} {n}", text=text, categories=[category],
                creator=CREATORS[n - 1], year=1960 + 10 * n, popularity=0.1 * n if prefix != "k" else 0.05 * n,
                extra={"format": "audio" if n % 2 else "print"},
            ))
    # A near copy of c1 (another edition): what a dislike of c1 should push down.
    items.append(Item(id="c1b", title="Crime 1 again", text=items[10].text, categories=["Crime"], creator="Ann Lee", year=1970))
    items[17].popularity = 0.99  # k3: the most popular item in the catalog
    return items


CATALOG = {item.id: item for item in catalog()}
T0 = 1_700_000_000.0


def events(user: str, *pairs: tuple[str, str], value: float | None = None) -> list[Event]:
    """(type, item) pairs, one minute apart, in order."""
    return [Event(user, kind, T0 + 60 * n, item, value) for n, (kind, item) in enumerate(pairs)]


@pytest.fixture
def world(tmp_path):
    """Build a Store + Chroma + Retriever over the catalog with the given events, refit."""
    stores = []

    def build(evs: list[Event] = (), weights: dict | None = None) -> Retriever:
        store = Store.open(f"sqlite:///{tmp_path}/store{len(stores)}.db")
        stores.append(store)
        store.upsert_items(list(CATALOG.values()))
        store.add_events(list(evs))
        client = open_chroma("persistent", path=str(tmp_path / f"chroma{len(stores)}"))
        embedder = HashingEmbedder()
        retriever = Retriever(store, embedder, VectorIndex(client, "content", embedder), VectorIndex(client, "collab"),
                              SequentialModel(), weights)
        retriever.index_items(list(CATALOG.values()))
        retriever.refit(store)
        return retriever

    yield build
    for store in stores:
        store.close()


def ids(candidates) -> list[str]:
    return [c.item.id for c in candidates]


# --- history ------------------------------------------------------------------------------------


@pytest.mark.parametrize("liked, cluster", [(("s1", "s2"), "s"), (("r1", "r2"), "r"), (("c2", "c3"), "c")])
def test_history_pulls_neighbours(world, liked, cluster):
    retriever = world(events("ana", *[("like", i) for i in liked]))
    top = ids(retriever.candidates("ana", Request(), k=3))
    assert all(i.startswith(cluster) for i in top), top


@pytest.mark.parametrize("include_seen", [False, True])
def test_seen_items_are_removed_unless_asked(world, include_seen):
    retriever = world(events("ana", ("like", "s1"), ("view", "s2"), ("search", None)))
    found = set(ids(retriever.candidates("ana", Request(include_seen=include_seen), k=10)))
    assert ({"s1", "s2"} <= found) is include_seen
    assert not ({"s1", "s2"} & found) or include_seen


def test_dislikes_are_removed_and_their_near_copies_pushed_down(world):
    liked = [("like", "c2"), ("like", "c3"), ("like", "c4")]
    retriever = world(events("ben", *liked) + events("eve", *liked, ("dislike", "c1")))
    before = ids(retriever.candidates("ben", Request(), k=10))
    after = ids(retriever.candidates("eve", Request(), k=10))
    assert "c1" in before and "c1" not in after
    assert "c1b" in before[:3]  # a near copy of c1 ranks high for someone who likes crime...
    assert "c1b" not in after[:3]  # ...and drops for someone who disliked c1
    evidence = {c.item.id: c.evidence for c in retriever.candidates("eve", Request(), k=20)}
    assert evidence["c1b"].signals["near_disliked"] > 0.8  # the similarity that cost it its place
    # Merely similar items (same genre, other words) keep their place: a low rating of one crime
    # story is no verdict on every crime story.
    assert not any("near_disliked" in e.signals for i, e in evidence.items() if i != "c1b")


def test_a_low_rating_counts_as_a_dislike(world):
    retriever = world(events("ana", ("like", "c2"), ("rate", "c1"), value=1))
    assert "c1" not in ids(retriever.candidates("ana", Request(include_seen=True), k=30))


# --- filters ----------------------------------------------------------------------------------


FILTERS = [
    (Request(categories=["romance"]), lambda i: i.categories == ["Romance"]),
    (Request(categories=["Romance", "Cooking"]), lambda i: i.categories[0] in {"Romance", "Cooking"}),
    (Request(exclude_categories=["Science Fiction"]), lambda i: "Science Fiction" not in i.categories),
    (Request(creators=["ann lee"]), lambda i: i.creator == "Ann Lee"),
    (Request(exclude_creators=["Bo Chen", "Cy Diaz"]), lambda i: i.creator not in {"Bo Chen", "Cy Diaz"}),
    (Request(year_min=1990), lambda i: i.year >= 1990),
    (Request(year_max=1980), lambda i: i.year <= 1980),
    (Request(extra_filters={"format": "audio"}), lambda i: i.extra.get("format") == "audio"),
    (Request(exclude_ids={"s3", "s4"}), lambda i: i.id not in {"s3", "s4"}),
    (Request(query="kitchen bread", categories=["Crime"], year_min=1990), lambda i: "Crime" in i.categories and i.year >= 1990),
]


@pytest.mark.parametrize("request_, holds", FILTERS)
def test_every_filter_holds_for_every_candidate(world, request_, holds):
    retriever = world(events("ana", ("like", "s1"), ("like", "s2")))
    found = retriever.candidates("ana", request_, k=5)
    assert found, "a satisfiable filter must still return candidates"
    assert all(holds(c.item) for c in found), [c.item.id for c in found if not holds(c.item)]


def test_strict_filters_far_from_the_history_still_fill_the_list(world):
    retriever = world(events("ana", ("like", "s1"), ("like", "s2")))
    found = retriever.candidates("ana", Request(categories=["Cooking"]), k=5)
    assert sorted(ids(found)) == ["k1", "k2", "k3", "k4", "k5"]


def test_unfiltered_request_has_no_chroma_where():
    assert Request(query="x", seed_item_ids=["a"]).where() is None


# --- cold start, request text, seeds --------------------------------------------------------


def test_cold_start_without_a_request_gives_popular_items(world):
    retriever = world(events("ana", ("like", "s1")))
    found = retriever.candidates("newcomer", Request(), k=3)
    assert ids(found)[0] == "k3"  # the catalog's most popular item
    assert all("popularity" in c.evidence.signals for c in found)


def test_cold_start_with_a_request_follows_the_request(world):
    retriever = world()
    found = retriever.candidates("newcomer", Request(query="a detective murder case"), k=3)
    assert all(i.startswith("c") for i in ids(found)), ids(found)
    assert {"detective", "murder", "case"} & set(found[0].evidence.matched_words)


def test_seed_items_steer_and_are_not_returned(world):
    retriever = world(events("ana", ("like", "s1"), ("like", "s2")))
    found = ids(retriever.candidates("ana", Request(seed_item_ids=["r3"]), k=3))
    assert "r3" not in found
    assert all(i.startswith("r") for i in found), found


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_a_category_said_while_talking_brings_its_favourites(world, weight):
    """"I like science fiction ... any romance?": the most popular romance joins the list although
    nothing in the history is near it; with the weight at 0 it is not found that way."""
    retriever = world(events("ana", ("like", "s1"), ("like", "s2")), weights={"category_favourites": weight})
    found = {c.item.id: c for c in retriever.candidates("ana", Request(prefer_categories=["Romance"]), k=5)}
    if weight:
        assert "r5" in found, list(found)  # the catalog's most popular romance
        assert "category_favourites" in found["r5"].evidence.signals
    else:
        assert not any("category_favourites" in c.evidence.signals for c in found.values())


def test_an_era_said_while_talking_brings_its_items_forward(world):
    """"I like old ones": the catalog's oldest items come forward (the newest are the most popular
    here), each marked with the era it met; without the preference they do not lead."""
    retriever = world(events("ana", ("like", "s5")) + events("bob", ("like", "r5"), ("like", "c5")))
    plain = retriever.candidates("ana", Request(), k=5)
    old = retriever.candidates("ana", Request(prefer_years=(None, 1980)), k=5)
    assert sum(c.item.year <= 1980 for c in old[:3]) > sum(c.item.year <= 1980 for c in plain[:3])
    assert all("era" in c.evidence.signals for c in old if c.item.year <= 1980)
    assert not any("era" in c.evidence.signals for c in old if c.item.year > 1980)
    new = retriever.candidates("ana", Request(prefer_years=(2010, None)), k=5)
    assert [c.item.year for c in new[:2]] == [2010, 2010], [(c.item.id, c.item.year) for c in new]
    assert all(("era" in c.evidence.signals) == (c.item.year == 2010) for c in new)


@pytest.mark.parametrize("kind, liked", [("like", True), ("view", False), ("purchase", False), ("seen", False)])
def test_evidence_says_which_history_items_were_said_to_be_liked(world, kind, liked):
    retriever = world(events("ana", (kind, "s1"), (kind, "s2")))
    near = [c for c in retriever.candidates("ana", Request(), k=5) if c.evidence.near_history]
    assert near, "history items should be cited"
    for c in near:
        cited = [i for i, _, _ in c.evidence.near_history]
        assert c.evidence.said_liked == (cited if liked else [])
        assert c.evidence.said_liked_categories == (c.evidence.shared_categories if liked else [])
    by_creator = [c for c in retriever.candidates("ana", Request(), k=10) if c.evidence.shared_creators]
    assert by_creator, "an item by a history item's creator should be found"
    for c in by_creator:
        assert c.evidence.said_liked_creators == (c.evidence.shared_creators if liked else [])


def test_a_new_item_is_retrievable_right_after_index_items(world):
    retriever = world(events("ana", ("like", "s1")))
    new = Item("fresh", "Quantum Bakery", text="sourdough quantum bakery physics croissant", categories=["Cooking"])
    retriever.store.upsert_items([new])  # as catalog ingest does: store first, then index
    retriever.index_items([new])
    assert ids(retriever.candidates("ana", Request(query="quantum sourdough bakery"), k=1)) == ["fresh"]
    assert ids(retriever.candidates("ana", Request(categories=["Cooking"], query="croissant physics"), k=1)) == ["fresh"]


# --- evidence ----------------------------------------------------------------------------------


def test_evidence_is_filled_and_truthful(world):
    history = events("ana", ("like", "s1"), ("like", "r2"), ("view", "s2"), ("dislike", "c5"))
    retriever = world(history)
    liked = {"s1": CATALOG["s1"], "r2": CATALOG["r2"], "s2": CATALOG["s2"]}
    request = Request(query="rocket galaxy wedding")
    found = retriever.candidates("ana", request, k=8)
    assert found
    vectors = retriever.content.get_vectors(list(liked) + ids(found))
    for candidate in found:
        ev, item = candidate.evidence, candidate.item
        assert ev.signals, item.id
        assert len(ev.near_history) <= 2
        for item_id, title, similarity in ev.near_history:
            assert item_id in liked and title == liked[item_id].title
            assert similarity == pytest.approx(float(vectors[item_id] @ vectors[item.id]), abs=1e-4)
        assert set(ev.matched_words) <= words(request.query) & words(item.document())
        liked_categories = {c for i in liked.values() for c in i.categories}
        assert set(ev.shared_categories) <= set(item.categories) & liked_categories
        assert not ev.shared_creators or ev.shared_creators == [item.creator]
    space = [c for c in found if c.item.id.startswith("s")]
    assert space and all(c.evidence.near_history for c in space)
    assert all(c.evidence.near_history[0][0] in {"s1", "s2"} for c in space)


# --- diversity ---------------------------------------------------------------------------------


def test_mmr_reduces_near_duplicates(world):
    retriever = world(events("ana", ("like", "s1"), ("like", "s2"), ("like", "r1")))

    def redundancy(found):
        vectors = retriever.content.get_vectors(ids(found))
        pairs = itertools.combinations(ids(found), 2)
        return float(np.mean([vectors[a] @ vectors[b] for a, b in pairs]))

    plain = retriever.candidates("ana", Request(), k=4)
    diverse = retriever.candidates("ana", Request(diversity=0.7), k=4)
    assert redundancy(diverse) < redundancy(plain)
    assert len({i[0] for i in ids(diverse)}) > len({i[0] for i in ids(plain)})


# --- behaviour signals -----------------------------------------------------------------------


def test_sequential_signal_finds_what_others_had_next(world):
    # Ten people went from a space book straight to a cookbook; the content space alone would never.
    crowd = [e for n in range(10) for e in events(f"p{n}", ("like", "s1"), ("like", "k5"), ("like", f"r{n % 5 + 1}"))]
    retriever = world(crowd + events("ana", ("like", "s1")))
    found = retriever.candidates("ana", Request(), k=3)
    assert "k5" in ids(found)
    assert next(c for c in found if c.item.id == "k5").evidence.signals["sequential"] > 0


def test_a_low_rated_item_still_says_what_comes_next(world):
    # A 1-star rating means the film was watched: what people had after it stays a clue (measured
    # on MovieLens validation items); an explicit "dislike" is no evidence of having had it.
    crowd = [e for n in range(10) for e in events(f"p{n}", ("like", "s1"), ("like", "k5"), ("like", f"r{n % 5 + 1}"))]
    rated_low = [Event("ana", "rate", T0, "s1", 1.0)]
    disliked = [Event("bob", "view", T0, "s1"), Event("bob", "dislike", T0 + 60, "s1")]
    retriever = world(crowd + rated_low + disliked)
    ana = {c.item.id: c.evidence.signals for c in retriever.candidates("ana", Request(), k=10)}
    bob = {c.item.id: c.evidence.signals for c in retriever.candidates("bob", Request(), k=10)}
    assert ana["k5"]["sequential"] > 0
    assert "sequential" not in bob.get("k5", {})


def test_refit_keeps_the_collab_collection_in_step(world):
    crowd = [e for n in range(6) for e in events(f"p{n}", ("like", "s1"), ("like", "k5"), ("like", "r2"))]
    retriever = world(crowd)
    assert sorted(retriever.collab.all_ids()) == ["k5", "r2", "s1"]
    retriever.store.delete_events("p0")
    retriever.store.add_events([e for n in range(6) for e in events(f"q{n}", ("like", "c3"), ("like", "k5"), ("like", "r4"))])
    for n in range(1, 6):
        retriever.store.delete_events(f"p{n}")
    retriever.refit()
    assert sorted(retriever.collab.all_ids()) == ["c3", "k5", "r4"]  # stale vectors removed


def test_collab_signal_reaches_items_liked_by_similar_people(world):
    crowd = [e for n in range(8) for e in events(f"p{n}", ("like", "s1"), ("like", "s2"), ("like", "k4"))]
    retriever = world(crowd + events("ana", ("like", "s1"), ("like", "s2")), weights={"sequential": 0.0})
    found = retriever.candidates("ana", Request(), k=5)
    k4 = [c for c in found if c.item.id == "k4"]
    assert k4 and k4[0].evidence.signals["collab"] > 0


# --- reading a history --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pairs, liked, disliked, seen",
    [
        ([("view", "a"), ("like", "a")], ["a"], [], {"a"}),
        ([("like", "a"), ("dislike", "a")], [], ["a"], {"a"}),  # the latest opinion wins
        ([("dislike", "a"), ("like", "a")], ["a"], [], {"a"}),
        ([("view", "a"), ("view", "b"), ("search", None)], ["a", "b"], [], {"a", "b"}),
        ([("not_interested", "a"), ("view", "b")], ["b"], ["a"], {"a", "b"}),
    ],
)
def test_user_history_reading(pairs, liked, disliked, seen):
    history = UserHistory.from_events(events("u", *pairs))
    assert [i for i, _ in history.liked] == liked
    assert [i for i, _ in history.disliked] == disliked
    assert history.seen == seen


@pytest.mark.parametrize(
    "kinds, consumed",
    [
        ([("view", "a"), ("rate", "a", 1.0)], ["a"]),  # rated low, still watched
        ([("view", "a"), ("dislike", "a")], []),  # an explicit no
        ([("view", "a"), ("dislike", "a"), ("like", "a")], ["a"]),  # a later yes lifts it
        ([("not_interested", "a"), ("view", "b")], ["b"]),  # "not interested" is not having it
        ([("view", "b"), ("view", "a"), ("view", "b")], ["b", "a"]),  # first time each, in order
    ],
)
def test_consumed_items_feed_the_sequential_signal(kinds, consumed):
    history = UserHistory.from_events([Event("u", kind, T0 + n, item, *rest) for n, (kind, item, *rest) in enumerate(kinds)])
    assert history.consumed == consumed


@pytest.mark.parametrize(
    "rating, weight",
    [(5, 2.0), (4.5, 2.0), (4, 1.0), (3.5, 1.0), (3, 0.25), (2.5, -1.0), (2, -1.0), (1.5, -2.0), (1, -2.0), (0.5, -2.0), (None, 1.0)],
)
def test_half_star_ratings_round_away_from_the_middle(rating, weight):
    # round() sent 0.5 to 0 (an unknown rating, +0.5) and 4.5 to 4: a half star must not flip sign.
    assert rating_weight(rating) == weight


@pytest.mark.parametrize(
    "sequences, recent, best",
    [
        ([["a", "b", "c"]] * 3, ["a"], "b"),
        ([["a", "b", "c"]] * 3, ["b"], "c"),
        ([["a", "b"], ["a", "b"], ["a", "c"]], ["a"], "b"),
        ([["x", "y"], ["a", "b"]] * 2, ["x", "a"], "b"),  # the newest item weighs most
    ],
)
def test_sequential_model_scores_the_likely_next_item(sequences, recent, best):
    model = SequentialModel().fit_sequences(sequences)
    scores = model.scores(recent)
    assert max(scores, key=scores.get) == best
    assert set(recent).isdisjoint({k for k, v in scores.items() if v > scores[best]})


def test_refit_recreates_a_collab_collection_of_another_width(world):
    # A data dir from before collab vectors were padded to a fixed width holds narrower vectors.
    crowd = [e for n in range(6) for e in events(f"p{n}", ("like", "s1"), ("like", "k5"), ("like", "r2"))]
    retriever = world(crowd)
    retriever.collab.reset()
    retriever.collab.upsert(["old1", "old2"], np.eye(2, 8, dtype=np.float32))
    retriever.refit()
    assert sorted(retriever.collab.all_ids()) == ["k5", "r2", "s1"]
    width = {len(v) for v in retriever.collab.get_vectors(["s1", "k5"]).values()}
    assert width == {len(retriever._collab_table.get(["s1"])["s1"])} and width != {8}
