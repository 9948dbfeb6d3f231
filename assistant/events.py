"""The typed events one chat turn yields; the UI, the HTTP API and the CLI all consume these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Union


@dataclass
class Card:
    """One recommended item as shown to the user."""

    item_id: str
    title: str
    score: float
    year: int | None = None
    creator: str | None = None
    categories: list[str] = field(default_factory=list)
    reason: str = ""
    reason_source: Literal["", "llm", "evidence"] = ""  # who wrote the reason
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CardsEvent:
    """Cards to show. stage 'retrieved' comes first (fast), 'ranked' replaces it after the LLM."""

    cards: list[Card]
    stage: Literal["retrieved", "ranked"]
    type: str = "cards"


@dataclass
class ReasonDelta:
    """A piece of one card's reason as the model writes it."""

    item_id: str
    text: str
    type: str = "reason_delta"


@dataclass
class ReasonEvent:
    """One card's final, checked reason."""

    item_id: str
    text: str
    source: Literal["llm", "evidence"]
    type: str = "reason"


@dataclass
class TextDelta:
    """Free text for the user (the summary or a direct answer) as it streams."""

    text: str
    type: str = "text_delta"


@dataclass
class MessageEvent:
    """A complete text answer: the list summary, an answer about an item, or small talk."""

    text: str
    kind: Literal["summary", "answer", "smalltalk", "onboarding", "feedback"] = "summary"
    type: str = "message"


@dataclass
class NoticeEvent:
    """Something the user should know, e.g. the LLM was unavailable and a fallback was used."""

    text: str
    level: Literal["info", "warning"] = "info"
    type: str = "notice"


@dataclass
class DoneEvent:
    """The last event of a turn: which session, what was understood, timings and token counts."""

    session_id: str
    intent: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    request: dict = field(default_factory=dict)
    type: str = "done"


TurnEvent = Union[CardsEvent, ReasonDelta, ReasonEvent, TextDelta, MessageEvent, NoticeEvent, DoneEvent]


def event_to_dict(event: TurnEvent) -> dict:
    """JSON-ready form of any turn event (used for SSE and logs)."""
    return asdict(event)
