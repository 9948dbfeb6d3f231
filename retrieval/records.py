"""Plain records that flow through recassist: catalog items, behaviour events, candidates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

EVENT_TYPES = ("view", "click", "like", "dislike", "rate", "purchase", "search", "comment", "mention")
# Feedback a card can receive in the UI/API; stored as events like any other.
FEEDBACK_TYPES = ("like", "dislike", "not_interested", "seen")
ALL_EVENT_TYPES = EVENT_TYPES + ("not_interested", "seen")

# How much one event says about liking its item; negative pushes away. Ratings map around 3.
EVENT_WEIGHTS = {
    "view": 0.5,
    "click": 0.7,
    "seen": 0.6,
    "comment": 1.0,
    "mention": 1.0,  # named in a conversation without a verdict (a loaded dialog log)
    "purchase": 1.5,
    "like": 2.0,
    "rate": 1.0,  # replaced by rating_weight(value)
    "dislike": -2.0,
    "not_interested": -1.5,
    "search": 0.0,
}


# (lowest rating, weight), best first. Half stars round away from the middle (4.5 counts as 5, 3.5
# as 4, 2.5 as 2, 1.5 and 0.5 as 1): round() sent 0.5 to +0.5 and 4.5 to +1 (banker's rounding).
RATING_LEVELS = ((4.5, 2.0), (3.5, 1.0), (2.75, 0.25), (1.75, -1.0))


def rating_weight(value: float | None) -> float:
    """A 1-5 rating (half stars allowed) as a preference weight: 5 -> +2, 4 -> +1, 3 -> 0.25, 2 -> -1, 1 -> -2."""
    if value is None:
        return 1.0
    return next((weight for lowest, weight in RATING_LEVELS if value >= lowest), -2.0)


def event_weight(event_type: str, value: float | None) -> float:
    """Preference weight of one event (positive = liked)."""
    if event_type == "rate":
        return rating_weight(value)
    return EVENT_WEIGHTS.get(event_type, 0.0)


@dataclass
class Item:
    """One catalog entry. `extra` keeps any platform metadata (filterable)."""

    id: str
    title: str
    text: str = ""
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    year: int | None = None
    creator: str | None = None
    popularity: float | None = None
    extra: dict = field(default_factory=dict)
    published_at: float | None = None  # epoch seconds; a time-sensitive catalog decays old items (retrieval.freshness)

    def document(self) -> str:
        """The text that gets embedded: title, creator, year, categories, tags and description."""
        head = self.title
        if self.creator:
            head += f" by {self.creator}"
        if self.year is not None:
            head += f" ({self.year})"
        parts = [head]
        if self.categories:
            parts.append("Categories: " + ", ".join(self.categories))
        if self.tags:
            parts.append("Tags: " + ", ".join(self.tags))
        if self.text:
            parts.append(self.text)
        return ". ".join(parts)

    def fingerprint(self) -> str:
        """Content hash: an unchanged item is not re-embedded on re-ingest."""
        # self.__dict__ rather than asdict(): asdict deep-copies and dominated ingest time.
        fields = self.__dict__
        if fields.get("published_at") is None:  # as before the field existed: stored items are not re-embedded
            fields = {k: v for k, v in fields.items() if k != "published_at"}
        payload = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict:
        return asdict(self)


LENGTH_KEYS = ("pages", "length", "runtime", "minutes", "duration", "word_count")


def item_length(item: Item) -> float | None:
    """The item's length from its platform metadata (pages, runtime...), or None when unknown."""
    for key in LENGTH_KEYS:
        value = item.extra.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# What a person told the assistant in chat ("I loved Heat") is logged as an event whose text is
# "chat <session id>". It says what they liked, not what they did now: it counts for their own
# answers, for popularity and for co-occurrence, but never makes a work trending (the time is
# when it was said, not when it was watched or read).
CHAT_SOURCE = "chat "
# (substr, not LIKE 'chat %': psycopg would read the % as a placeholder)
STATED_IN_CHAT_SQL = f"CASE WHEN substr(text, 1, {len(CHAT_SOURCE)}) = '{CHAT_SOURCE}' THEN 1 ELSE 0 END"


# The text of a search typed in words, NULL for every other event: the one text the fitting job reads.
SAID_SQL = "CASE WHEN type = 'search' THEN text END"


def stated_in_chat(text: str | None) -> bool:
    return bool(text) and text.startswith(CHAT_SOURCE)


@dataclass
class Event:
    """One thing a user did. `timestamp` is seconds since the epoch (UTC)."""

    user_id: str
    type: str
    timestamp: float
    item_id: str | None = None
    value: float | None = None
    text: str | None = None

    def __post_init__(self):
        # 4 and 4.0 must give the same id, whichever way the event arrived.
        self.timestamp = float(self.timestamp)
        if self.value is not None:
            self.value = float(self.value)

    @property
    def id(self) -> str:
        """Deterministic id: re-ingesting the same event never duplicates it."""
        key = f"{self.user_id}\x1f{self.item_id}\x1f{self.type}\x1f{self.timestamp!r}\x1f{self.value!r}\x1f{self.text}"
        return hashlib.sha1(key.encode("utf-8")).hexdigest()

    @property
    def weight(self) -> float:
        return event_weight(self.type, self.value)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evidence:
    """Why a candidate was retrieved; reasons are built from this and checked against it."""

    near_history: list[tuple[str, str, float]] = field(default_factory=list)  # (item_id, title, similarity)
    matched_words: list[str] = field(default_factory=list)
    shared_categories: list[str] = field(default_factory=list)
    shared_creators: list[str] = field(default_factory=list)
    signals: dict[str, float] = field(default_factory=dict)  # signal name -> its score
    # The near_history items the user said they liked (a like, a good rating); the others they only
    # had (viewed, bought, said they had seen). None: not known (cards stored before), all "liked".
    said_liked: list[str] | None = None
    # The shared_categories found among items the user said they liked (None: not known, all).
    said_liked_categories: list[str] | None = None
    # The shared_creators of items the user said they liked (None: not known, all).
    said_liked_creators: list[str] | None = None

    def may_call_liked(self, item_id: str) -> bool:
        """Whether this near_history item may be called liked (a stated like, or not known)."""
        return self.said_liked is None or item_id in self.said_liked

    def liked_near(self, n: int = 2) -> bool:
        """Whether each of the first n near_history items may be called liked."""
        return all(self.may_call_liked(i) for i, _, _ in self.near_history[:n])

    def liked_categories(self, n: int = 3) -> bool:
        """Whether each of the first n shared_categories comes from an item the user said they liked."""
        return self.said_liked_categories is None or all(c in self.said_liked_categories for c in self.shared_categories[:n])

    def liked_creators(self, n: int = 2) -> bool:
        """Whether each of the first n shared_creators wrote (or made) an item the user said they liked."""
        return self.said_liked_creators is None or all(c in self.said_liked_creators for c in self.shared_creators[:n])

    def to_dict(self) -> dict:
        return {
            "near_history": [
                {"item_id": i, "title": t, "similarity": round(s, 4)} for i, t, s in self.near_history
            ],
            "matched_words": self.matched_words,
            "shared_categories": self.shared_categories,
            "shared_creators": self.shared_creators,
            "signals": {k: round(v, 4) for k, v in self.signals.items()},
            **({"said_liked": self.said_liked} if self.said_liked is not None else {}),
            **({"said_liked_categories": self.said_liked_categories} if self.said_liked_categories is not None else {}),
            **({"said_liked_creators": self.said_liked_creators} if self.said_liked_creators is not None else {}),
        }


@dataclass
class Candidate:
    """A retrieved item with its fused score and the evidence that found it."""

    item: Item
    score: float
    evidence: Evidence = field(default_factory=Evidence)
