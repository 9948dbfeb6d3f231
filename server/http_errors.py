"""Errors as HTTP answers: every failure becomes {"error": {"type", "message"}} with its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    ConfigError,
    IngestError,
    InputError,
    LLMError,
    NotFoundError,
    PromptError,
    RecassistError,
    StoreError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, rendered as {"error": {"type", "message"}}."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


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


def error_response(err: ApiError, headers: dict | None = None) -> JSONResponse:
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


def install_error_handlers(app: FastAPI) -> None:
    """Every exception a route raises answers as JSON with its status."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc, headers)

    @app.exception_handler(RecassistError)
    async def _recassist_error(request: Request, exc: RecassistError):
        return error_response(error_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, fields = _validation_message(exc)
        return JSONResponse(
            {"error": {"type": "validation_error", "message": message, "fields": fields}}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return error_response(ApiError(400, "invalid_json", _unreadable_body(exc.__cause__)))
        type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, type_, str(exc.detail)), getattr(exc, "headers", None))

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError):
        return error_response(error_of(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(error_of(exc))
