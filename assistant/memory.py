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

    def constraints(self) -> dict:
        """Constraints in force (they persist across turns until changed)."""
        for turn in reversed(self.turns):
            if turn.role == "assistant" and "constraints" in turn.payload:
                return dict(turn.payload["constraints"])
        return {}

    def shown_ids(self) -> list[str]:
        """Every item shown in this session, so refinements bring new items first."""
        seen: list[str] = []
        for turn in self.turns:
            for card in turn.payload.get("cards", []) if turn.role == "assistant" else []:
                if card["item_id"] not in seen:
                    seen.append(card["item_id"])
        return seen

    def recent_text(self, turns: int = 4) -> list[tuple[str, str]]:
        return [(t.role, t.content) for t in self.turns[-turns:]]

    def add(self, store, role: str, content: str, payload: dict | None = None) -> None:
        payload = payload or {}
        self.turns.append(Turn(role, content, payload))
        if self.persist:
                store.append_message(self.user_id, self.session_id, role, content, payload)
