"""The OpenAI-compatible facade: /v1/models and /v1/chat/completions over the same agent.

The last user message is the turn and the messages before it its conversation; the answer is the
turn as Markdown (a numbered list with reasons, then the summary), streamed as chunks when asked.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator

from fastapi import Depends, FastAPI, Header
from fastapi.responses import StreamingResponse

from assistant.events import Card, CardsEvent, DoneEvent, MessageEvent, NoticeEvent, ReasonEvent, TextDelta, TurnState
from server.auth import Principal, require_user
from server.http_errors import ApiError, error_of
from server.schemas import FACADE_MODEL, USER_HEADER, OpenAIChatRequest, item_fields
from server.sse import SSE_EVENT, SSE_HEADERS, primed, sse



def add_openai_routes(app: FastAPI, engine, authenticate) -> None:
    agent = lambda: engine.agent  # noqa: E731 - built lazily

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
        events = primed(agent().respond(user_id, user_texts[-1], session_id=session_id, prior=turns[:last_user][-100:]))
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = body.model or FACADE_MODEL
        if body.stream:
            return StreamingResponse(
                _completion_chunks(events, completion_id, created, model),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
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
                "items": [item_fields(d) for d in state.items()],
            },
        }


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


def _text_of(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")



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
            first = gap() if listed == 1 else ""  # a greeting before the list ends its paragraph
            yield from emit(first + line + (f" — {reason}" if reason else "") + "\n")

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
