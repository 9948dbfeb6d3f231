"""The retrieve step: candidates for the plan's request, looser requests while nothing comes back."""

from __future__ import annotations

from assistant.replies import reply
from assistant.turn import Plan, Retrieved
from retrieval.records import Candidate, item_length


def retrieve(retriever, plan: Plan, user_id: str, n: int, language: str) -> Retrieved:
    """Up to `n` candidates (more than the k shown: the ranking chooses among them)."""
    history = list(plan.history)
    candidates: list[Candidate] = []
    for request in (plan.request, *plan.fallbacks):
        candidates = retriever.candidates(user_id, request, k=n, history=history)
        if candidates:
            break
    notices: tuple[str, ...] = ()
    if plan.prefer_shorter:
        candidates, note = prefer_shorter(candidates, language)
        notices = (note,) if note else ()
    return Retrieved(tuple(candidates), notices)


def prefer_shorter(candidates: list[Candidate], language: str = "en") -> tuple[list[Candidate], str | None]:
    """Keep the shorter half when the catalog knows lengths; otherwise say we can't tell."""
    lengths = [item_length(c.item) for c in candidates]
    known = [n for n in lengths if n is not None]
    if not known:
        return candidates, reply("no_lengths", language)
    median = sorted(known)[len(known) // 2]
    return [c for c, n in zip(candidates, lengths) if (n or median) <= median], None
