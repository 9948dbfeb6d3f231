"""The Gradio UI mounted at / of the API's app, behind the API keys' login when keys are set."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from server.auth import require_keys_off_loopback, ui_login


def mount_ui(app: FastAPI, engine, api_keys: dict[str, str]) -> None:
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


def launch_ui(engine, host: str | None = None, port: int | None = None, **kwargs) -> None:
    """Serve the UI alone (the API's `serve` mounts the same UI next to /v1)."""
    from ui.app import create_ui, ui_style

    host = host or engine.settings.host
    keys = dict(engine.settings.api_keys)
    require_keys_off_loopback(host, keys)
    demo = create_ui(engine, auth_required=bool(keys))
    style = ui_style()
    if keys:
        kwargs.setdefault("auth", ui_login(keys))
    demo.launch(
        server_name=host,
        server_port=port or engine.settings.port,
        theme=style["theme"],
        css=style["css"],
        footer_links=["settings"],
        **kwargs,
    )
