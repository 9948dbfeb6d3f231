"""Server-Sent Events: one event per turn event, errors in-band once the status line is gone."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from assistant.events import event_to_dict
from server.http_errors import error_of

def sse(event: str | None, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in payload.split("\n")) + "\n"


def sse_events(events: Iterator) -> Iterator[str]:
    try:
        for event in events:
            yield sse(event.type, event_to_dict(event))
    except Exception as exc:  # the status line is gone; tell the client in-band
        err = error_of(exc)
        yield sse("error", {"error": {"type": err.type, "message": err.message}})


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# OpenAPI 3.1 describes a text/event-stream by the schema of one event.
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string", "description": "JSON, or [DONE]"}},
    "required": ["data"],
}


def primed(events: Iterator) -> Iterator:
    """Start the turn before answering, so bad input fails with its status, not inside a 200 stream."""
    events = iter(events)
    try:
        first = next(events)
    except StopIteration:
        return iter(())
    return itertools.chain([first], events)

