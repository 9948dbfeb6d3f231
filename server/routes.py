"""The /v1 routes: chat turns, recommendations, behaviour and catalog ingest, users' profiles.

Every route is a thin adapter over the engine's agent; chat turns consume the same event stream as
the UI and the CLI. Blocking engine calls run in FastAPI's threadpool (routes are plain `def`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse

from assistant.events import collect
from server.auth import Principal, require_admin, require_user
from server.http_errors import ApiError
from server.schemas import (
    ChatRequest,
    ChatResponse,
    EventsResponse,
    FeedbackRequest,
    FeedbackResponse,
    ItemOut,
    ItemsResponse,
    Profile,
    ProfilePatch,
    RecommendationRequest,
    RecommendationResponse,
    UserIdPath,
    as_dict,
    item_fields,
    rejection,
)
from server.sse import SSE_EVENT, SSE_HEADERS, primed, sse_events


def add_routes(app: FastAPI, engine, authenticate, on_new_events) -> None:
    """Add the /v1 routes; `on_new_events()` runs after events were stored (schedules a refit)."""
    agent = lambda: engine.agent  # noqa: E731 - built lazily: /health must not load the model

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
        events = primed(
            agent().respond(body.user_id, body.message, session_id=body.session_id, context=body.context, k=body.k,
                            prior=[t.model_dump() for t in body.history or []])
        )
        if body.stream:
            return StreamingResponse(sse_events(events), media_type="text/event-stream", headers=SSE_HEADERS)
        state = collect(events)
        done = state.done
        return ChatResponse(
            session_id=done.session_id if done else (body.session_id or ""),
            intent=done.intent if done else "",
            items=[ItemOut(**item_fields(d)) for d in state.items()],
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
            items=[ItemOut(**item_fields(as_dict(i))) for i in result.get("items", [])],
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
            on_new_events()
        return EventsResponse(
            accepted=added["accepted"], new=added["stored"], rejected=[rejection(r) for r in added["rejected"]]
        )

    @app.put("/v1/items", tags=["ingest"], response_model=ItemsResponse)
    def put_items(body: list[dict[str, Any]], principal: Principal = Depends(authenticate)):
        """Add or update catalog items {id, title, text?, categories?, tags?, year?, creator?, ...} (admin)."""
        require_admin(principal)
        written = engine.upsert_items(body)
        return ItemsResponse(
            upserted=written["upserted"], unchanged=written["unchanged"], rejected=[rejection(r) for r in written["rejected"]]
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
