"""Profiles derived from behaviour, with the user's own corrections on top."""

import pytest

from assistant.profile import apply_patch, derive_profile, profile_query
from retrieval.records import Event, Item

ITEMS = {
    "a": Item("a", "Sea Wolf", categories=["Adventure"], tags=["sea"], creator="Jack London"),
    "b": Item("b", "White Fang", categories=["Adventure"], tags=["wolves"], creator="Jack London"),
    "c": Item("c", "Dracula", categories=["Horror"], tags=["vampires"], creator="Bram Stoker"),
    "d": Item("d", "Emma", categories=["Romance"], tags=["matchmaking"], creator="Jane Austen"),
}


def ev(item, kind, t, value=None):
    return Event(user_id="u", type=kind, timestamp=float(t), item_id=item, value=value)


def test_interests_dislikes_and_summary_from_events():
    events = [ev("a", "like", 1), ev("b", "rate", 2, 5), ev("c", "dislike", 3), ev("d", "view", 4)]
    p = derive_profile("u", events, ITEMS)
    tags = [i["tag"] for i in p["interests"]]
    assert tags[0] == "Adventure"
    assert "Horror" in p["dislikes"] and "Horror" not in tags
    assert "Jack London" in p["creators"]
    assert "Adventure" in p["summary"] and "Horror" in p["summary"]


def test_every_new_event_changes_the_profile():
    events = [ev("a", "like", 1)]
    before = derive_profile("u", events, ITEMS)
    after = derive_profile("u", events + [ev("d", "like", 2), ev("d", "purchase", 3)], ITEMS)
    assert before["interests"] != after["interests"]
    assert "Romance" in [i["tag"] for i in after["interests"]]


def test_recency_makes_recent_likes_weigh_more():
    old = [ev("d", "like", t) for t in range(1)] + [ev("a", "view", t) for t in range(2, 60)]
    p = derive_profile("u", old + [ev("c", "like", 100)], ITEMS)
    weights = {i["tag"]: i["weight"] for i in p["interests"]}
    assert weights["Horror"] > weights["Romance"]


@pytest.mark.parametrize(
    "patch,check",
    [
        ({"interests": [{"tag": "Poetry", "weight": 1.5}]}, lambda p: p["interests"][0]["tag"] == "Poetry"),
        ({"dislikes": ["Romance"]}, lambda p: "Romance" in p["dislikes"]),
        ({"removed_dislikes": ["Horror"]}, lambda p: "Horror" not in p["dislikes"]),
        ({"summary": "Only sea stories."}, lambda p: p["summary"] == "Only sea stories."),
        ({"onboarding": ["gothic ghost stories"]}, lambda p: "gothic ghost stories" in profile_query(p)),
    ],
)
def test_corrections_apply(patch, check):
    events = [ev("a", "like", 1), ev("c", "dislike", 2)]
    p = derive_profile("u", events, ITEMS, apply_patch({}, patch))
    assert check(p) and p["edited"]


def test_new_user_summary_invites_them_to_talk():
    assert "no history" in derive_profile("new", [], ITEMS)["summary"]


def test_non_finite_weights_are_rejected():
    with pytest.raises(ValueError):
        apply_patch({}, {"interests": {"x": float("nan")}})
