"""LLM re-ranking: blending, shuffling against position bias, fallbacks that never lose items, token budgets."""

from __future__ import annotations

import json
import re

import pytest

from core.errors import LLMError
from assistant.llm.fake import FakeLLM
from assistant.ranking import LABELS, item_line, parse_ranking, rank
from prompts import Prompts
from prompts.loader import Lines
from retrieval.records import Candidate, Evidence, Item

PROMPTS = Prompts("completion")


def prompts_with_lines(**lines) -> Prompts:
    """The shipped completion prompts, with the rank template's `lines:` block changed."""
    shipped = PROMPTS.get("rank")
    prompts = Prompts("completion")
    prompts.override(shipped.model_copy(update={"lines": shipped.lines.model_copy(update=lines)}))
    return prompts


EVIDENCE_PROMPTS = prompts_with_lines(evidence=True)


def candidates(n: int, evidence: bool = False) -> list[Candidate]:
    """Candidates c0..c(n-1), best retrieval score first."""
    return [
        Candidate(
            Item(f"c{i}", f"Title {i}", categories=["Drama", "Crime"], year=1990 + i),
            score=1.0 - i / 100,
            evidence=Evidence(near_history=[("h0", "History 0", 0.9)]) if evidence else Evidence(),
        )
        for i in range(n)
    ]


def history(n: int) -> list[Item]:
    return [Item(f"h{i}", f"History {i}", categories=["Drama"], year=1970 + i) for i in range(n)]


def ids(result) -> list[str]:
    return [c.item.id for c in result.candidates]


@pytest.mark.parametrize(
    "blend, expected",
    [
        (0.0, ["c0", "c1", "c2", "c3", "c4"]),  # retrieval only; the LLM is not even asked
        (0.3, ["c0", "c2", "c1", "c3", "c4"]),  # the LLM's favourite c2 gains 0.3: passes c1 only
        (0.6, ["c2", "c0", "c1", "c3", "c4"]),
        (1.0, ["c2", "c0", "c1", "c3", "c4"]),  # LLM only; ties keep retrieval order
    ],
)
def test_blend_moves_the_llm_favourite_by_its_weight(blend, expected):
    llm = FakeLLM(default="C")  # label C always gets all the probability
    result = rank(llm, PROMPTS, history(2), candidates(5), shuffles=1, blend=blend, calibrate=False)
    assert ids(result) == expected
    assert result.fallback is None
    assert len(llm.prompts) == (0 if blend == 0 else 1)


def test_llm_scores_are_label_probabilities_and_the_prompt_is_recorded():
    llm = FakeLLM([{"A": -0.1, "B": -2.5, "C": -9.0}])
    result = rank(llm, PROMPTS, history(1), candidates(3), shuffles=1, calibrate=False)
    assert result.method == "logprobs" and result.passes == 1
    assert sum(result.llm_scores.values()) == pytest.approx(1.0)
    assert result.llm_scores["c0"] > result.llm_scores["c1"] > result.llm_scores["c2"]
    assert result.raw[0]["prompt"] == llm.prompts[0] and result.prompt_tokens == llm.count_tokens(llm.prompts[0])
    assert llm.calls[0]["labels"] == ["A", "B", "C"]


def test_shuffling_cancels_a_model_that_always_answers_a():
    llm = FakeLLM(default="A")  # pure position bias: whatever is first wins
    one = rank(llm, PROMPTS, [], candidates(6), shuffles=1, blend=1.0, calibrate=False)
    assert one.llm_scores["c0"] == pytest.approx(1.0)
    two = rank(llm, PROMPTS, [], candidates(6), shuffles=2, blend=1.0, calibrate=False)
    # The first item no longer beats the last: the bias is split between whoever sat first.
    assert two.llm_scores["c0"] == pytest.approx(two.llm_scores["c5"]) == pytest.approx(0.5)
    four = rank(llm, PROMPTS, [], candidates(6), shuffles=4, blend=1.0, seed=3, calibrate=False)
    assert max(four.llm_scores.values()) <= 0.5 + 1e-9
    orders = [entry["order"] for entry in four.raw]
    assert len({tuple(o) for o in orders}) == 4 and all(sorted(o) == sorted(orders[0]) for o in orders)


def test_calibration_removes_a_pure_label_bias():
    # The model answers A whatever the candidates are: after calibration it prefers nobody.
    llm = FakeLLM(default="A")
    result = rank(llm, PROMPTS, [], candidates(5), shuffles=1, blend=1.0)
    assert result.llm_scores == pytest.approx(dict.fromkeys(["c0", "c1", "c2", "c3", "c4"], 0.2))
    assert ids(result) == ["c0", "c1", "c2", "c3", "c4"] and len(llm.prompts) == 2


def test_calibration_keeps_what_the_items_earn():
    prior = {"A": -0.5, "B": -1.5, "C": -2.5}  # the model's taste for the labels alone
    answer = {"A": -0.6, "B": -2.6, "C": -0.6}  # C rose far above its prior, B fell below it
    result = rank(FakeLLM([prior, answer]), PROMPTS, [], candidates(3), shuffles=1, blend=1.0)
    assert ids(result) == ["c2", "c0", "c1"]
    assert result.raw[0]["calibration"] is True and result.passes == 1


def test_each_shuffle_shows_the_same_candidates_relabelled():
    llm = FakeLLM(default="A")
    result = rank(llm, PROMPTS, history(2), candidates(4), shuffles=2)
    calibration, first, second = llm.prompts
    assert "A. Title 0 (Drama)" in first and "A. Title 3 (Drama)" in second
    # Everything before the candidate block is identical, so the model's KV cache reuses it.
    assert first.split("A. Title 0 (")[0] == second.split("A. Title 3 (")[0]
    assert [entry["order"] for entry in result.raw[1:]] == [["c0", "c1", "c2", "c3"], ["c3", "c2", "c1", "c0"]]


def test_calibration_is_content_free_and_asked_once_per_model():
    # Zhao et al.'s content-free input: the template's instructions and examples, no user data.
    llm, priors = FakeLLM(default="A"), {}
    first = rank(llm, PROMPTS, history(2), candidates(4), shuffles=1, request="a heist", priors=priors)
    calibration = llm.prompts[0]
    assert "A. N/A\nB. N/A\nC. N/A\nD. N/A" in calibration
    assert "History 0" not in calibration and "a heist" not in calibration
    assert first.raw[0]["calibration"] and not first.raw[0]["cached"] and first.total_prompt_tokens == 2 * first.prompt_tokens
    # Another user, another request, the same number of candidates: the saved prior is used.
    second = rank(llm, PROMPTS, history(5), list(reversed(candidates(4))), shuffles=1, request="comedy", priors=priors)
    assert len(llm.prompts) == 3 and "N/A" not in llm.prompts[2]
    assert second.raw[0]["cached"] and second.total_prompt_tokens == second.prompt_tokens
    assert second.llm_scores == pytest.approx(dict.fromkeys(["c0", "c1", "c2", "c3"], 0.25))
    # A different candidate count is a different content-free prompt.
    rank(llm, PROMPTS, [], candidates(3), shuffles=1, priors=priors)
    assert "C. N/A" in llm.prompts[3] and "D. N/A" not in llm.prompts[3] and len(priors) == 2


def test_a_cached_prior_belongs_to_its_model():
    priors = {}
    rank(FakeLLM(default="A", model="one"), PROMPTS, [], candidates(3), shuffles=1, priors=priors)
    other = FakeLLM(default="A", model="two")
    rank(other, PROMPTS, [], candidates(3), shuffles=1, priors=priors)
    assert "N/A" in other.prompts[0] and len(priors) == 2


@pytest.mark.parametrize(
    "llm, fallback",
    [
        (FakeLLM([LLMError("server down")]), "server down"),
        (FakeLLM([{"A": float("nan"), "B": -1.0, "C": -1.0, "D": -1.0}]), "non-finite"),
        (FakeLLM(["this is not json"], supports_logprobs=False), "could not be read"),
        (FakeLLM([""], supports_logprobs=False), "could not be read"),
        (FakeLLM(['{"ranking": ["Z", "Q"]}'], supports_logprobs=False), "could not be read"),
        (FakeLLM([RuntimeError("boom")], supports_logprobs=False), "boom"),
    ],
)
def test_failures_keep_the_retrieval_order_and_say_why(llm, fallback):
    result = rank(llm, PROMPTS, history(1), candidates(4))
    assert ids(result) == ["c0", "c1", "c2", "c3"]
    assert result.method == "retrieval" and fallback in result.fallback
    assert result.llm_scores == {}


def test_without_an_llm_the_result_is_the_retrieval_order():
    result = rank(None, PROMPTS, [], candidates(3))
    assert ids(result) == ["c0", "c1", "c2"] and "no LLM" in result.fallback


@pytest.mark.parametrize("n", [0, 1])
def test_nothing_to_rank_is_returned_as_is(n):
    llm = FakeLLM()
    assert ids(rank(llm, PROMPTS, [], candidates(n))) == [f"c{i}" for i in range(n)] and not llm.prompts


def test_generation_fallback_uses_a_schema_of_the_shown_labels():
    llm = FakeLLM(['{"ranking": ["C", "A", "C", "X"]}'], supports_logprobs=False)
    result = rank(llm, PROMPTS, history(1), candidates(4), blend=1.0)
    assert result.method == "generation" and result.fallback is None
    assert ids(result)[:2] == ["c2", "c0"]
    schema = llm.calls[0]["json_schema"]
    assert schema["properties"]["ranking"]["items"]["enum"] == ["A", "B", "C", "D"]
    assert llm.prompts[0].endswith("Ranking:")


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"ranking": ["B", "A"]}', ["B", "A"]),
        ('["C", "C", "A"]', ["C", "A"]),
        ("B, then A, then D", ["B", "A", "D"]),
        ('{"ranking": "B"}', []),
        ("", []),
    ],
)
def test_parse_ranking(text, expected):
    assert parse_ranking(text, ["A", "B", "C", "D"]) == expected


def test_more_candidates_than_labels_keep_their_place_after_the_ranked_ones():
    llm = FakeLLM(default="A")
    result = rank(llm, PROMPTS, [], candidates(30), shuffles=1, calibrate=False)
    assert len(result.candidates) == 30
    assert ids(result)[26:] == [f"c{i}" for i in range(26, 30)]
    assert llm.calls[0]["labels"] == list(LABELS)


@pytest.mark.parametrize("budget", [300, 262, 250, 230, 215, 200, 185, 170, 150, 140])
def test_budget_trims_history_then_evidence_then_weakest_candidates(budget):
    llm = FakeLLM(default="A")  # counts whitespace-separated words as tokens
    hist, cands = history(8), candidates(10, evidence=True)
    result = rank(llm, EVIDENCE_PROMPTS, hist, cands, shuffles=1, budget_tokens=budget, calibrate=False)
    prompt = llm.prompts[0]
    assert llm.count_tokens(prompt) <= budget and result.prompt_tokens == llm.count_tokens(prompt)
    kept_history = re.findall(r"^- (History \d+ .*)$", prompt.split("History (oldest first):")[-1], flags=re.M)
    lines_ = EVIDENCE_PROMPTS.get("rank").lines
    full_history = [item_line(h, lines=lines_) for h in hist]
    assert kept_history == full_history[len(full_history) - len(kept_history) :]  # newest kept, whole lines
    lines = re.findall(r"^[A-Z]\. .*$", prompt.split("Candidates:")[-1], flags=re.M)
    assert all(
        line in (item_line(c.item, label=line[0], lines=lines_), item_line(c.item, label=line[0], evidence="near: History 0", lines=lines_))
        for line, c in zip(lines, cands)
    )
    with_evidence = sum("near:" in line for line in lines)
    if with_evidence < len(lines):
        assert not kept_history  # evidence goes only after the whole history
    if len(lines) < len(cands):
        assert with_evidence == 0  # candidates go only after all evidence
    assert len(result.candidates) == len(cands)  # trimmed candidates are kept, in retrieval order


def test_a_budget_too_small_for_two_candidates_falls_back():
    result = rank(FakeLLM(default="A"), PROMPTS, [], candidates(3), budget_tokens=5)
    assert ids(result) == ["c0", "c1", "c2"] and "budget" in result.fallback


def test_history_is_capped_to_the_most_recent_items():
    llm = FakeLLM(default="A")
    rank(llm, PROMPTS, history(30), candidates(3), shuffles=1, max_history=5, calibrate=False)
    assert "History 24 " not in llm.prompts[0] and "History 25 " in llm.prompts[0] and "History 29 " in llm.prompts[0]


def test_chat_style_prompts_are_messages():
    llm = FakeLLM(default="B", prompt_style="chat")
    result = rank(llm, Prompts("chat"), history(1), candidates(3), shuffles=1, blend=1.0, calibrate=False)
    assert isinstance(llm.prompts[0], list) and ids(result)[0] == "c1"
    assert json.dumps(llm.prompts[0]).count("Title ") == 3


@pytest.mark.parametrize(
    "item, expected",
    [
        (Item("1", "Heat", year=1995, categories=["Action", "Crime", "Drama", "Thriller"]), "Heat (1995; Action, Crime)"),
        (Item("2", "Emma", creator="Jane Austen"), "Emma by Jane Austen"),
        (Item("3", "Plain"), "Plain"),
    ],
)
def test_item_lines_are_compact(item, expected):
    assert item_line(item) == expected
    assert item_line(item, label="C", evidence="near: X") == f"C. {expected} - near: X"


@pytest.mark.parametrize(
    "lines, expected",
    [
        ({}, "C. Heat (1995; Action, Crime) by Michael Mann - near: X"),
        ({"categories": 1}, "C. Heat (1995; Action) by Michael Mann - near: X"),
        ({"categories": 0, "creator": False}, "C. Heat (1995) - near: X"),
        ({"year": False, "evidence": False}, "C. Heat (Action, Crime) by Michael Mann"),
        ({"year": False, "categories": 0, "creator": False, "evidence": False}, "C. Heat"),
    ],
)
def test_a_templates_lines_block_chooses_the_facts(lines, expected):
    item = Item("1", "Heat", year=1995, categories=["Action", "Crime", "Drama"], creator="Michael Mann")
    assert item_line(item, label="C", evidence="near: X", lines=Lines(**lines)) == expected


def test_the_rank_prompt_uses_its_templates_lines():
    llm = FakeLLM(default="A")
    rank(llm, PROMPTS, history(1), candidates(2, evidence=True), shuffles=1, calibrate=False)
    assert "A. Title 0 (Drama)\n" in llm.prompts[0] and "near:" not in llm.prompts[0]  # shipped: no evidence
    assert "- History 0 (Drama)\n" in llm.prompts[0] and "1970" not in llm.prompts[0]
    rank(llm, prompts_with_lines(evidence=True, year=True), history(1), candidates(2, evidence=True), shuffles=1, calibrate=False)
    assert "A. Title 0 (1990; Drama) - near: History 0" in llm.prompts[1]
