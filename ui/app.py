"""The Gradio UI: a thin adapter over the engine's agent (chat with cards, profile, prompt lab).

`create_ui(engine)` builds the Blocks; `server.ui_mount.launch_ui` serves it alone, and the HTTP API
mounts the same Blocks at / (server/ui_mount.py). gradio is imported here, never by the core.
"""

import logging

from core.errors import RecassistError
from ui.cards import CSS, status_html

log = logging.getLogger(__name__)


MAX_SLOTS = 10  # card slots on the page; answers are capped at 20 but rarely exceed top_k


def _gradio():
    try:
        import gradio as gr
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RecassistError(f"the web UI needs gradio: pip install 'gradio>=6' ({exc})") from None
    return gr


def ui_style() -> dict:
    """Theme and CSS (gradio 6 takes them at launch/mount time, not in Blocks())."""
    gr = _gradio()
    # System fonts only: the default Google fonts would be fetched from the internet by every browser.
    theme = gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="slate",
        radius_size="md",
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )
    return {"theme": theme, "css": CSS}


class _Access:
    """Who may act for which user in this browser session (only enforced when the server has API keys)."""

    def __init__(self, required: bool):
        self.required = required

    def who(self, request) -> str | None:
        """The signed-in name: 'admin' or a user id; None when the UI is open."""
        return getattr(request, "username", None) if self.required else None

    def is_admin(self, request) -> bool:
        return not self.required or self.who(request) == "admin"

    def check(self, request, user_id: str) -> None:
        gr = _gradio()
        if not user_id:
            raise gr.Error("Pick a user first (left column).")
        if self.required and not self.is_admin(request) and self.who(request) != user_id:
            raise gr.Error(f"You are signed in as {self.who(request)!r} and may only act for yourself.")


def create_ui(engine, *, auth_required: bool = False):
    """Build the Blocks: a Chat tab and a Prompt lab tab."""
    gr = _gradio()
    from ui.chat import build_chat
    from ui.lab import build_lab

    access = _Access(auth_required)
    with gr.Blocks(title="recassist", fill_width=True, analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("## recassist · conversational recommendations", elem_id="app-title")
        status = gr.HTML("", elem_id="status-line")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Chat", id="chat-tab", elem_id="chat-tab"):
                chat = build_chat(gr, engine, access, MAX_SLOTS)
            with gr.Tab("Prompt lab", id="lab-tab", elem_id="lab-tab"):
                lab_locked = gr.Markdown("The prompt lab needs an admin sign-in.", visible=False, elem_id="lab-locked")
                with gr.Column(elem_id="lab-body") as lab_body:
                    build_lab(gr, engine, access)

        def on_load(request: gr.Request):
            info = engine.info()
            who = access.who(request)
            admin = access.is_admin(request)
            updates = {
                status: status_html(info),
                lab_body: gr.Column(visible=admin),
                lab_locked: gr.Markdown(visible=not admin),
            }
            if who and who != "admin":  # a bound user: no picker, straight into their own chat
                updates.update(chat["select_user"](who))
                updates[chat["picker_box"]] = gr.Column(visible=False)
            return updates

        demo.load(
            on_load,
            outputs=[status, lab_body, lab_locked, chat["picker_box"], *chat["user_outputs"]],
            show_progress="hidden",
        )
    demo.queue(default_concurrency_limit=4)
    return demo
