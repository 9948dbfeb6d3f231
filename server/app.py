"""The HTTP server: the FastAPI app (/v1 API, OpenAI facade, /docs, /health, the UI at /) and uvicorn.

This package sits above both the agent (`assistant/`) and the UI (`ui/`): it wires them to the
network, and nothing below imports it.
"""

from __future__ import annotations

import logging
import os
import sys

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from assistant import __version__
from core.errors import RecassistError
from server.auth import Principal, authenticator, require_admin, require_keys_off_loopback
from server.http_errors import install_error_handlers
from server.jobs import REFIT_INTERVAL_S, Refresher
from server.middleware import ApiPathsOnly, BodyLimit, HideSecrets, WorkerHeader
from server.openai_facade import add_openai_routes
from server.routes import add_routes
from server.schemas import ErrorResponse


def create_app(engine, *, host: str | None = None, mount_ui: bool = True) -> FastAPI:
    """The FastAPI app: /v1 API, /health, /openapi.json, and the Gradio UI mounted at /."""
    settings = engine.settings
    host = host or settings.host
    api_keys = dict(settings.api_keys)
    require_keys_off_loopback(host, api_keys)
    authenticate = authenticator(api_keys)
    refresher = Refresher(engine, interval_s=settings.fit_interval_s or REFIT_INTERVAL_S,
                          enabled=settings.fit_interval_s > 0)

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
    app.add_middleware(WorkerHeader)
    install_error_handlers(app)

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> str:
        from server.api_docs import render_docs

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

    app.state.refresher = refresher
    add_routes(app, engine, authenticate, on_new_events=refresher.request)
    add_openai_routes(app, engine, authenticate)
    if mount_ui:
        from server.ui_mount import mount_ui as mount

        mount(app, engine, api_keys)
    return app


def serve(engine, host: str | None = None, port: int | None = None) -> None:
    """Run the API and the UI with uvicorn until interrupted."""
    import uvicorn

    host = host or engine.settings.host
    port = port or engine.settings.port
    app = create_app(engine, host=host)
    _keep_signals_fresh(engine, app.state.refresher)
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
    print(f"recassist {__version__}: starting {workers} workers, UI at http://{shown}:{s.port}/  API at http://{shown}:{s.port}/v1 "
          f"(each says 'worker PID ready' once warm; until then the others answer)", flush=True)
    uvicorn.run("server.app:worker_app", factory=True, host=s.host, port=s.port, workers=workers, log_level="info")
    engine.close()


def worker_app():
    """The app of one `serve --workers N` process: settings from the environment the parent set."""
    from assistant.engine import Engine
    from assistant.settings import Settings

    engine = Engine(Settings.load())
    logging.getLogger("uvicorn.access").addFilter(HideSecrets(engine.settings.api_keys, query=True))
    logging.getLogger("uvicorn.error").addFilter(HideSecrets(engine.settings.api_keys))
    engine.llm  # connect to the shared model process
    print(f"worker {os.getpid()} ready: {engine.warm_up()}", file=sys.stderr, flush=True)
    app = create_app(engine, host=engine.settings.host)
    _keep_signals_fresh(engine, app.state.refresher)
    return app


def _keep_signals_fresh(engine, refresher) -> None:
    """A serving process follows what is published, and fits (in the background) when the log has
    moved on since the last publication; its idle model writes reason hooks ahead."""
    refresher.watch()
    if engine.signals_stale():
        refresher.request()
    engine.write_ahead()
