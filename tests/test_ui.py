"""The Gradio UI without a browser: card/profile HTML, the lab helpers, and the Blocks' stable element ids."""

from __future__ import annotations

import pytest

from ui.cards import card_html, chat_markdown, evidence_html, profile_html, status_html, turn_status_html
from ui.lab import result_html, template_text, trace_text

CARD = {
    "item_id": "bk-1",
    "title": "Pride & <Prejudice>",
    "year": 1813,
    "creator": "Jane Austen",
    "categories": ["Fiction", "Romance"],
    "reason": "Like <b>Emma</b>, which you loved.",
    "evidence": {
        "near_history": [{"item_id": "bk-2", "title": "Emma", "similarity": 0.8123}],
        "matched_words": ["witty"],
        "shared_categories": ["Romance"],
        "shared_creators": ["Jane Austen"],
        "signals": {"content": 0.5, "collab": 0.25},
    },
}


@pytest.mark.parametrize(
    "fragment",
    [
        "Pride &amp; &lt;Prejudice&gt;",  # catalog text is escaped, never markup
        "Like &lt;b&gt;Emma&lt;/b&gt;, which you loved.",
        "1813 · Jane Austen · Fiction, Romance",
        '<details class="rc-evidence"><summary>Evidence</summary>',
        "close to <b>Emma</b> from your history (0.81)",
        "matches your words: witty",
        "by a creator you like: Jane Austen",
        "signals: content 0.50, collab 0.25",
        'data-item-id="bk-1"',
    ],
)
def test_card_html_shows_every_part(fragment):
    assert fragment in card_html(CARD, 1)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"feedback": "like"}, 'data-feedback="like">Liked<'),
        ({"feedback": "not_interested"}, "Not interested"),
        ({"pending": True}, "ranking…"),
        ({"writing": True}, "rc-reason rc-writing"),
    ],
)
def test_card_html_states(kwargs, fragment):
    assert fragment in card_html(CARD, 2, **kwargs)


def test_evidence_is_omitted_when_empty():
    assert evidence_html({}) == ""
    assert "<details" not in card_html({**CARD, "evidence": {}}, 1)


def test_profile_html():
    html = profile_html(
        {
            "summary": "Reads <Austen>.",
            "interests": [{"tag": "Romance", "weight": 1.0}],
            "dislikes": ["Horror"],
            "events": 7,
        }
    )
    assert "Reads &lt;Austen&gt;." in html and ">Romance<" in html and "rc-neg" in html and "7 events" in html
    assert "Pick a user" in profile_html(None)


def test_status_line_names_backend_models_and_catalog():
    html = status_html(
        {
            "llm_backend": "llama",
            "llm_model": "gemma",
            "embedding_model": "minilm",
            "catalog_items": 1234,
            "users": 5,
            "version": "0.1",
        }
    )
    assert "llama · gemma" in html and "minilm" in html and "1,234 items" in html


def test_turn_status_carries_turn_and_state():
    assert 'data-turn="3" data-state="working"' in turn_status_html("Ranking…", 3, "working")
    assert "rc-spinner" not in turn_status_html("Answered", 3, "done")


@pytest.mark.parametrize(
    "items, text, notices, expected",
    [
        ([CARD], "Enjoy.", [], "1. **Pride & \\<Prejudice\\>** (1813)\n\nEnjoy."),
        ([], "Hello!", ["LLM slow"], "_LLM slow_\n\nHello!"),
        ([], "", [], "(no answer)"),
    ],
)
def test_chat_markdown(items, text, notices, expected):
    assert chat_markdown(items, text, notices) == expected


def test_lab_trace_text_prefers_the_chosen_template():
    trace = [
        {"stage": "rank", "prompt": "RANK PROMPT", "raw": "A B"},
        {"stage": "reason", "prompt": [{"role": "user", "content": "why?"}], "raw": "Because."},
    ]
    assert trace_text(trace, "rank.completion", "prompt") == "── rank ──\nRANK PROMPT"
    assert "[user] why?" in trace_text(trace, "reason.chat", "prompt")
    assert trace_text(trace, "summary.completion", "raw").count("──") == 4  # no match: every stage


def test_lab_trace_says_which_reasons_the_check_kept_and_why_not():
    trace = [
        {"stage": "reason", "item_id": "541", "prompt": "P1", "raw": "a replicant hunter", "kept": True,
         "reason": "A replicant hunter; it is close to Alien, which you liked.", "problems": []},
        {"stage": "reason", "item_id": "2", "prompt": "P2", "raw": "a story with Tolstoy", "kept": False,
         "reason": "It shares Drama with your favourites.", "problems": ["mentions 'Tolstoy', which is not in the evidence"]},
    ]
    assert trace_text(trace, "reason.completion", "raw") == (
        "── reason · 541 ──\na replicant hunter\n→ kept: A replicant hunter; it is close to Alien, which you liked.\n\n"
        "── reason · 2 ──\na story with Tolstoy\n→ not kept: mentions 'Tolstoy', which is not in the evidence"
    )


def test_lab_result_html_and_template_text():
    assert "rc-card" in result_html({"items": [CARD], "text": "Two picks.", "notices": []})
    assert "name: rank" in template_text("rank.completion")


def test_create_ui_has_stable_element_ids(make_engine):
    pytest.importorskip("gradio")
    from ui.app import MAX_SLOTS, create_ui

    blocks = create_ui(make_engine(demo=False))
    ids = {c.get("props", {}).get("elem_id") for c in blocks.config["components"]}
    expected = {
        "status-line",
        "user-picker",
        "new-user",
        "new-user-btn",
        "current-user",
        "profile-view",
        "profile-interests",
        "profile-dislikes",
        "profile-summary",
        "profile-save",
        "delete-data",
        "delete-confirm",
        "delete-cancel",
        "sessions",
        "chat",
        "turn-status",
        "msg",
        "send",
        "new-chat",
        "lab-template",
        "lab-yaml",
        "lab-error",
        "lab-user",
        "lab-request",
        "lab-run",
        "lab-variant-name",
        "lab-save",
    }
    for i in range(MAX_SLOTS):
        expected |= {f"card-{i}", f"card-{i}-body", f"card-{i}-like", f"card-{i}-dislike", f"card-{i}-not-interested"}
    assert expected <= ids, sorted(expected - ids)


def test_launch_refuses_to_serve_off_loopback_without_keys(make_engine):
    from core.errors import ConfigError
    from server.ui_mount import launch_ui as launch

    with pytest.raises(ConfigError, match="RECASSIST_API_KEYS"):
        launch(make_engine(demo=False), host="0.0.0.0", port=1)


# The card panel across turns: a turn about the list ("why the first one?") keeps it in view ------


def _state(*events):
    from assistant.events import TurnState

    state = TurnState()
    for event in events:
        state.apply(event)
    return state


SHOWN = [{"item_id": "bk-1", "title": "Emma"}, {"item_id": "bk-2", "title": "Persuasion"}]


@pytest.mark.parametrize(
    "events, expected",
    [
        ([], ["bk-1", "bk-2"]),  # nothing yet: what is on screen stays
        ([("message", "Emma: it matches what you asked for."), ("done", "why")], ["bk-1", "bk-2"]),
        ([("message", "Emma (1815): a matchmaker..."), ("done", "about_item")], ["bk-1", "bk-2"]),
        ([("message", "Hi!"), ("done", "smalltalk")], ["bk-1", "bk-2"]),
        ([("cards", "bk-3"), ("done", "refine")], ["bk-3"]),  # a new list replaces it
        ([("message", "Nothing in the catalog matches all of that."), ("done", "recommend")], []),
    ],
)
def test_cards_in_view(events, expected):
    from assistant.events import Card, CardsEvent, DoneEvent, MessageEvent
    from ui.chat import cards_in_view

    made = {
        "message": lambda text: MessageEvent(text, "answer"),
        "done": lambda intent: DoneEvent("s1", intent, {}, {}, {}),
        "cards": lambda item_id: CardsEvent([Card(item_id, "Sense and Sensibility", 1.0, 1811, None, [], "", "evidence", {})], "ranked"),
    }
    view = cards_in_view(_state(*(made[kind](value) for kind, value in events)), SHOWN)
    assert [c["item_id"] for c in view] == expected


def test_the_cards_a_turn_asks_about_stay_in_view(make_engine):
    """The browser bug: after "why the first one?" the answer came and the card panel emptied."""
    pytest.importorskip("gradio")
    from html import escape
    from types import SimpleNamespace

    from ui.app import create_ui

    blocks = create_ui(make_engine())
    send = next(f for f in blocks.fns.values() if f.name == "send")
    _, _, history, session, cards = send.outputs[:5]
    by_id = {c.elem_id: c for c in send.outputs if getattr(c, "elem_id", None)}

    def turn(message, before):
        frames = list(send.fn(message, "ana", before.get(session), before.get(history, []), {}, before.get(cards, []),
                              SimpleNamespace(username=None)))
        return frames, frames[-1]

    _, first = turn("a witty romance", {})
    shown = first[cards]
    assert shown and first[by_id["cards-empty"]].visible is False
    for message in ("why the first one?", "tell me about the second one"):
        frames, out = turn(message, first)
        assert out[cards] == shown, message
        for frame in frames:  # not even for a moment
            assert frame[by_id["cards-empty"]].visible is False, message
            assert escape(shown[0]["title"]) in frame[by_id["card-0-body"]], message
        assert shown[0]["title"] in out[send.outputs[0]][-1]["content"] or message.startswith("tell")
