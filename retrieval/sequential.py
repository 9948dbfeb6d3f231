"""Sequential co-occurrence: what people consumed right after the items this user just had."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

from retrieval.records import Event

POSITIVE_MIN_WEIGHT = 0.0  # events with a weight below this (dislikes) do not form transitions


class SequentialModel:
    """Item-to-next-item transition counts within a small window, read with a recency decay."""

    def __init__(self, window: int = 3, decay: float = 0.7, history: int = 5):
        self.window = window  # how many following items count as "next"
        self.decay = decay  # weight of the k-th older history item: decay ** k
        self.history = history  # how many recent history items seed the scores
        self.next: dict[str, Counter] = {}

    def fit(self, events: Iterable[Event]) -> "SequentialModel":
        """Learn transitions from all users' time-ordered positive events."""
        per_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for event in events:
            if event.item_id and event.weight > POSITIVE_MIN_WEIGHT:
                per_user[event.user_id].append((event.timestamp, event.item_id))
        transitions: dict[str, Counter] = defaultdict(Counter)
        for sequence in per_user.values():
            sequence.sort()
            items = [item for _, item in sequence]
            for i, item in enumerate(items):
                for gap, nxt in enumerate(items[i + 1 : i + 1 + self.window]):
                    if nxt != item:
                        transitions[item][nxt] += 1.0 / (gap + 1)
        self.next = dict(transitions)
        return self

    def scores(self, recent_items: list[str], n: int = 200) -> dict[str, float]:
        """Scores of likely next items given the user's recent positive items (newest last)."""
        total: Counter = Counter()
        for age, item in enumerate(reversed(recent_items[-self.history :])):
            following = self.next.get(item)
            if not following:
                continue
            norm = sum(following.values())
            for nxt, count in following.items():
                total[nxt] += (self.decay**age) * count / norm
        return dict(total.most_common(n))
