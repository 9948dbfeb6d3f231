"""The HTTP API: typed JSON and Server-Sent Events under /v1, an OpenAI-compatible facade, the UI at /.

Every route is a thin adapter over the engine's agent; chat turns consume the same event stream as
the UI and the CLI. Blocking engine calls run in FastAPI's threadpool (routes are plain `def`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant import __version__
from assistant.errors import (
    ConfigError,
    InputError,
    IngestError,
    LLMError,
    NotFoundError,
    PromptError,
    RecassistError,
    StoreError,
)
from assistant.events import (
    Card,
    CardsEvent,
    DoneEvent,
    MessageEvent,
    NoticeEvent,
    ReasonDelta,
    ReasonEvent,
    TextDelta,
    event_to_dict,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
REFIT_INTERVAL_S = 30.0  # at most this often new events trigger a refit of the collaborative signals
FACADE_MODEL = "recassist"
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


@dataclass
class TurnState:
    """What a turn has said so far; `apply` folds one event in (shared by the API and the UI)."""

    cards: list[Card] = field(default_factory=list)
    stage: str = ""
    reasons: dict[str, str] = field(default_factory=dict)  # item_id -> reason so far, or final
    text: str = ""  # the summary or direct answer, as streamed
    notices: list[str] = field(default_factory=list)
    done: DoneEvent | None = None
    _writing: set[str] = field(default_factory=set, repr=False)  # reasons still streaming
    _segment: int | None = field(default=None, repr=False)  # where the streaming text began

    def apply(self, event) -> None:
        if isinstance(event, CardsEvent):
            self.cards, self.stage = list(event.cards), event.stage
            self.reasons = {c.item_id: c.reason for c in self.cards if c.reason}
        elif isinstance(event, ReasonDelta):
            if event.item_id not in self._writing:  # the first piece replaces a provisional reason
                self._writing.add(event.item_id)
                self.reasons[event.item_id] = ""
            self.reasons[event.item_id] += event.text
        elif isinstance(event, ReasonEvent):
            self._writing.discard(event.item_id)
            self.reasons[event.item_id] = event.text
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
            out.append(d)
        return out


def collect(events: Iterable) -> TurnState:
    """Fold a whole turn (the non-streaming answer)."""
    state = TurnState()
    for event in events:
        state.apply(event)
    return state


def markdown_pieces(events: Iterable, stream: bool = True) -> Iterator[str]:
    """A turn as readable Markdown, in pieces as events arrive: list lines, then the summary.

    Streaming passes text deltas on as they come; otherwise only complete (checked) messages count.
    """
    cards: list[Card] = []
    reasons: dict[str, str] = {}
    listed = 0
    streaming = False
    last = ""

    def emit(piece: str) -> Iterator[str]:
        nonlocal last
        if piece:
            last = piece
            yield piece

    def gap() -> str:
        """What separates a new block from what came before: a blank line."""
        return "" if not last or last.endswith("\n\n") else ("\n" if last.endswith("\n") else "\n\n")

    def list_upto(upto: int) -> Iterator[str]:
        nonlocal listed
        while listed < upto:
            card = cards[listed]
            listed += 1
            meta = ", ".join(str(x) for x in (card.year, card.creator) if x)
            line = f"{listed}. **{card.title}**" + (f" ({meta})" if meta else "")
            reason = reasons.get(card.item_id) or card.reason
            yield from emit(line + (f" — {reason}" if reason else "") + "\n")

    for event in events:
        if isinstance(event, CardsEvent):
            if not listed:  # ranked replaces retrieved until the list starts
                cards = list(event.cards)
        elif isinstance(event, ReasonEvent):
            reasons[event.item_id] = event.text
            ready = listed
            while ready < len(cards) and cards[ready].item_id in reasons:
                ready += 1
            yield from list_upto(ready)
        elif isinstance(event, NoticeEvent):
            yield from emit(gap() + f"_{event.text}_\n\n")
        elif isinstance(event, TextDelta) and stream:
            yield from list_upto(len(cards))
            if not streaming:
                streaming = True
                yield from emit(gap())
            yield from emit(event.text)
        elif isinstance(event, MessageEvent):
            yield from list_upto(len(cards))
            if streaming:
                streaming = False  # already streamed piece by piece
            else:
                yield from emit(gap() + event.text)
        elif isinstance(event, DoneEvent):
            yield from list_upto(len(cards))


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (any user) or one bound user."""

    role: Literal["admin", "user"]
    user_id: str | None = None

    def may_act_for(self, user_id: str) -> bool:
        return self.role == "admin" or self.user_id == user_id


class ApiError(Exception):
    """An error with an HTTP status, rendered as {"error": {"type", "message"}}."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_keys_off_loopback(host: str, api_keys: dict[str, str]) -> None:
    """Refuse to expose user data beyond this machine without API keys."""
    if not is_loopback(host) and not api_keys:
        raise ConfigError(
            f"refusing to serve on {host} without API keys: anyone on the network could read and delete "
            "user data. Set RECASSIST_API_KEYS (e.g. 'KEY=admin,KEY2=user:alice') or bind to 127.0.0.1."
        )


def match_key(api_keys: dict[str, str], presented: str) -> str | None:
    """The role of the presented key, comparing against every key in constant time."""
    # Digests have one length, so the time taken tells nothing about the keys' lengths either.
    digest = hashlib.sha256(presented.encode("utf-8")).digest()
    found = None
    for key, role in api_keys.items():
        if hmac.compare_digest(hashlib.sha256(key.encode("utf-8")).digest(), digest):
            found = role
    return found


def principal_from_role(role: str) -> Principal:
    if role == "admin":
        return Principal("admin")
    return Principal("user", role.split(":", 1)[1])


def _authenticator(api_keys: dict[str, str]):
    def authenticate(request: Request) -> Principal:
        if not api_keys:
            return Principal("admin")  # loopback without keys: a local, single-person setup
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer KEY'")
        role = match_key(api_keys, token.strip())
        if role is None:
            raise ApiError(401, "unauthorized", "invalid API key")
        return principal_from_role(role)

    return authenticate


def require_user(principal: Principal, user_id: str) -> None:
    if not principal.may_act_for(user_id):
        raise ApiError(403, "forbidden", f"this API key may not act for user {user_id!r}")


def require_admin(principal: Principal) -> None:
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "this endpoint needs an admin API key")


_STATUS = [  # most specific first
    (InputError, 400, "invalid_request"),
    (NotFoundError, 404, "not_found"),
    (PromptError, 400, "prompt_error"),
    (IngestError, 400, "ingest_error"),
    (LLMError, 503, "llm_unavailable"),
    (StoreError, 503, "store_unavailable"),
    (ConfigError, 503, "config_error"),
    (RecassistError, 500, "recassist_error"),
    (ValueError, 400, "invalid_request"),  # the agent's checks on user input (user id, empty message)
]


def error_of(exc: BaseException) -> ApiError:
    """The API error for any exception; unexpected ones are logged and answered without details."""
    if isinstance(exc, ApiError):
        return exc
    for cls, status, type_ in _STATUS:
        if isinstance(exc, cls):
            return ApiError(status, type_, str(exc))
    log.exception("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, "internal_error", "internal error; the server log has the details")


def _error_response(err: ApiError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": err.type, "message": err.message}}, status_code=err.status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict]]:
    fields = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":  # loc is ("body", character offset)
            where = e.get("loc", (None, "?"))[-1]
            problem = (e.get("ctx") or {}).get("error", "JSON decode error")
            fields.append({"field": "body", "message": f"not valid JSON: {problem} at character {where}"})
            continue
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        fields.append({"field": ".".join(loc) or "body", "message": e.get("msg", "")})
    return "; ".join(f"{f['field']}: {f['message']}" for f in fields), fields


def _unreadable_body(cause: BaseException | None) -> str:
    """Why a request body could not be read at all (FastAPI only says 'error parsing the body')."""
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"request body is not UTF-8: byte 0x{cause.object[cause.start]:02x} at position {cause.start} "
            f"({cause.encoding} expected); send JSON encoded as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "request body is nested too deeply to read; send flatter JSON"
    return "request body could not be read as JSON; send a JSON document encoded as UTF-8"


class ApiPathsOnly:
    """ASGI middleware: the UI mounted at / never answers for /v1 or /health.

    Without it, a wrong method or an unknown path there falls through to the UI's own 404; here it
    is the API's JSON error: 405 with an Allow header, or 404.
    """

    def __init__(self, app, router, prefixes: tuple[str, ...] = ("/v1/", "/health")):
        self.app, self.router, self.prefixes = app, router, prefixes

    async def __call__(self, scope, receive, send):
        from starlette.routing import Match, Mount

        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            allowed: set[str] = set()
            for route in self.router.routes:
                if isinstance(route, Mount):
                    continue
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    return await self.app(scope, receive, send)
                if match is Match.PARTIAL:
                    allowed |= set(getattr(route, "methods", None) or ())
            if allowed:
                methods = ", ".join(sorted(allowed))
                err = ApiError(405, "method_not_allowed", f"{scope['method']} is not allowed on {scope['path']}; use {methods}")
                return await _error_response(err, {"Allow": methods})(scope, receive, send)
            err = ApiError(404, "not_found", f"no endpoint {scope['path']}; the API is listed at /docs")
            return await _error_response(err)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: answer 413 for request bodies over `limit` bytes (declared or streamed)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, prefix: str = "/v1"):
        self.app, self.limit, self.prefix = app, limit, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0
        rejected = False

        async def limited_receive():
            # Past the limit, answer 413 ourselves and tell the app the client left, so it stops reading.
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send):
        body = json.dumps(
            {
                "error": {
                    "type": "payload_too_large",
                    "message": f"request body is over {self.limit} bytes; send smaller batches",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def sse(event: str | None, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in payload.split("\n")) + "\n"


def _sse_events(events: Iterator) -> Iterator[str]:
    try:
        for event in events:
            yield sse(event.type, event_to_dict(event))
    except Exception as exc:  # the status line is gone; tell the client in-band
        err = error_of(exc)
        yield sse("error", {"error": {"type": err.type, "message": err.message}})


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# OpenAPI 3.1 describes a text/event-stream by the schema of one event.
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string", "description": "JSON, or [DONE]"}},
    "required": ["data"],
}


def create_app(engine, *, host: str | None = None, mount_ui: bool = True) -> FastAPI:
    """The FastAPI app: /v1 API, /health, /openapi.json, and the Gradio UI mounted at /."""
    settings = engine.settings
    host = host or settings.host
    api_keys = dict(settings.api_keys)
    require_keys_off_loopback(host, api_keys)
    authenticate = _authenticator(api_keys)
    refresher = Refresher(engine)

    app = FastAPI(
        title="recassist",
        version=__version__,
        description="Conversational recommendations: chat, recommendations, behaviour ingest, profiles. "
        "Send 'Authorization: Bearer KEY' when the server has API keys configured.",
        responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)},
        docs_url=None,  # Swagger UI loads from a CDN: blank offline. /docs below is served locally.
        redoc_url=None,
    )
    app.add_middleware(ApiPathsOnly, router=app.router)
    app.add_middleware(BodyLimit)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error_response(exc, headers)

    @app.exception_handler(RecassistError)
    async def _recassist_error(request: Request, exc: RecassistError):
        return _error_response(error_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, fields = _validation_message(exc)
        return JSONResponse(
            {"error": {"type": "validation_error", "message": message, "fields": fields}}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return _error_response(ApiError(400, "invalid_json", _unreadable_body(exc.__cause__)))
        type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(ApiError(exc.status_code, type_, str(exc.detail)), getattr(exc, "headers", None))

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError):
        return _error_response(error_of(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _error_response(error_of(exc))

    agent = lambda: engine.agent  # noqa: E731 - built lazily: /health must not load the model

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> str:
        from assistant.api_docs import render_docs

        return render_docs(app.openapi())

    @app.get("/health", tags=["status"])
    def health() -> dict:
        """Liveness: answers without touching the model."""
        return {"status": "ok", "version": __version__}

    @app.get("/v1/info", tags=["status"])
    def info(principal: Principal = Depends(authenticate)) -> dict:
        """What the server runs: backends, models, catalog size (admin)."""
        require_admin(principal)
        return engine.info()

    @app.post(
        "/v1/chat",
        tags=["chat"],
        response_model=ChatResponse,
        responses={
            200: {
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
                "description": "JSON, or SSE when stream is true: 'event: <type>' + 'data: <json>' per turn event.",
            }
        },
    )
    def chat(body: ChatRequest, principal: Principal = Depends(authenticate)):
        """One chat turn: a short list with reasons and a summary (SSE when `stream` is true)."""
        require_user(principal, body.user_id)
        events = _primed(
            agent().respond(body.user_id, body.message, session_id=body.session_id, context=body.context, k=body.k,
                            prior=[t.model_dump() for t in body.history or []])
        )
        if body.stream:
            return StreamingResponse(_sse_events(events), media_type="text/event-stream", headers=_SSE_HEADERS)
        state = collect(events)
        done = state.done
        return ChatResponse(
            session_id=done.session_id if done else (body.session_id or ""),
            intent=done.intent if done else "",
            items=[ItemOut(**_item_fields(d)) for d in state.items()],
            summary=state.text,
            notices=state.notices,
            timings=done.timings_ms if done else {},
            tokens=done.tokens if done else {},
        )

    @app.post("/v1/recommendations", tags=["recommendations"], response_model=RecommendationResponse)
    def recommendations(body: RecommendationRequest, principal: Principal = Depends(authenticate)):
        """Recommendations without conversation: optional query text and filters."""
        require_user(principal, body.user_id)
        filters = body.filters.model_dump(exclude_none=True) if body.filters else None
        result = agent().recommend(body.user_id, query=body.query, k=body.k, filters=filters)
        return RecommendationResponse(
            items=[ItemOut(**_item_fields(_as_dict(i))) for i in result.get("items", [])],
            summary=result.get("summary", ""),
            timings=result.get("timings_ms", {}),
        )

    @app.post("/v1/events", tags=["ingest"], response_model=EventsResponse)
    def post_events(body: dict[str, Any] | list[dict[str, Any]], principal: Principal = Depends(authenticate)):
        """Record behaviour: one event object or a list {user_id, type, item_id?, timestamp?, value?, text?}."""
        rows = body if isinstance(body, list) else [body]
        if principal.role != "admin":
            others = sorted({str(r.get("user_id")) for r in rows if r.get("user_id") != principal.user_id})
            if others:
                raise ApiError(
                    403, "forbidden", f"this API key may only send events for {principal.user_id!r}, not {others[:3]}"
                )
        added = engine.add_events(rows)
        if added["stored"]:
            refresher.request()
        return EventsResponse(
            accepted=added["accepted"], new=added["stored"], rejected=[_rejection(r) for r in added["rejected"]]
        )

    @app.put("/v1/items", tags=["ingest"], response_model=ItemsResponse)
    def put_items(body: list[dict[str, Any]], principal: Principal = Depends(authenticate)):
        """Add or update catalog items {id, title, text?, categories?, tags?, year?, creator?, ...} (admin)."""
        require_admin(principal)
        written = engine.upsert_items(body)
        return ItemsResponse(
            upserted=written["upserted"], unchanged=written["unchanged"], rejected=[_rejection(r) for r in written["rejected"]]
        )

    @app.get("/v1/users/{user_id}/profile", tags=["users"], response_model=Profile)
    def get_profile(user_id: UserIdPath, principal: Principal = Depends(authenticate)):
        """The user's interests, dislikes and summary as the assistant sees them."""
        require_user(principal, user_id)
        return agent().get_profile(user_id)

    @app.patch("/v1/users/{user_id}/profile", tags=["users"], response_model=Profile)
    def patch_profile(user_id: UserIdPath, patch: ProfilePatch, principal: Principal = Depends(authenticate)):
        """Correct the profile: set interests, summary or dislikes (fields left out stay as they are)."""
        require_user(principal, user_id)
        return agent().update_profile(user_id, patch.model_dump(exclude_none=True))

    @app.delete("/v1/users/{user_id}", tags=["users"])
    def delete_user(user_id: UserIdPath, principal: Principal = Depends(authenticate)) -> dict:
        """Forget a user everywhere (events, conversations, profile, vectors); returns counts removed."""
        require_user(principal, user_id)
        return {"user_id": user_id, "deleted": agent().delete_user(user_id)}

    @app.post("/v1/feedback", tags=["users"], response_model=FeedbackResponse)
    def feedback(body: FeedbackRequest, principal: Principal = Depends(authenticate)):
        """Like, dislike, not interested or seen for one item; it shapes the next answer."""
        require_user(principal, body.user_id)
        agent().feedback(body.user_id, body.item_id, body.kind)
        return FeedbackResponse(recorded=True, user_id=body.user_id, item_id=body.item_id, kind=body.kind)

    @app.get("/v1/models", tags=["openai"])
    def models(principal: Principal = Depends(authenticate)) -> dict:
        """OpenAI-compatible model list (one model: the assistant)."""
        return {
            "object": "list",
            "data": [{"id": FACADE_MODEL, "object": "model", "created": 0, "owned_by": "recassist"}],
        }

    @app.post(
        "/v1/chat/completions",
        tags=["openai"],
        responses={
            200: {
                "content": {"application/json": {}, "text/event-stream": {"schema": SSE_EVENT}},
                "description": "A chat.completion, or chat.completion.chunk events ending in 'data: [DONE]' when stream is true.",
            }
        },
    )
    def chat_completions(
        body: OpenAIChatRequest,
        principal: Principal = Depends(authenticate),
        x_recassist_user: str | None = Header(default=None),
        x_recassist_session: str | None = Header(default=None),
    ):
        """OpenAI-compatible chat: the last user message is the turn, the turns before it its conversation
        (read when the session starts); the answer is a Markdown list."""
        user_id = body.user or x_recassist_user or principal.user_id
        if not user_id:
            raise ApiError(400, "invalid_request", f"name the user: the 'user' field or the {USER_HEADER} header")
        require_user(principal, user_id)
        user_texts = [_text_of(m.content) for m in body.messages if m.role == "user"]
        user_texts = [t for t in user_texts if t.strip()]
        if not user_texts:
            raise ApiError(422, "validation_error", "messages: needs at least one non-empty user message")
        # A conversation is identified by its user and its first message, so a client that resends the
        # whole history each turn stays in one session, and a new conversation starts a new one.
        session_id = (
            x_recassist_session or "oai-" + hashlib.sha1(f"{user_id}\x1f{user_texts[0]}".encode()).hexdigest()[:16]
        )
        turns = [{"role": m.role, "content": _text_of(m.content)} for m in body.messages if m.role in ("user", "assistant")]
        last_user = max(i for i, t in enumerate(turns) if t["role"] == "user" and t["content"].strip())
        events = _primed(agent().respond(user_id, user_texts[-1], session_id=session_id, prior=turns[:last_user][-100:]))
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = body.model or FACADE_MODEL
        if body.stream:
            return StreamingResponse(
                _completion_chunks(events, completion_id, created, model),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        recorder = _Recorder(events)
        content = "".join(markdown_pieces(recorder, stream=False)).strip()
        state = recorder.state
        tokens = state.done.tokens if state.done else {}
        prompt_tokens = int(tokens.get("prompt", tokens.get("prompt_tokens", 0)))
        completion_tokens = int(tokens.get("completion", tokens.get("completion_tokens", 0)))
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "recassist": {
                "session_id": state.done.session_id if state.done else session_id,
                "items": [_item_fields(d) for d in state.items()],
            },
        }

    if mount_ui:
        _mount_ui(app, engine, api_keys)
    return app


def _mount_ui(app: FastAPI, engine, api_keys: dict[str, str]) -> None:
    import gradio as gr

    from ui.app import create_ui, ui_style

    blocks = create_ui(engine, auth_required=bool(api_keys))
    style = ui_style()
    kwargs: dict[str, Any] = {}
    if api_keys:
        # The browser logs in with a user id (or "admin") and an API key as the password.
        kwargs["auth"] = ui_login(api_keys)
        kwargs["auth_message"] = "Sign in with your user id and API key (admins: user 'admin' and an admin key)."
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        footer_links=["settings"],
        run_history=False,
        theme=style["theme"],
        css=style["css"],
        **kwargs,
    )


def ui_login(api_keys: dict[str, str]):
    """Gradio login check: user 'admin' with an admin key, or a user id with that user's key."""

    def check(username: str, password: str) -> bool:
        role = match_key(api_keys, password or "")
        if role is None:
            return False
        if role == "admin":
            return username == "admin"
        return username != "admin" and role == f"user:{username}"

    return check


class _Recorder:
    """Passes events through while folding them, so one pass yields both Markdown and items."""

    def __init__(self, events: Iterable):
        self.events, self.state = events, TurnState()

    def __iter__(self):
        for event in self.events:
            self.state.apply(event)
            yield event


def _completion_chunks(events: Iterator, completion_id: str, created: int, model: str) -> Iterator[str]:
    def chunk(delta: dict, finish: str | None = None) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return sse(None, body)

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in markdown_pieces(events):
            if piece:
                yield chunk({"content": piece})
    except Exception as exc:
        err = error_of(exc)
        yield sse(None, {"error": {"type": err.type, "message": err.message}})
    yield chunk({}, "stop")
    yield sse(None, "[DONE]")


def _primed(events: Iterator) -> Iterator:
    """Start the turn before answering, so bad input fails with its status, not inside a 200 stream."""
    events = iter(events)
    try:
        first = next(events)
    except StopIteration:
        return iter(())
    return itertools.chain([first], events)


def _text_of(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def _as_dict(item) -> dict:
    return item.to_dict() if hasattr(item, "to_dict") else dict(item)


def _item_fields(d: dict) -> dict:
    keys = ItemOut.model_fields.keys()
    out = {k: d[k] for k in keys if k in d and d[k] is not None}
    if "item_id" not in out and "id" in d:
        out["item_id"] = d["id"]
    out.setdefault("score", 0.0)
    return out


def _rejection(reject) -> Rejection:
    """An ingest Reject (its `line` is the list index for JSON rows) as the API's rejection."""
    d = reject.to_dict() if hasattr(reject, "to_dict") else dict(reject)
    reason = str(d.get("reason", "")) + (f" ({d['hint']})" if d.get("hint") else "")
    return Rejection(index=int(d.get("index", d.get("line", -1))), field=d.get("field"), reason=reason)


class Refresher:
    """Refits popularity and collaborative signals in the background after new events.

    A refit reads every event, so it runs at most once per `interval_s` and never inside a request;
    a user's own new events count at once anyway (retrieval reads their history live).
    """

    def __init__(self, engine, interval_s: float = REFIT_INTERVAL_S):
        self.engine, self.interval_s = engine, interval_s
        self._lock = threading.Lock()
        self._running = threading.Lock()
        self._scheduled = False
        self._last = float("-inf")

    def request(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
            delay = max(0.0, self._last + self.interval_s - time.monotonic())
        timer = threading.Timer(delay, self._run)
        timer.daemon = True
        timer.start()

    def _run(self) -> None:
        with self._running:
            with self._lock:
                self._scheduled = False  # events from now on schedule the next refit
            try:
                if "retriever" in self.engine.__dict__:  # not built yet: it fits itself when first used
                    self.engine.retriever.refit(self.engine.store)
            except RecassistError as exc:
                log.warning("refreshing the collaborative signals after new events failed: %s", exc)
            finally:
                self._last = time.monotonic()


def serve(engine, host: str | None = None, port: int | None = None) -> None:
    """Run the API and the UI with uvicorn until interrupted."""
    import uvicorn

    host = host or engine.settings.host
    port = port or engine.settings.port
    app = create_app(engine, host=host)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"recassist {__version__}: UI at http://{shown}:{port}/  API at http://{shown}:{port}/v1  docs at http://{shown}:{port}/docs",
        flush=True,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="info")  # configures uvicorn's loggers
    logging.getLogger("uvicorn.access").addFilter(HideSecrets(engine.settings.api_keys, query=True))
    logging.getLogger("uvicorn.error").addFilter(HideSecrets(engine.settings.api_keys))
    uvicorn.Server(config).run()


def serve_workers(engine, workers: int, env: dict[str, str]) -> None:
    """Run `workers` API processes on one port; they share this process's model process.

    The model loads once, here (`engine.llm`, supervised); each worker connects to its socket
    through RECASSIST_LLM_SOCKET, so N workers cost one model's memory, not N.
    """
    import uvicorn

    from assistant.llm.registry import backend

    s = engine.settings
    llm = engine.llm
    socket_path = getattr(llm, "socket_path", "")
    if backend(s.llm_backend).local_model and not socket_path:
        raise RecassistError("--workers N shares one model process; set RECASSIST_LLM_PROCESS=process (not inline)")
    os.environ.update(env)
    os.environ.update(RECASSIST_HOST=s.host, RECASSIST_PORT=str(s.port), RECASSIST_LLM_SOCKET=socket_path)
    shown = f"[{s.host}]" if ":" in s.host else s.host
    print(f"recassist {__version__}: {workers} workers, UI at http://{shown}:{s.port}/  API at http://{shown}:{s.port}/v1", flush=True)
    uvicorn.run("assistant.api:worker_app", factory=True, host=s.host, port=s.port, workers=workers, log_level="info")
    engine.close()


def worker_app():
    """The app of one `serve --workers N` process: settings from the environment the parent set."""
    from assistant.engine import Engine
    from assistant.settings import Settings

    engine = Engine(Settings.load())
    logging.getLogger("uvicorn.access").addFilter(HideSecrets(engine.settings.api_keys, query=True))
    logging.getLogger("uvicorn.error").addFilter(HideSecrets(engine.settings.api_keys))
    engine.llm  # connect to the shared model process
    print(engine.warm_up(), file=sys.stderr, flush=True)
    return create_app(engine, host=engine.settings.host)


class HideSecrets(logging.Filter):
    """Keeps API keys out of the server log, wherever a client put them (path, query string).

    With query=True (the access log) every query-string value is masked as well: the API takes
    none, and the UI's (session hashes) are not for logs either.
    """

    def __init__(self, keys=(), query: bool = False):
        super().__init__()
        self.keys = sorted(filter(None, keys), key=len, reverse=True)
        self.query = query

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.clean(record.msg) if isinstance(record.msg, str) and not self.query else record.msg
        if isinstance(record.args, tuple):
            record.args = tuple(self.clean(a) if isinstance(a, str) else a for a in record.args)
        return True

    def clean(self, text: str) -> str:
        if self.query and "?" in text:
            path, _, query = text.partition("?")
            text = path + "?" + "&".join(p.partition("=")[0] + ("=***" if "=" in p else "") for p in query.split("&"))
        for key in self.keys:
            text = text.replace(key, "***")
        return text
