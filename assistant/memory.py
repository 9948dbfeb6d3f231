"""Conversation memory: the turns of one user's session, persisted in the store, resumable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


def new_session_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    content: str
    payload: dict = field(default_factory=dict)


@dataclass
class SessionEvidence:
    """Works the conversation so far named: seeds (oldest first), the ones said no to, every id named."""

    seeds: list[str] = field(default_factory=list)
    said_no: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)

    def add(self, item_ids: list[str], stance: str) -> None:
        """One work (its ids, the best first) and what was said about it; a later verdict wins."""
        if not item_ids:
            return
        self.named.update(item_ids)
        if stance == "disliked":
            self.said_no.update(item_ids)
            self.seeds = [i for i in self.seeds if i not in item_ids]
        else:
            self.said_no.difference_update(item_ids)
            self.seeds = [i for i in self.seeds if i != item_ids[0]] + [item_ids[0]]


@dataclass
class Conversation:
    """The turns so far. State that later turns need (last list, constraints) lives in payloads."""

    user_id: str
    session_id: str
    turns: list[Turn] = field(default_factory=list)
    persist: bool = True  # False: a dry run (the prompt lab) that leaves no trace in the store

    @classmethod
    def load(cls, store, user_id: str, session_id: str | None) -> "Conversation":
        """Resume a session (only this user's) or start a new one."""
        if not session_id:
            return cls(user_id, new_session_id())
        rows = store.get_messages(user_id, session_id)
        turns = [Turn(r["role"], r["content"], r.get("payload") or {}) for r in rows]
        return cls(user_id, session_id, turns)

    def _last_assistant(self) -> dict:
        for turn in reversed(self.turns):
            if turn.role == "assistant" and turn.payload.get("cards") is not None:
                return turn.payload
        return {}

    def last_cards(self) -> list[dict]:
        """The cards shown most recently (what "the second one" refers to)."""
        return list(self._last_assistant().get("cards", []))

    def last_request(self) -> dict:
        """The request behind the cards shown most recently (a refinement keeps its topic)."""
        return dict(self._last_assistant().get("request", {}))

    def language(self) -> str | None:
        """The language of the user's latest message (None before the first)."""
        for turn in reversed(self.turns):
            if turn.role == "user" and turn.payload.get("understanding", {}).get("language"):
                return turn.payload["understanding"]["language"]
        return None

    def constraints(self) -> dict:
        """Constraints in force (they persist across turns until changed)."""
        for turn in reversed(self.turns):
            if turn.role == "assistant" and "constraints" in turn.payload:
                return dict(turn.payload["constraints"])
        return {}

    def shown_ids(self) -> list[str]:
        """Every item shown in this session: left out when the person asks for others ("something else")."""
        seen: list[str] = []
        for turn in self.turns:
            for card in turn.payload.get("cards", []) if turn.role == "assistant" else []:
                if card["item_id"] not in seen:
                    seen.append(card["item_id"])
        return seen

    def evidence(self) -> "SessionEvidence":
        """What the earlier turns said about works: named by the user (with a verdict) or suggested.

        A suggestion is an item the assistant named in an imported turn (its own cards have the
        feedback intent and its references). A verdict in the user's next message that names no
        title of its own ("loved it", "not for me") is about those suggestions: for or against them."""
        evidence = SessionEvidence()
        suggested: list[str] = []
        for turn in self.turns:
            if turn.role == "assistant":
                suggested = list(turn.payload.get("suggested", []))
                evidence.named.update(turn.payload.get("suggested", []))
                continue
            understanding = turn.payload.get("understanding", {})
            mentions = understanding.get("mentions", [])
            for mention in mentions:
                evidence.add(mention["item_ids"], mention["stance"])
            verdict = understanding.get("feedback")
            if suggested and not mentions and verdict in ("like", "dislike", "not_interested"):
                evidence.add(suggested, "liked" if verdict == "like" else "disliked")
            suggested = []
        return evidence

    def taste_so_far(self, turns: int = 2) -> tuple[str, list[str]]:
        """What the user's earlier messages asked for (their request words, the latest `turns`) and
        the genres they named, the current message left out."""
        users = [t for t in self.turns if t.role == "user"][:-1]
        # Only turns that asked for items: "tell me about the third one" or "hi" is no taste.
        queries = [t.payload.get("understanding", {}).get("query", "") for t in users
                   if t.payload.get("understanding", {}).get("intent", "recommend") in ("recommend", "refine")]
        categories: list[str] = []
        for turn in users:
            said = turn.payload.get("understanding", {})
            categories += [c for c in said.get("categories", []) + said.get("prefer_categories", []) if c not in categories]
        return " ".join([q for q in queries if q][-turns:]), categories

    def era_so_far(self) -> str:
        """The era ("old" / "new") the user's latest earlier message that named one asked for."""
        users = [t for t in self.turns if t.role == "user"][:-1]
        return next((t.payload.get("understanding", {}).get("era", "") for t in reversed(users)
                     if t.payload.get("understanding", {}).get("era")), "")

    def recent_text(self, turns: int = 4) -> list[tuple[str, str]]:
        return [(t.role, t.content) for t in self.turns[-turns:]]

    def add(self, store, role: str, content: str, payload: dict | None = None) -> None:
        payload = payload or {}
        self.turns.append(Turn(role, content, payload))
        if self.persist:
                store.append_message(self.user_id, self.session_id, role, content, payload)
