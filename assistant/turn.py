"""What flows between the steps of a chat turn: typed, immutable values, and the parts a turn uses.

A recommendation turn is four plain steps, each a function of the step before:

    understand (assistant.agent)       message + conversation      -> Understood
    plan       (assistant.planning)    Understood + history        -> Plan (the retrieval Request)
    retrieve   (assistant.retrieving)  Plan                        -> Retrieved
    rank       (assistant.ranking)     Retrieved                   -> Ranked
    explain    (assistant.reasons)     Ranked                      -> events, then Explained

Each returns what it produced, its tokens and trace entries included; none edits a value another
step made or a card already yielded. The agent only routes: it yields each step's events in order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import InputError
from retrieval.request import Request
from retrieval.records import Candidate, Event

MAX_MESSAGE_CHARS = 4000
MAX_PRIOR_TURNS = 100
# ASCII only: an id is a key, and look-alike letters from other scripts would make look-alike users.
_USER_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,128}")


@dataclass(frozen=True)
class Parts:
    """The long-lived components a turn uses, injected by the composition root (assistant.engine).

    The retriever and the model are built on first use (an embedder to load, signals to fit, a
    model to map), so they come as zero-argument providers. `forget_fitted` fits the global signals
    again after a user's events were deleted, so nothing published from them survives."""

    settings: Any
    store: Any  # retrieval.store.Store: items and events
    memory: Any  # assistant.memory_store.MemoryStore: conversations and profiles
    retriever: Callable[[], Any]
    llm: Callable[[], Any]  # None when there is no model, or it failed to load
    llm_error: Callable[[], str | None] = lambda: None
    forget_fitted: Callable[[], Any] = lambda: None


@dataclass(frozen=True)
class Understood:
    """The understand step: what the message asks, in the conversation it belongs to."""

    understanding: Any  # assistant.understand.Understanding
    conversation: Any  # assistant.memory.Conversation, this message already added
    last: tuple[dict, ...]  # the cards shown most recently ("the second one")
    target: str | None  # the item the message points at, if any
    notices: tuple[str, ...] = ()
    tokens: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """The plan step: the retrieval request and what the later steps need to know about it."""

    request: Request
    fallbacks: tuple[Request, ...]  # looser requests, tried in order while nothing comes back
    k: int
    note: Mapping[str, Any]  # the request as the Done event and the trace report it
    topic: str
    constraints: Mapping[str, Any]  # what the conversation remembers for the next turn
    history: tuple[Event, ...]
    profile: Mapping[str, Any]
    liked_titles: frozenset[str]
    prefer_shorter: bool


@dataclass(frozen=True)
class Retrieved:
    candidates: tuple[Candidate, ...]
    notices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ranked:
    candidates: tuple[Candidate, ...]
    note: str | None = None  # a warning for the user (the ranking fell back)
    tokens: Mapping[str, int] = field(default_factory=dict)
    trace: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Explained:
    """The explain step's result, after its events: each shown item's final reason and its source."""

    reasons: Mapping[str, tuple[str, str]]  # item_id -> (reason, "llm" | "evidence")
    tokens: Mapping[str, int] = field(default_factory=dict)
    trace: tuple[dict, ...] = ()


def add_tokens(total: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """A new dict: `total` plus `more`, key by key."""
    out = dict(total)
    for key, n in more.items():
        out[key] = out.get(key, 0) + n
    return out


class Timer:
    """Milliseconds per named stage of a turn."""

    def __init__(self):
        self.marks: dict[str, float] = {}
        self._t = self._start = time.perf_counter()

    def elapsed_s(self) -> float:
        """Seconds since the turn began."""
        return time.perf_counter() - self._start

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = round(self.marks.get(name, 0.0) + (now - self._t) * 1000, 1)
        self._t = now


def validate_user_id(user_id: str) -> str:
    """User ids are 1-128 ASCII letters, digits and . _ - @ :"""
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise InputError(f"invalid user_id {user_id!r}: use 1-128 ASCII letters, digits or . _ - @ : characters")
    return user_id


def validate_turns(turns: Sequence[dict]) -> list[dict]:
    """Earlier turns as [{"role", "content"}]: user and assistant kept, system turns skipped."""
    if len(turns) > MAX_PRIOR_TURNS:
        raise InputError(f"history has {len(turns)} turns; send at most the last {MAX_PRIOR_TURNS}")
    out = []
    for n, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in ("user", "assistant", "system") or not isinstance(content, str):
            raise InputError(f"history[{n}]: each turn needs a role (user, assistant or system) and a text content")
        if role != "system" and content.strip():
            out.append({"role": role, "content": content[:MAX_MESSAGE_CHARS]})
    return out


def liked_titles(history: Sequence[Event], title_of: Mapping[str, str]) -> frozenset[str]:
    """What a reason may say the user liked: items they clearly liked (a like, a purchase, a good
    rating; a view is not enough) and never disliked. Nothing else."""
    net: dict[str, float] = {}
    for e in history:
        if e.item_id in title_of:
            net[e.item_id] = net.get(e.item_id, 0.0) + (e.weight if e.weight > 0 else float("-inf"))
    return frozenset(title_of[i] for i, w in net.items() if w >= 1.0)


def prompt_request(query: str, context_note: str | None) -> str:
    """The request as the prompts see it: the message's words plus the platform's context."""
    return f"{query} (context: {context_note})".strip() if context_note else query
