"""The propose step: titles a model names, linked by the title linker and fused with retrieval."""

from __future__ import annotations

import pytest

from assistant.events import CardsEvent, DoneEvent
from assistant.llm.fake import FakeLLM
from assistant.proposals import link_lines, wants_proposals
from assistant.vocabulary import CatalogVocabulary
from retrieval.records import Item

CATALOG = [
    Item("dracula", "Dracula", "A count from Transylvania.", ["Horror"], year=1897),
    Item("carmilla", "Carmilla", "A vampire novella.", ["Horror"], year=1872),
    Item("emma", "Emma", "A matchmaker in a village.", ["Romance"], year=1815),
]


def test_each_line_links_to_the_catalog_or_counts_as_invented():
    vocab = CatalogVocabulary(CATALOG)
    text = "1. Dracula (1897)\n- Carmilla\nThe Vampyre (1819)\n\n  \nDracula\nEmma (1815)"
    linked, invented, lines, copied = link_lines(text, vocab, example="Conversation: ...\nEmma (1815)\n")
    assert linked == ["dracula", "carmilla"]  # best first, a work listed twice counts once
    assert invented == ["The Vampyre (1819)"]
    assert (lines, copied) == (5, 1)  # the example's own title is dropped, not proposed


@pytest.mark.parametrize(
    "setting, style, expected",
    [("auto", "chat", True), ("auto", "completion", False), (True, "completion", True), (False, "chat", False)],
)
def test_auto_asks_chat_models_only(setting, style, expected):
    assert wants_proposals(setting, FakeLLM(prompt_style=style)) is expected
    assert wants_proposals(True, None) is False


def _turn(engine, message):
    trace: list = []
    events = list(engine.agent.respond("proposer", message, trace=trace, k=5))
    return events, trace


def test_linked_proposals_join_retrieval_and_the_turn_reports_them(make_engine):
    llm = FakeLLM(prompt_style="chat", supports_json_schema=False, default="")
    engine = make_engine(llm=llm, llm_proposals=True, rank_blend=0.0, llm_reasons=False, llm_summary=False)
    vocab = engine.agent.vocabulary()
    target = next(i for i, t in vocab.title_of.items() if t == "Frankenstein")
    llm.enqueue("Frankenstein (1818)\nA Book Nobody Wrote (2031)")
    events, trace = _turn(engine, "something to read on a rainy afternoon")
    done = next(e for e in events if isinstance(e, DoneEvent))
    assert done.request["proposals"] == {"proposed": 2, "linked": 1, "invented": 1, "copied": 0}
    retrieved = next(e for e in events if isinstance(e, CardsEvent) and e.stage == "retrieved")
    card = next((c for c in retrieved.cards if c.item_id == target), None)
    assert card is not None and "proposed" in card.evidence["signals"]
    step = next(t for t in trace if t["stage"] == "propose")
    assert step["invented"] == ["A Book Nobody Wrote (2031)"] and "rainy afternoon" in str(step["prompt"])


def test_without_proposals_the_model_is_not_asked_for_titles(make_engine):
    llm = FakeLLM(prompt_style="chat", supports_json_schema=False, default="")
    engine = make_engine(llm=llm, llm_proposals=False, rank_blend=0.0, llm_reasons=False, llm_summary=False)
    events, trace = _turn(engine, "something to read on a rainy afternoon")
    assert not any(t["stage"] == "propose" for t in trace)
    assert "proposals" not in next(e for e in events if isinstance(e, DoneEvent)).request
    assert llm.prompts == []


def test_a_failing_model_leaves_retrieval_alone(make_engine):
    from core.errors import LLMError

    llm = FakeLLM(prompt_style="chat", supports_json_schema=False, default="")
    engine = make_engine(llm=llm, llm_proposals=True, rank_blend=0.0, llm_reasons=False, llm_summary=False)
    llm.enqueue(LLMError("the server went away"))
    events, trace = _turn(engine, "a sea adventure")
    assert any(isinstance(e, CardsEvent) and e.cards for e in events)
    assert next(t for t in trace if t["stage"] == "propose")["failure"] == "the server went away"
