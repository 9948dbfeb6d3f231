"""The chat panel: user picker and profile, the conversation, card slots with feedback, sessions.

Over 400 lines on purpose: Gradio wires each event to the components of the scope that made them,
so `build_chat`'s handlers are closures over some twenty components; splitting them apart would
pass all of those around instead. The helpers after it are plain functions.
"""

import logging
import time

from core.errors import RecassistError

from ui.cards import FEEDBACK_LABELS, card_html, chat_markdown, profile_html, turn_status_html
from ui.lab import LAB_SESSION_PREFIX

log = logging.getLogger(__name__)

STREAM_INTERVAL_S = 0.08  # at most this often a token-level update is pushed to the browser
FEEDBACK_BUTTONS = (("like", "Like", 64), ("dislike", "Dislike", 80), ("not_interested", "Not interested", 124))


def build_chat(gr, engine, access, n_slots: int) -> dict:
    from assistant.events import TurnState
    from assistant.events import CardsEvent, DoneEvent, ReasonEvent

    demo_users = _demo_users(engine)
    with gr.Row(equal_height=False):
        # Left: who is chatting, and their profile.
        with gr.Column(scale=2, min_width=240):
            with gr.Column(elem_id="picker-box") as picker_box:
                picker = gr.Radio(
                    choices=[(f"{u['name']} ({u['user_id']})", u["user_id"]) for u in demo_users],
                    label="Demo users",
                    elem_id="user-picker",
                )
                with gr.Row():
                    new_user = gr.Textbox(placeholder="other user id", show_label=False, elem_id="new-user", scale=3)
                    new_user_btn = gr.Button("Use", elem_id="new-user-btn", size="sm", scale=0, min_width=60)
            current = gr.Markdown("_No user selected._", elem_id="current-user")
            with gr.Accordion("Profile", open=True, elem_id="profile-panel"):
                profile_view = gr.HTML(profile_html(None), elem_id="profile-view")
                with gr.Accordion("Edit profile", open=False, elem_id="profile-edit"):
                    interests_box = gr.Textbox(label="Interests (comma separated)", elem_id="profile-interests")
                    dislikes_box = gr.Textbox(label="Dislikes (comma separated)", elem_id="profile-dislikes")
                    summary_box = gr.Textbox(label="Summary", lines=3, elem_id="profile-summary")
                    save_profile = gr.Button("Save profile", elem_id="profile-save", size="sm")
                delete_btn = gr.Button("Delete my data", variant="stop", size="sm", elem_id="delete-data")
                with gr.Column(visible=False, elem_id="delete-confirm-box") as confirm_box:
                    gr.Markdown("This removes **all** events, conversations and the profile of this user. Continue?")
                    with gr.Row():
                        confirm_btn = gr.Button("Yes, delete", variant="stop", size="sm", elem_id="delete-confirm")
                        cancel_btn = gr.Button("Cancel", size="sm", elem_id="delete-cancel")
            sessions_dd = gr.Dropdown(choices=[], label="Earlier conversations", elem_id="sessions", interactive=True)
        # Middle: the conversation.
        with gr.Column(scale=4, min_width=320):
            chatbot = gr.Chatbot(
                elem_id="chat",
                height=520,
                show_label=False,
                feedback_options=None,
                placeholder="Pick a user, then ask for something.",
            )
            turn_status = gr.HTML("", elem_id="turn-status")
            with gr.Row():
                msg = gr.Textbox(
                    placeholder=_example(engine),
                    show_label=False,
                    scale=5,
                    elem_id="msg",
                    autofocus=True,
                )
                send_btn = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
            new_chat_btn = gr.Button("New conversation", size="sm", elem_id="new-chat")
        # Right: the cards, each with its feedback buttons.
        with gr.Column(scale=4, min_width=320, elem_id="cards"):
            gr.Markdown("#### Recommendations")
            cards_empty = gr.HTML(
                '<div class="rc-empty">Cards appear here as soon as candidates are found.</div>', elem_id="cards-empty"
            )
            slot_boxes, slot_htmls, slot_buttons = [], [], []
            for i in range(n_slots):
                with gr.Column(visible=False, elem_id=f"card-{i}", elem_classes=["rc-slot"]) as box:
                    body = gr.HTML("", elem_id=f"card-{i}-body")
                    with gr.Row(elem_classes=["rc-buttons"]):
                        buttons = {
                            kind: gr.Button(
                                label, size="sm", elem_id=f"card-{i}-{kind.replace('_', '-')}", scale=0, min_width=width
                            )
                            for kind, label, width in FEEDBACK_BUTTONS
                        }
                slot_boxes.append(box)
                slot_htmls.append(body)
                slot_buttons.append(buttons)

    user_state = gr.State("")
    session_state = gr.State(None)
    history_state = gr.State([])
    cards_state = gr.State([])  # the card dicts now on screen, by slot
    marks_state = gr.State({})  # item_id -> feedback given in this browser session
    profile_state = gr.State({})

    def cards_updates(items: list[dict], *, pending=False, writing=(), marks=None) -> dict:
        marks = marks or {}
        out = {cards_empty: gr.HTML(visible=not items)}
        for i in range(n_slots):
            if i < len(items):
                card = items[i]
                out[slot_boxes[i]] = gr.Column(visible=True)
                out[slot_htmls[i]] = card_html(
                    card,
                    i + 1,
                    pending=pending,
                    writing=card["item_id"] in writing,
                    feedback=marks.get(card["item_id"], ""),
                )
            else:
                out[slot_boxes[i]] = gr.Column(visible=False)
                out[slot_htmls[i]] = ""
        return out

    def profile_updates(profile: dict) -> dict:
        return {
            profile_view: profile_html(profile),
            interests_box: ", ".join(i["tag"] for i in profile.get("interests", [])),
            dislikes_box: ", ".join(profile.get("dislikes", [])),
            summary_box: profile.get("summary", ""),
            profile_state: profile,
        }

    def sessions_update(user_id: str):
        rows = engine.agent.sessions(user_id) if user_id else []
        rows = [r for r in rows if not str(r["session_id"]).startswith(LAB_SESSION_PREFIX)]
        choices = [
            (f"{(r.get('title') or '(untitled)')[:40]} · {r.get('turns', 0)} turns", r["session_id"]) for r in rows[:30]
        ]
        return gr.Dropdown(choices=choices, value=None)

    def select_user(user_id: str) -> dict:
        profile = engine.agent.get_profile(user_id)
        out = {
            user_state: user_id,
            current: f"Chatting as **{user_id}**",
            chatbot: [],
            history_state: [],
            session_state: None,
            cards_state: [],
            marks_state: {},
            turn_status: "",
            sessions_dd: sessions_update(user_id),
            confirm_box: gr.Column(visible=False),
        }
        out.update(profile_updates(profile))
        out.update(cards_updates([]))
        return out

    user_outputs = [
        user_state,
        current,
        chatbot,
        history_state,
        session_state,
        cards_state,
        marks_state,
        turn_status,
        sessions_dd,
        confirm_box,
        profile_view,
        interests_box,
        dislikes_box,
        summary_box,
        profile_state,
        cards_empty,
        *slot_boxes,
        *slot_htmls,
    ]

    def on_pick(user_id, request: gr.Request):
        user_id = (user_id or "").strip()
        if not user_id:
            return {}
        access.check(request, user_id)
        try:
            return select_user(user_id)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None

    picker.change(on_pick, inputs=[picker], outputs=user_outputs, show_progress="hidden")
    new_user_btn.click(on_pick, inputs=[new_user], outputs=user_outputs, show_progress="hidden")
    new_user.submit(on_pick, inputs=[new_user], outputs=user_outputs, show_progress="hidden")

    turn_outputs = [
        chatbot,
        msg,
        history_state,
        session_state,
        cards_state,
        turn_status,
        sessions_dd,
        profile_view,
        cards_empty,
        *slot_boxes,
        *slot_htmls,
    ]

    def send(message, user_id, session_id, history, marks, shown, request: gr.Request):
        access.check(request, user_id)
        message = (message or "").strip()
        if not message:
            return
        history = list(history) + [{"role": "user", "content": message}]
        turn = sum(1 for m in history if m["role"] == "user")
        state = TurnState()
        started = time.monotonic()

        def frame(status: str, final: bool = False) -> dict:
            items = state.items()
            bubble = chat_markdown(items, state.text, state.notices, waiting=not final)
            panel = cards_in_view(state, shown or [])
            out = {
                chatbot: history + [{"role": "assistant", "content": bubble}],
                turn_status: turn_status_html(status, turn, "done" if final else "working"),
                cards_state: panel,
            }
            writing = set() if final else state.writing
            out.update(cards_updates(panel, pending=bool(state.cards) and state.stage == "retrieved", writing=writing, marks=marks))
            return out

        yield {msg: "", **frame("Understanding your request…")}
        last_push = 0.0
        try:
            for event in engine.agent.respond(user_id, message, session_id=session_id):
                state.apply(event)
                if isinstance(event, DoneEvent):
                    break
                urgent = isinstance(event, (CardsEvent, ReasonEvent))
                now = time.monotonic()
                if urgent or now - last_push >= STREAM_INTERVAL_S:
                    last_push = now
                    yield frame(_progress_text(state))
        except (RecassistError, ValueError) as exc:
            state.notices.append(f"Sorry, that failed: {exc}")
        except Exception:
            log.exception("chat turn failed")
            state.notices.append("Sorry, something went wrong on our side; the server log has the details.")
        done = state.done
        out = frame(_done_text(done, time.monotonic() - started), final=True)
        final_items = state.items()
        history = history + [{"role": "assistant", "content": chat_markdown(final_items, state.text, state.notices)}]
        out.update(
            {
                chatbot: history,
                history_state: history,
                session_state: done.session_id if done else session_id,
                sessions_dd: sessions_update(user_id),
                profile_view: profile_html(engine.agent.get_profile(user_id)),
            }
        )
        yield out

    send_inputs = [msg, user_state, session_state, history_state, marks_state, cards_state]
    send_btn.click(send, inputs=send_inputs, outputs=turn_outputs, show_progress="hidden")
    msg.submit(send, inputs=send_inputs, outputs=turn_outputs, show_progress="hidden")

    def new_chat():
        return {
            chatbot: [],
            history_state: [],
            session_state: None,
            cards_state: [],
            turn_status: "",
            **cards_updates([]),
        }

    new_chat_btn.click(
        new_chat,
        outputs=[
            chatbot,
            history_state,
            session_state,
            cards_state,
            turn_status,
            cards_empty,
            *slot_boxes,
            *slot_htmls,
        ],
    )

    def resume(session_id, user_id, marks, request: gr.Request):
        if not session_id or not user_id:
            return {}
        access.check(request, user_id)
        history, items = [], []
        for m in engine.agent.messages(user_id, session_id):
            payload = m.get("payload") or {}
            if m["role"] == "assistant":
                items = payload.get("cards") or []
                history.append({"role": "assistant", "content": chat_markdown(items, m["content"], [])})
            else:
                history.append({"role": "user", "content": m["content"]})
        return {
            chatbot: history,
            history_state: history,
            session_state: session_id,
            cards_state: items,
            turn_status: turn_status_html("Resumed an earlier conversation."),
            **cards_updates(items, marks=marks),
        }

    sessions_dd.input(
        resume,
        inputs=[sessions_dd, user_state, marks_state],
        outputs=[
            chatbot,
            history_state,
            session_state,
            cards_state,
            turn_status,
            cards_empty,
            *slot_boxes,
            *slot_htmls,
        ],
    )

    # Per-card feedback: slot i's buttons act on whatever card slot i shows now.
    for i in range(n_slots):
        for kind, button in slot_buttons[i].items():

            def on_feedback(cards, user_id, marks, request: gr.Request, i=i, kind=kind):
                access.check(request, user_id)
                if i >= len(cards):
                    return {}
                card = cards[i]
                try:
                    engine.agent.feedback(user_id, card["item_id"], kind)
                except (RecassistError, ValueError) as exc:
                    raise gr.Error(str(exc)) from None
                marks = {**marks, card["item_id"]: kind}
                gr.Info(
                    f"{FEEDBACK_LABELS[kind]}: {card.get('title', '')}. Your next answer takes this into account.",
                    duration=4,
                )
                return {
                    slot_htmls[i]: card_html(card, i + 1, feedback=kind),
                    marks_state: marks,
                    profile_view: profile_html(engine.agent.get_profile(user_id)),
                }

            button.click(
                on_feedback,
                inputs=[cards_state, user_state, marks_state],
                outputs=[slot_htmls[i], marks_state, profile_view],
                show_progress="hidden",
            )

    def on_save_profile(user_id, interests, dislikes, summary, old, request: gr.Request):
        access.check(request, user_id)
        new_tags, new_dislikes = _split(interests), _split(dislikes)
        old_weights = {i["tag"]: i.get("weight", 1.0) for i in old.get("interests", [])}
        patch = {
            "interests": [{"tag": t, "weight": float(old_weights.get(t, 1.0))} for t in new_tags],
            "removed_interests": [t for t in old_weights if t not in new_tags],
            "dislikes": new_dislikes,
            "removed_dislikes": [d for d in old.get("dislikes", []) if d not in new_dislikes],
        }
        if summary.strip() != (old.get("summary") or "").strip():
            patch["summary"] = summary.strip()
        try:
            profile = engine.agent.update_profile(user_id, patch)
        except (RecassistError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        gr.Info("Profile saved; your next answer uses it.", duration=4)
        return profile_updates(profile)

    save_profile.click(
        on_save_profile,
        inputs=[user_state, interests_box, dislikes_box, summary_box, profile_state],
        outputs=[profile_view, interests_box, dislikes_box, summary_box, profile_state],
    )

    delete_btn.click(lambda: gr.Column(visible=True), outputs=[confirm_box])
    cancel_btn.click(lambda: gr.Column(visible=False), outputs=[confirm_box])

    def on_delete(user_id, request: gr.Request):
        access.check(request, user_id)
        removed = engine.agent.delete_user(user_id)
        gr.Info("Deleted: " + ", ".join(f"{v} {k}" for k, v in removed.items()))
        out = select_user(user_id)
        out[turn_status] = turn_status_html("Your data was deleted. You can start afresh.")
        return out

    confirm_btn.click(on_delete, inputs=[user_state], outputs=user_outputs)

    return {"picker_box": picker_box, "user_outputs": user_outputs, "select_user": select_user}


def _progress_text(state) -> str:
    if state.stage == "retrieved":
        return f"Found {len(state.cards)} candidates; ranking them…"
    if state.stage == "ranked" and not state.text:
        return "Writing reasons…"
    return "Writing the summary…"


def _done_text(done, elapsed_s: float) -> str:
    if done is None:
        return f"Stopped after {elapsed_s:.1f} s."
    stages = ", ".join(f"{k} {v:.0f} ms" for k, v in (done.timings_ms or {}).items())
    return f"Answered in {elapsed_s:.1f} s" + (f" ({stages})" if stages else "")


def _split(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))


LIST_INTENTS = ("recommend", "refine", "feedback")  # turns that answer with a new list


def cards_in_view(state, shown: list[dict]) -> list[dict]:
    """The cards to show during and after a turn: its own as soon as it has some. Until then, and
    for turns about the list already shown ("why the first one?", "tell me about the second"),
    the cards on screen stay: they are what the answer talks about."""
    if state.cards:
        return state.items()
    if state.done is not None and state.done.intent in LIST_INTENTS:
        return []  # a new list was asked for and nothing matched
    return list(shown)


def _example(engine) -> str:
    """A first request to try, in the language of the demo the engine serves."""
    try:
        demo = engine.demo or engine.loaded_demo()
    except RecassistError:  # a store that is not reachable yet: the English example will do
        demo = None
    return demo.example if demo is not None else "e.g. something like Dracula, but shorter"


def _demo_users(engine) -> list[dict]:
    try:
        return list(engine.demo_users())
    except (OSError, ValueError) as exc:
        log.warning("no demo users to offer: %s", exc)
        return []
