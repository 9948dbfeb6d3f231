"""The HTTP API's wire schemas (requests, responses, errors) and the helpers that fill them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

FACADE_MODEL = "recassist"  # the one model the OpenAI facade lists
USER_HEADER = "X-Recassist-User"
SESSION_HEADER = "X-Recassist-Session"


class _Strict(BaseModel):
    # strict: a JSON type other than the schema's is an error, not converted ("5" for 5, false for 0.0).
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any) -> Any:
        """JSON Schema counts 17.0 as an integer, so strict fields take it as 17."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


USER_ID_PATTERN = r"^[A-Za-z0-9_.@:-]{1,128}$"  # the agent's rule for user ids, checked here for a 422 naming the field
USER_ID_HELP = "1-128 ASCII letters, digits or . _ - @ :"


UserIdPath = Annotated[str, Path(pattern=USER_ID_PATTERN, description=USER_ID_HELP)]


def _user_id():
    return Field(pattern=USER_ID_PATTERN, description=USER_ID_HELP, examples=["alice"])


class HistoryTurn(_Strict):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=4000)


class ChatRequest(_Strict):
    user_id: str = _user_id()
    message: str = Field(min_length=1, max_length=4000)
    session_id: str | None = Field(default=None, max_length=200)
    context: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Request context from the platform. mood, occasion, genre: soft words for retrieval and the prompts; "
            "with (\"kids\" filters to the catalog's children's category); device (a phone or watch prefers shorter "
            "items when the catalog knows lengths); time_of_day (prompts only); available_minutes (a hard length "
            "limit); categories, exclude_categories, exclude_terms, year_min, year_max (enforced filters); any "
            "catalog metadata field, e.g. language (equality filter). Other keys reach the prompts only."
        ),
        examples=[{"mood": "cosy", "device": "phone", "time_of_day": "evening"}],
    )
    k: int | None = Field(default=None, ge=1, le=20, description="How many items to answer with.")
    stream: bool = Field(default=False, description="Answer as Server-Sent Events, one per turn event.")
    history: list[HistoryTurn] | None = Field(
        default=None,
        max_length=100,
        description=(
            "Earlier turns of a conversation that began elsewhere, oldest first. They start the session when it "
            "has none yet: titles the user named (and what they said of them) and titles the assistant suggested "
            "count as evidence. Ignored when session_id names a session that already has turns."
        ),
        examples=[[{"role": "user", "content": "I loved Alien (1979)"}, {"role": "assistant", "content": "Have you seen Aliens (1986)?"}]],
    )


class ItemOut(BaseModel):
    item_id: str
    title: str
    score: float
    reason: str = ""
    reason_source: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    year: int | None = None
    creator: str | None = None
    categories: list[str] = Field(default_factory=list)


class ChatResponse(BaseModel):
    session_id: str
    intent: str = ""
    items: list[ItemOut]
    summary: str
    notices: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    tokens: dict[str, int] = Field(default_factory=dict)


class Filters(_Strict):
    categories: list[str] | None = None
    exclude_categories: list[str] | None = None
    creators: list[str] | None = None
    exclude_creators: list[str] | None = None
    year_min: int | None = None
    year_max: int | None = None
    exclude_ids: list[str] | None = None


class RecommendationRequest(_Strict):
    user_id: str = _user_id()
    query: str = Field(default="", max_length=4000)
    k: int | None = Field(default=None, ge=1, le=20)
    filters: Filters | None = None


class RecommendationResponse(BaseModel):
    items: list[ItemOut]
    summary: str = ""
    timings: dict[str, float] = Field(default_factory=dict)


class Rejection(BaseModel):
    index: int = Field(description="position of the rejected object in the request list")
    field: str | None = None
    reason: str


class EventsResponse(BaseModel):
    accepted: int = Field(description="valid events in the request")
    new: int = Field(description="events not stored before (re-sending an event does not duplicate it)")
    rejected: list[Rejection]


class ItemsResponse(BaseModel):
    upserted: int
    unchanged: int
    rejected: list[Rejection]


class Interest(_Strict):
    tag: str = Field(min_length=1, max_length=100)
    weight: float = Field(default=1.0, ge=0.0, le=1000.0)


class ProfilePatch(_Strict):
    interests: list[Interest] | None = Field(
        default=None, description="interests to set (replaces earlier corrections)"
    )
    summary: str | None = Field(default=None, max_length=1000)
    dislikes: list[str] | None = None
    removed_interests: list[str] | None = Field(default=None, description="derived interests to drop")
    removed_dislikes: list[str] | None = Field(default=None, description="derived dislikes to drop")


class Profile(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str
    interests: list[dict[str, Any]] = Field(default_factory=list)
    summary: str = ""
    dislikes: list[str] = Field(default_factory=list)
    events: int = 0


class FeedbackRequest(_Strict):
    user_id: str = _user_id()
    item_id: str = Field(min_length=1, max_length=200)
    kind: Literal["like", "dislike", "not_interested", "seen"]


class FeedbackResponse(BaseModel):
    recorded: bool
    user_id: str
    item_id: str
    kind: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class OpenAIChatRequest(BaseModel):
    # Clients send many optional fields (temperature, top_p, ...); accept and ignore them.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = FACADE_MODEL
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(
        default=None, pattern=USER_ID_PATTERN, description=f"the user's id ({USER_ID_HELP}), or send the {USER_HEADER} header"
    )


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def as_dict(item) -> dict:
    return item.to_dict() if hasattr(item, "to_dict") else dict(item)


def item_fields(d: dict) -> dict:
    keys = ItemOut.model_fields.keys()
    out = {k: d[k] for k in keys if k in d and d[k] is not None}
    if "item_id" not in out and "id" in d:
        out["item_id"] = d["id"]
    out.setdefault("score", 0.0)
    return out


def rejection(reject) -> Rejection:
    """An ingest Reject (its `line` is the list index for JSON rows) as the API's rejection."""
    d = reject.to_dict() if hasattr(reject, "to_dict") else dict(reject)
    reason = str(d.get("reason", "")) + (f" ({d['hint']})" if d.get("hint") else "")
    return Rejection(index=int(d.get("index", d.get("line", -1))), field=d.get("field"), reason=reason)

