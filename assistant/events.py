"""The typed events one chat turn yields; the UI, the HTTP API and the CLI all consume these."""

from __future__ import annotations

from collections.abc import Iterable
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


@dataclass
class TurnState:
    """What a turn has said so far; `apply` folds one event in (shared by the API and the UI)."""

    cards: list[Card] = field(default_factory=list)
    stage: str = ""
    reasons: dict[str, str] = field(default_factory=dict)  # item_id -> reason so far, or final
    sources: dict[str, str] = field(default_factory=dict)  # item_id -> who wrote its final reason ("llm", "evidence")
    text: str = ""  # the summary or direct answer, as streamed
    notices: list[str] = field(default_factory=list)
    done: DoneEvent | None = None
    _writing: set[str] = field(default_factory=set, repr=False)  # reasons still streaming
    _segment: int | None = field(default=None, repr=False)  # where the streaming text began

    def apply(self, event) -> None:
        if isinstance(event, CardsEvent):
            self.cards, self.stage = list(event.cards), event.stage
            self.reasons = {c.item_id: c.reason for c in self.cards if c.reason}
            self.sources = {}
        elif isinstance(event, ReasonDelta):
            if event.item_id not in self._writing:  # the first piece replaces a provisional reason
                self._writing.add(event.item_id)
                self.reasons[event.item_id] = ""
            self.reasons[event.item_id] += event.text
        elif isinstance(event, ReasonEvent):
            self._writing.discard(event.item_id)
            self.reasons[event.item_id] = event.text
            self.sources[event.item_id] = event.source
        elif isinstance(event, TextDelta):
            if self._segment is None:
                self.text += "\n\n" if self.text else ""
                self._segment = len(self.text)
            self.text += event.text
        elif isinstance(event, MessageEvent):
            if self._segment is not None:  # the complete message replaces what streamed
                self.text, self._segment = self.text[: self._segment] + event.text, None
            else:
                self.text += ("\n\n" if self.text else "") + event.text
        elif isinstance(event, NoticeEvent):
            self.notices.append(event.text)
        elif isinstance(event, DoneEvent):
            self.done = event

    @property
    def writing(self) -> set[str]:
        """Items whose reason the model is still writing."""
        return set(self._writing)

    def items(self) -> list[dict]:
        """The current cards as dicts, each with its reason so far."""
        out = []
        for card in self.cards:
            d = card.to_dict()
            d["reason"] = self.reasons.get(card.item_id, card.reason)
            d["reason_source"] = self.sources.get(card.item_id, card.reason_source)
            out.append(d)
        return out


def collect(events: Iterable) -> TurnState:
    """Fold a whole turn (the non-streaming answer)."""
    state = TurnState()
    for event in events:
        state.apply(event)
    return state

