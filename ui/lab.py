"""The prompt lab tab: edit a template's YAML, run one request with it next to the saved one, save a variant."""

import json
import logging
import uuid
from html import escape

from core.errors import PromptError, RecassistError
from ui.cards import card_html

log = logging.getLogger(__name__)

LAB_SESSION_PREFIX = "lab-"  # lab runs are real turns; their sessions are marked so the chat tab hides them


def template_text(stem: str) -> str:
    """The shipped YAML of template `stem` ('rank.completion')."""
    from prompts import shipped_dir

    path = shipped_dir() / f"{stem}.yaml"
    if not path.exists():
        raise PromptError(f"no template {stem}.yaml in {shipped_dir()}")
    return path.read_text(encoding="utf-8")


def run_with(engine, user_id: str, request: str, overrides: dict | None) -> dict:
    """One turn with optional template overrides: the trace (prompts, raw outputs) and the final cards."""
    from assistant.events import collect

    trace: list[dict] = []
    session_id = LAB_SESSION_PREFIX + uuid.uuid4().hex[:12]
    state = collect(
        engine.agent.respond(user_id, request, session_id=session_id, prompt_overrides=overrides, trace=trace, persist=False)
    )
    return {"trace": trace, "items": state.items(), "text": state.text, "notices": state.notices}


def trace_text(trace: list[dict], template: str, field: str) -> str:
    """The prompts (field='prompt') or raw outputs (field='raw') of the stages that used `template`."""
    base = template.split(".")[0]
    chosen = [t for t in trace if str(t.get("stage", "")).startswith(base)] or trace
    blocks = []
    for t in chosen:
        value = t.get(field)
        head = t.get("stage", "?") + (f" · {t['item_id']}" if t.get("item_id") else "")
        text = _as_text(value)
        if field == "raw" and "kept" in t:  # a reason: whether the check kept it, and why not
            text += "\n→ kept: " + str(t.get("reason")) if t["kept"] else "\n→ not kept: " + "; ".join(t.get("problems") or ["?"])
        blocks.append(f"── {head} ──\n{text}")
    return "\n\n".join(blocks) or "(this request did not call the model with this template)"


def _as_text(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return "\n".join(f"[{m['role']}] {m.get('content', '')}" for m in value)
    if isinstance(value, list):
        return "\n\n".join(_as_text(v) for v in value)
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def result_html(result: dict) -> str:
    cards = "".join(card_html(c, i) for i, c in enumerate(result["items"], 1))
    notes = "".join(f"<p><i>{escape(n)}</i></p>" for n in result["notices"])
    text = f"<p>{escape(result['text'])}</p>" if result["text"] else ""
    return f"<div>{notes}{cards or '<div class=rc-empty>No cards.</div>'}{text}</div>"


def _pre(text: str) -> str:
    return f'<div class="lab-pre">{escape(text)}</div>'


def build_lab(gr, engine, access) -> None:
    """The lab's components and events, inside the current Blocks context."""
    from prompts import list_templates, parse_template, save_variant

    stems = list_templates()
    first = _default_template(stems, engine.settings)
    users = [u["user_id"] for u in _safe_demo_users(engine)]
    gr.Markdown(
        "Edit a template, run one request with it, and compare with the saved template on the same request. "
        "Save it as a variant to measure it offline with `recassist eval --prompt-variant NAME`."
    )
    with gr.Row():
        with gr.Column(scale=1):
            template_dd = gr.Dropdown(choices=stems, value=first, label="Template", elem_id="lab-template")
            yaml_box = gr.Code(
                value=template_text(first) if first else "",
                language="yaml",
                label="Template YAML",
                lines=24,
                interactive=True,
                elem_id="lab-yaml",
            )
            error_box = gr.HTML("", elem_id="lab-error")
            with gr.Row():
                user_dd = gr.Dropdown(
                    choices=users,
                    value=users[0] if users else None,
                    allow_custom_value=True,
                    label="User",
                    elem_id="lab-user",
                )
                request_box = gr.Textbox(
                    label="Request", value="something to read on a long trip", elem_id="lab-request"
                )
            run_btn = gr.Button("Run both", variant="primary", elem_id="lab-run")
            with gr.Row():
                variant_box = gr.Textbox(
                    label="Variant name", placeholder="e.g. terse-reasons", elem_id="lab-variant-name"
                )
                save_btn = gr.Button("Save variant", elem_id="lab-save")
            save_msg = gr.Markdown("", elem_id="lab-save-msg")
        with gr.Column(scale=1):
            gr.Markdown("#### With the edited template")
            edited_prompt, edited_raw, edited_cards = _result_panes(gr, "lab-edited")
        with gr.Column(scale=1):
            gr.Markdown("#### With the saved template")
            saved_prompt, saved_raw, saved_cards = _result_panes(gr, "lab-saved")

    def admin_only(request) -> None:
        if not access.is_admin(request):
            raise gr.Error("The prompt lab needs an admin sign-in.")

    def on_template(stem, request: gr.Request):
        admin_only(request)
        return template_text(stem), ""

    template_dd.change(on_template, inputs=[template_dd], outputs=[yaml_box, error_box])

    outputs = [error_box, edited_prompt, edited_raw, edited_cards, saved_prompt, saved_raw, saved_cards]

    def on_run(stem, yaml_text, user_id, request_text, request: gr.Request):
        admin_only(request)
        if not user_id or not (request_text or "").strip():
            return [_error("Choose a user and type a request.")] + [""] * 6
        try:
            parse_template(yaml_text, f"(edited) {stem}.yaml")
        except PromptError as exc:
            return [_error(str(exc))] + [""] * 6
        warning = ""
        style = getattr(engine.llm, "prompt_style", None)
        if style and not stem.endswith("." + style):
            warning = _error(
                f"The loaded model reads {style} templates, so this {stem} edit changes nothing;"
                f" pick a .{style} template."
            )
        try:
            edited = run_with(engine, user_id, request_text, {stem: yaml_text})
            saved = run_with(engine, user_id, request_text, None)
        except (RecassistError, ValueError) as exc:
            return [_error(str(exc))] + [""] * 6
        return [
            warning,
            _pre(trace_text(edited["trace"], stem, "prompt")),
            _pre(trace_text(edited["trace"], stem, "raw")),
            result_html(edited),
            _pre(trace_text(saved["trace"], stem, "prompt")),
            _pre(trace_text(saved["trace"], stem, "raw")),
            result_html(saved),
        ]

    run_btn.click(on_run, inputs=[template_dd, yaml_box, user_dd, request_box], outputs=outputs)

    def on_save(name, stem, yaml_text, request: gr.Request):
        admin_only(request)
        try:
            path = save_variant((name or "").strip(), stem, yaml_text, engine.settings.prompt_variants_dir)
        except PromptError as exc:
            return _error(str(exc)), ""
        return "", f"Saved `{path}`. Measure it: `recassist eval --prompt-variant {name.strip()}`"

    save_btn.click(on_save, inputs=[variant_box, template_dd, yaml_box], outputs=[error_box, save_msg])


def _result_panes(gr, prefix: str):
    """Rendered prompt, raw model output and final cards of one run."""
    return tuple(
        gr.HTML("", label=label, show_label=True, container=True, elem_id=f"{prefix}-{suffix}", elem_classes=["lab-pane"])
        for label, suffix in (("Rendered prompt", "prompt"), ("Raw model output", "raw"), ("Final cards", "cards"))
    )


def _default_template(stems: list[str], settings) -> str | None:
    """The ranking template in the configured prompt style, the lab's most useful starting point."""
    style = settings.llm_prompt_style if settings.llm_prompt_style != "auto" else "completion"
    preferred = f"rank.{style}"
    return preferred if preferred in stems else (stems[0] if stems else None)


def _error(message: str) -> str:
    return f'<div class="lab-error">⚠️ {escape(message)}</div>'


def _safe_demo_users(engine) -> list[dict]:
    try:
        return list(engine.demo_users())
    except (OSError, ValueError):
        return []
