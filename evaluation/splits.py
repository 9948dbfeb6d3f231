"""Leave-one-out splits by timestamp: last item = test, second-to-last = validation, the rest = training.

Follows LlamaRec's preparation so numbers compare: every rating counts as an interaction (no
rating threshold), each user's items are ordered by (timestamp, item id), and the optional
filter keeps users and items with at least 5 interactions, repeated until both hold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np

from core.errors import ConfigError
from retrieval.records import Event, Item

StageName = Literal["valid", "test"]
# A search has no item; everything else with an item is "the user touched this item".
NON_INTERACTIONS = frozenset({"search"})


@dataclass
class UserSplit:
    """One user's chronological interactions cut into training, validation and test."""

    user_id: str
    train: list[Event]
    valid: Event
    test: Event

    def history(self, stage: StageName) -> list[Event]:
        """What the model may see when predicting the stage's item (test also sees the validation item)."""
        return self.train if stage == "valid" else [*self.train, self.valid]

    def target(self, stage: StageName) -> Event:
        return self.valid if stage == "valid" else self.test


@dataclass
class Stage:
    """One stage as index arrays, the form the batched scorers use."""

    name: StageName
    item_ids: list[str]
    user_ids: list[str]
    histories: list[np.ndarray]  # item indices, oldest first
    weights: list[np.ndarray]  # Event.weight of each history entry (rating -> preference)
    times: list[np.ndarray]
    targets: np.ndarray  # item index of each user's held-out item
    target_times: np.ndarray | None = None  # its timestamp: "now" for signals that know when they are asked

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def subset(self, rows: Sequence[int]) -> "Stage":
        """The same stage restricted to some users (rows keep their order)."""
        rows = list(rows)
        return Stage(
            self.name,
            self.item_ids,
            [self.user_ids[r] for r in rows],
            [self.histories[r] for r in rows],
            [self.weights[r] for r in rows],
            [self.times[r] for r in rows],
            self.targets[rows],
            None if self.target_times is None else self.target_times[rows],
        )


@dataclass
class Split:
    """The catalog the protocols rank over and each user's leave-one-out split."""

    items: list[Item]
    users: list[UserSplit]
    min_count: int = 0
    counts: dict = field(default_factory=dict)  # what was kept and dropped, for the report

    def item_index(self) -> dict[str, int]:
        return {item.id: i for i, item in enumerate(self.items)}

    def stage(self, name: StageName) -> Stage:
        """Index arrays for one stage (valid: history = train; test: history = train + valid)."""
        if name not in ("valid", "test"):
            raise ConfigError(f"unknown stage {name!r}; use 'valid' or 'test'")
        index = self.item_index()
        histories, weights, times, targets, target_times = [], [], [], [], []
        for user in self.users:
            events = user.history(name)
            histories.append(np.array([index[e.item_id] for e in events], dtype=np.int64))
            weights.append(np.array([e.weight for e in events], dtype=np.float32))
            times.append(np.array([e.timestamp for e in events], dtype=np.float64))
            targets.append(index[user.target(name).item_id])
            target_times.append(user.target(name).timestamp)
        return Stage(
            name,
            [item.id for item in self.items],
            [u.user_id for u in self.users],
            histories,
            weights,
            times,
            np.array(targets, dtype=np.int64),
            np.array(target_times, dtype=np.float64),
        )


def _order_key(event: Event) -> tuple:
    item = event.item_id or ""
    # Numeric ids sort as numbers so "10" follows "9", as LlamaRec's integer ids do.
    return (event.timestamp, (0, int(item), "") if item.isdigit() else (1, 0, item))


def interactions(events: Iterable[Event], catalog_ids: set[str]) -> tuple[list[Event], Counter]:
    """Events that name a catalog item, one per (user, item): the first time the user met it."""
    dropped: Counter = Counter()
    first: dict[tuple[str, str], Event] = {}
    for event in sorted(events, key=_order_key):
        if event.item_id is None or event.type in NON_INTERACTIONS:
            dropped["no_item"] += 1
        elif event.item_id not in catalog_ids:
            dropped["item_not_in_catalog"] += 1
        elif (event.user_id, event.item_id) in first:
            dropped["repeat_of_same_item"] += 1
        else:
            first[(event.user_id, event.item_id)] = event
    return list(first.values()), dropped


def filter_min_count(events: list[Event], min_count: int) -> list[Event]:
    """Keep users and items with >= min_count interactions, repeating until both hold (LlamaRec)."""
    while min_count > 1:
        per_item = Counter(e.item_id for e in events)
        per_user = Counter(e.user_id for e in events)
        if min(per_item.values(), default=min_count) >= min_count and min(
            per_user.values(), default=min_count
        ) >= min_count:
            break
        events = [e for e in events if per_item[e.item_id] >= min_count]
        per_user = Counter(e.user_id for e in events)
        events = [e for e in events if per_user[e.user_id] >= min_count]
    return events


def leave_one_out(items: Sequence[Item], events: Iterable[Event], *, min_count: int = 0) -> Split:
    """Split every user's history by time; min_count=5 reproduces LlamaRec's filtering."""
    catalog = {item.id: item for item in items}
    kept, dropped = interactions(events, set(catalog))
    kept = filter_min_count(kept, min_count)
    per_user: dict[str, list[Event]] = {}
    for event in kept:  # already in (timestamp, item) order
        per_user.setdefault(event.user_id, []).append(event)
    users = []
    too_short = 0
    for user_id in sorted(per_user, key=lambda u: (0, int(u), "") if u.isdigit() else (1, 0, u)):
        seq = per_user[user_id]
        if len(seq) < 3:
            too_short += 1
            continue
        users.append(UserSplit(user_id, seq[:-2], seq[-2], seq[-1]))
    if not users:
        raise ConfigError(
            "no user has 3 or more interactions with catalog items, so nothing can be held out; "
            "check the events mapping (item ids must match the catalog's ids)"
        )
    used = {e.item_id for e in kept} if min_count > 1 else set(catalog)
    split_items = [item for item in items if item.id in used]
    counts = {
        "users": len(users),
        "items": len(split_items),
        "interactions": sum(len(u.train) + 2 for u in users),
        "users_with_fewer_than_3": too_short,
        **{f"dropped_{k}": v for k, v in dropped.items()},
    }
    return Split(split_items, users, min_count, counts)
