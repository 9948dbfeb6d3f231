"""What to retrieve for: the Request (text, filters, seeds, options), how its filters read an item,
and a user's history as retrieval reads it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from retrieval.records import Event, Item, item_length
from retrieval.sequential import consumed

EXPLICIT_TYPES = frozenset({"like", "dislike", "not_interested", "rate"})  # the latest one decides
NOT_SEEN_TYPES = frozenset({"search"})
REJECT_TYPES = frozenset({"dislike", "not_interested"})  # "no" without saying it was consumed

_STOP = frozenset(
    "a an the and or of to in on for with by from about like something anything some any more less "
    "me my i you it is are be was were want would love loved book books novel novels film films movie "
    "movies story stories please recommend read watch show give find good great new one only that this "
    "what which who how".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Request:
    """What to retrieve for: request text, filters, items named as seeds, and options (immutable:
    a looser request is a new one, `dataclasses.replace(request, ...)`)."""

    query: str = ""
    # The person's own words in this conversation so far, this message included (newest last):
    # what people who asked in similar words went on to have (retrieval.asked) reads it.
    conversation: str = ""
    categories: list[str] = field(default_factory=list)  # any of these
    exclude_categories: list[str] = field(default_factory=list)
    prefer_categories: list[str] = field(default_factory=list)  # soft: a boost for items in any of these
    prefer_years: tuple[int | None, int | None] | None = None  # soft: (from, to) an era wanted, either end open
    creators: list[str] = field(default_factory=list)  # any of these
    exclude_creators: list[str] = field(default_factory=list)
    year_min: int | None = None
    year_max: int | None = None
    exclude_ids: set[str] = field(default_factory=set)
    seed_item_ids: list[str] = field(default_factory=list)  # items the user named: "like The Matrix"
    avoid_item_ids: list[str] = field(default_factory=list)  # items the user named to say no: "Annie was meh"
    proposed_item_ids: list[str] = field(default_factory=list)  # items a language model proposed by name, best first
    include_seen: bool = False
    diversity: float = 0.0  # MMR trade-off: 0 = relevance only, 0.3 = some variety, 1 = variety only
    extra_filters: dict = field(default_factory=dict)  # platform metadata equality, keys of Item.extra
    exclude_terms: list[str] = field(default_factory=list)  # "no vampires": words in title, tags or text
    max_length: float | None = None  # e.g. minutes available; only items whose length is known and fits

    def is_filtered(self) -> bool:
        return bool(
            self.categories or self.exclude_categories or self.creators or self.exclude_creators
            or self.year_min is not None or self.year_max is not None or self.extra_filters
            or self.exclude_terms or self.max_length is not None
        )

    def accepts(self, item: Item) -> bool:
        """Does this item pass every filter? (The authority: Chroma's `where` only narrows early.)"""
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
        if self.exclude_terms and mentions_any(item, self.exclude_terms):
            return False
        if self.max_length is not None:
            length = item_length(item)
            if length is None or length > self.max_length:
                return False
        return all(item.extra.get(key) == value for key, value in self.extra_filters.items())

    def where(self) -> dict | None:
        """The filters as a Chroma metadata filter (see `item_metadata` for the fields)."""
        clauses: list[dict] = []
        if self.categories:
            anyof = [{"cats": {"$contains": c.lower()}} for c in self.categories]
            clauses.append(anyof[0] if len(anyof) == 1 else {"$or": anyof})
        clauses += [{"cats": {"$not_contains": c.lower()}} for c in self.exclude_categories]
        if self.creators:
            clauses.append({"creator_lc": {"$in": [c.lower() for c in self.creators]}})
        if self.exclude_creators:
            clauses.append({"creator_lc": {"$nin": [c.lower() for c in self.exclude_creators]}})
        if self.year_min is not None:
            clauses.append({"year": {"$gte": int(self.year_min)}})
        if self.year_max is not None:
            clauses.append({"year": {"$lte": int(self.year_max)}})
        for key, value in self.extra_filters.items():
            if isinstance(value, (str, int, float, bool)):
                clauses.append({"x_" + key: value})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")
def _term_pattern(term: str) -> re.Pattern:
    """A word and its plain plural/singular forms, on word boundaries: vampire(s), romance(s)."""
    word = " ".join(term.lower().split())
    if _CJK.search(word):
        return re.compile(re.escape(word))
    stems = {word}
    if len(word) > 3 and word.endswith("s"):
        stems.add(word[:-1])
        if word.endswith("es"):
            stems.add(word[:-2])
    alternatives = "|".join(re.escape(s) for s in sorted(stems, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?:s|es)?(?!\w)")


def mentions_any(item: Item, terms: list[str]) -> bool:
    """Does the item's title, categories, tags or description mention any of the terms?"""
    text = " ".join([item.title, " ".join(item.categories), " ".join(item.tags), item.text or ""]).lower()
    return any(_term_pattern(t).search(text) for t in terms if t.strip())


def item_metadata(item: Item) -> dict:
    """Chroma metadata (scalars or non-empty lists): what `Request.where` filters on."""
    meta: dict = {"title": item.title[:500], "categories": "|" + "|".join(item.categories) + "|"}
    if item.categories:
        meta["cats"] = sorted({c.lower() for c in item.categories})
    if item.year is not None:
        meta["year"] = int(item.year)
    if item.creator:
        meta["creator"] = item.creator
        meta["creator_lc"] = item.creator.lower()
    if item.popularity is not None:
        meta["popularity"] = float(item.popularity)
    for key, value in item.extra.items():
        if isinstance(value, (str, int, float, bool)):
            meta["x_" + key] = value
    return meta


def cjk_terms(query: str, item: Item) -> set[str]:
    """The item's Chinese (or Japanese, Korean) tags and categories that the request contains:
    these scripts put no spaces between words, so `words` finds none to match."""
    return {t for t in [*item.tags, *item.categories] if len(t) >= 2 and _CJK.search(t) and t in query}


def words(text: str) -> set[str]:
    """Content words of a text, lower-cased, a plural 's' dropped."""
    return {w for w in map(content_word, _WORD.findall(text.lower())) if w}


def content_word(token: str) -> str | None:
    """A lower-case token as a content word (a plural 's' dropped), or None for a stop word or one
    shorter than 3 letters."""
    if token in _STOP or len(token) < 3:
        return None
    return token[:-1] if token.endswith("s") and len(token) > 3 else token


@dataclass
class UserHistory:
    """A user's events read for retrieval."""

    opinions: list[tuple[str, float]]  # (item id, net weight != 0), oldest first
    liked: list[tuple[str, float]]  # the positive ones
    disliked: list[tuple[str, float]]  # the negative ones
    # Items the user had, oldest first, for the sequential signal. Low ratings stay in: a film
    # rated 1 star was still watched, and dropping such items cost NDCG@10 ~0.007 on MovieLens
    # validation items (evaluation/reports/experiments.md). An explicit "no" removes the item.
    consumed: list[str]
    seen: set[str]  # every item the user interacted with (search excluded)
    # Items whose latest opinion is a stated positive one (a like, a good rating): only these may be
    # called "liked" in a reason; a view, a purchase or "I've seen it" is history, not a verdict.
    said_liked: set[str] = field(default_factory=set)

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> "UserHistory":
        events = sorted((e for e in events if e.item_id), key=lambda e: e.timestamp)
        implicit: dict[str, float] = {}
        explicit: dict[str, float] = {}
        last_seen: dict[str, int] = {}
        had: dict[str, None] = {}
        rejected: set[str] = set()  # the latest explicit opinion is dislike / not_interested
        seen: set[str] = set()
        for position, event in enumerate(events):
            if event.type not in NOT_SEEN_TYPES:
                seen.add(event.item_id)
            if consumed(event):
                had.setdefault(event.item_id)
            if event.type in EXPLICIT_TYPES:
                explicit[event.item_id] = event.weight  # a later opinion replaces an earlier one
                if event.type in REJECT_TYPES:
                    rejected.add(event.item_id)
                else:
                    rejected.discard(event.item_id)
            elif event.weight:
                implicit[event.item_id] = implicit.get(event.item_id, 0.0) + event.weight
            last_seen[event.item_id] = position
        net = {i: explicit.get(i, implicit.get(i, 0.0)) for i in last_seen}
        opinions = [(i, net[i]) for i in sorted(net, key=lambda i: last_seen[i]) if net[i]]
        return cls(
            opinions=opinions,
            liked=[(i, w) for i, w in opinions if w > 0],
            disliked=[(i, w) for i, w in opinions if w < 0],
            consumed=[i for i in had if i not in rejected],
            seen=seen,
            said_liked={i for i, w in explicit.items() if w > 0},
        )
