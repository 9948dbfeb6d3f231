"""User profiles: weighted interests, dislikes and a short summary, derived from behaviour.

The profile is recomputed from the event history on read (so it reflects every event at once);
what the user corrects by hand is stored as overrides on top of it.
"""

from __future__ import annotations

import math
from collections import defaultdict

from retrieval.records import Event, Item

HISTORY_LIMIT = 500  # most recent events considered
HALF_LIFE_EVENTS = 20  # an event 20 events ago counts half


def derive_profile(user_id: str, events: list[Event], items: dict[str, Item], overrides: dict | None = None) -> dict:
    """Profile from events (oldest first) plus the user's own corrections."""
    overrides = overrides or {}
    events = events[-HISTORY_LIMIT:]
    tag_weight: dict[str, float] = defaultdict(float)
    creator_weight: dict[str, float] = defaultdict(float)
    liked: list[tuple[float, str]] = []
    disliked_titles: list[str] = []
    disliked_tags: dict[str, float] = defaultdict(float)
    searches: list[str] = []
    n = len(events)
    for age, event in enumerate(reversed(events)):
        decay = 0.5 ** (age / HALF_LIFE_EVENTS)
        if event.type == "search" and event.text:
            searches.append(event.text)
            continue
        item = items.get(event.item_id or "")
        if item is None:
            continue
        w = event.weight * decay
        labels = [c for c in item.categories] + [t for t in item.tags]
        if w >= 0:
            for label in labels:
                tag_weight[label] += w
            if item.creator:
                creator_weight[item.creator] += w
            liked.append((w, item.title))
        else:
            disliked_titles.append(item.title)
            for label in labels:
                disliked_tags[label] += -w
    searches.reverse()  # oldest first: the newest are the recent ones
    if not searches:  # a new user's first words (kept before any search event was)
        searches = list(overrides.get("onboarding", []))

    # Weights shown (and set by hand) are relative: 1.0 is the strongest interest.
    scale = max([w for w in tag_weight.values() if w > 0], default=1.0)
    relative = {t: w / scale for t, w in tag_weight.items() if w > 0}
    for tag, weight in (overrides.get("interests") or {}).items():
        relative[tag] = float(weight)
    for tag in overrides.get("removed_interests", []):
        relative.pop(tag, None)
    top = sorted(((t, w) for t, w in relative.items() if w > 0), key=lambda x: -x[1])[:12]
    interests = [{"tag": t, "weight": round(w, 3)} for t, w in top]
    # A tag is a dislike when it is mostly negative: disliked more than liked.
    auto_dislikes = [t for t, w in sorted(disliked_tags.items(), key=lambda x: -x[1]) if w > tag_weight.get(t, 0.0) + 0.5][:5]
    dislikes = list(dict.fromkeys(list(overrides.get("dislikes", [])) + auto_dislikes))
    for tag in overrides.get("removed_dislikes", []):
        if tag in dislikes:
            dislikes.remove(tag)
    top_creators = [c for c, w in sorted(creator_weight.items(), key=lambda x: -x[1]) if w > 1.0][:3]
    favourites = [t for _, t in sorted(liked, key=lambda x: -x[0])[:3]]
    summary = overrides.get("summary") or _summary(interests, top_creators, favourites, dislikes, searches, n)
    return {
        "user_id": user_id,
        "interests": interests,
        "creators": top_creators,
        "favourites": favourites,
        "dislikes": dislikes,
        "disliked_titles": disliked_titles[:10],
        "recent_searches": searches[-5:],
        "summary": summary,
        "events": n,
        "onboarding": list(overrides.get("onboarding", [])),
        "edited": bool(overrides),
    }


def _summary(interests, creators, favourites, dislikes, searches, n_events) -> str:
    if not interests and not searches:
        return "New here: no history yet. Tell me what you like, or name a favourite."
    parts = []
    if interests:
        tags = ", ".join(i["tag"] for i in interests[:4])
        parts.append(f"Enjoys {tags}")
    if creators:
        parts.append("especially " + " and ".join(creators[:2]))
    sentence = "; ".join(parts) + "." if parts else ""
    if favourites:
        sentence += f" Recently liked {', '.join(favourites[:2])}."
    if searches:
        sentence += f" Looked for \"{searches[-1]}\"."
    if dislikes:
        sentence += f" Avoids {', '.join(dislikes[:3])}."
    return sentence.strip()


def profile_query(profile: dict) -> str:
    """Free text describing stated interests (onboarding answers, hand-added tags) for retrieval."""
    parts = list(profile.get("onboarding", []))
    if profile.get("edited"):
        parts += [i["tag"] for i in profile.get("interests", [])[:5]]
    return " ".join(parts)


def apply_patch(overrides: dict, patch: dict) -> dict:
    """Merge a user's correction into their stored overrides. Unknown keys are an error upstream."""
    out = dict(overrides)
    if "interests" in patch and patch["interests"] is not None:
        value = patch["interests"]
        if isinstance(value, list):
            value = {
                (v["tag"] if isinstance(v, dict) else str(v)): float(v.get("weight", 1.0)) if isinstance(v, dict) else 1.0
                for v in value
            }
        out["interests"] = {str(k): _finite(w) for k, w in value.items()}
    for key in ("dislikes", "removed_interests", "removed_dislikes", "onboarding"):
        if key in patch and patch[key] is not None:
            out[key] = [str(x) for x in patch[key]]
    if "summary" in patch and patch["summary"] is not None:
        out["summary"] = str(patch["summary"])[:1000]
    return out


def _finite(value) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("interest weights must be finite numbers")
    return value
