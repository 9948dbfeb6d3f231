"""ASGI middlewares (API paths never fall through to the UI, a body size limit) and a log filter."""

from __future__ import annotations

import json
import logging

from server.http_errors import ApiError, error_response

MAX_BODY_BYTES = 1_000_000


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
                return await error_response(err, {"Allow": methods})(scope, receive, send)
            err = ApiError(404, "not_found", f"no endpoint {scope['path']}; the API is listed at /docs")
            return await error_response(err)(scope, receive, send)
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


class WorkerHeader:
    """ASGI middleware: every response says which process answered (`X-Recassist-Worker: PID`),
    so behind `serve --workers N` or gunicorn a reply can be traced to its worker's log."""

    def __init__(self, app):
        import os

        self.app = app
        self.header = (b"x-recassist-worker", str(os.getpid()).encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        return await self.app(scope, receive, send_with_header)
