"""Continuous batching with the real embedded Gemma 3 270M, in-process and in its own process (integration).

Exact comparisons use prompts the model answers with a wide margin (copying a line): other batch
shapes round differently, which flips the near-ties of free text, not these.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from assistant.llm.base import ModelBusy

pytestmark = pytest.mark.integration

HEAD = ("Repeat the line exactly.\nLine: red green blue yellow\nRepeat: red green blue yellow\n"
        "Line: one two three four five\nRepeat: one two three four five\n")
LINES = ["apple banana cherry grape lemon", "north south east west", "Monday Tuesday Wednesday Thursday",
         "cat dog horse cow sheep pig", "Paris London Berlin Madrid Rome", "piano violin guitar drum flute"]
PROMPTS = [HEAD + f"Line: {line}\nRepeat:" for line in LINES]
QUESTION = "Question: Which letter comes first in the alphabet, A or B?\nAnswer:"


@pytest.fixture(scope="module")
def inline(embedded_model_path):
    from assistant.llm.llama import LlamaCppLLM

    model = LlamaCppLLM(embedded_model_path, n_ctx=2048, n_threads=2)
    yield model
    model.close()


@pytest.fixture(scope="module")
def supervised(embedded_model_path):
    from assistant.llm.process import ModelProcessLLM, ModelSupervisor

    supervisor = ModelSupervisor(embedded_model_path, n_ctx=2048, threads=2, backoff_s=(0.2, 2.0))
    info = supervisor.start()
    yield ModelProcessLLM(supervisor.socket_path, timeout_s=10.0, queue_timeout_s=30.0, supervisor=supervisor, info=info)
    supervisor.stop()


def each_in_a_thread(n, work):
    results, errors = [None] * n, []

    def run(i):
        try:
            results[i] = work(i)
        except Exception as exc:  # a failing caller must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def write(llm, prompt, max_tokens=16):
    return "".join(llm.stream(prompt, max_tokens=max_tokens, stop=["\n"]))


@pytest.mark.parametrize("where", ["inline", "process"])
def test_streams_of_concurrent_callers_write_exactly_what_each_writes_alone(where, inline, supervised):
    llm = inline if where == "inline" else supervised
    alone = [write(llm, p) for p in PROMPTS]
    assert alone == [" " + line for line in LINES]  # the reference is right, not only equal
    together = each_in_a_thread(len(PROMPTS), lambda i: write(llm, PROMPTS[i]))
    assert together == alone
    many: dict[int, str] = {}
    for index, piece in llm.stream_many(PROMPTS, max_tokens=16, stop=["\n"]):
        many[index] = many.get(index, "") + (piece or "")
    assert [many[i] for i in range(len(PROMPTS))] == alone


def test_concurrent_callers_are_decoded_in_the_same_forward_passes(inline, monkeypatch):
    widths = []
    decode = inline._engine.decode

    def recording(entries):
        widths.append(sum(1 for *_, wants in entries if wants))
        return decode(entries)

    monkeypatch.setattr(inline._engine, "decode", recording)
    each_in_a_thread(4, lambda i: write(inline, PROMPTS[i], max_tokens=12))
    assert max(widths) == 4, "the four were written in the same passes"
    assert len(widths) < 2 * 12, "about one pass per token for all four, not one per caller"


def test_a_sequence_reads_the_same_logits_whoever_shares_its_passes(inline):
    """No attention across sequences: another sequence's cells change the logits by rounding only."""
    import llama_cpp

    engine = inline._engine
    tokens = inline._prompt_tokens(PROMPTS[0])
    other = inline._prompt_tokens("一个完全不同的提示，讲的是大海和鲸鱼。" * 3)

    def last_logits(entries):
        with inline.hold():
            for seq in (1, 2):
                engine.free(seq)
            engine.decode(entries)
            row = max(j for j, (seq, *_) in enumerate(entries) if seq == 1)
            logits = llama_cpp.llama_get_logits_ith(inline._llama._ctx.ctx, row)
            out = np.ctypeslib.as_array(logits, shape=(engine.n_vocab,)).copy()
            for seq in (1, 2):
                engine.free(seq)
            return out

    mine = [(1, p, t, p == len(tokens) - 1) for p, t in enumerate(tokens)]
    alone = last_logits(mine)
    shared = last_logits([(2, p, t, p == len(other) - 1) for p, t in enumerate(other)] + mine)
    assert shared.argmax() == alone.argmax()
    assert np.abs(shared - alone).max() < 1.5, "another prompt leaked into this one's attention"
    assert np.corrcoef(shared, alone)[0, 1] > 0.999


def test_calls_that_take_the_model_whole_wait_for_the_streams_and_leave_them_intact(inline):
    expected = inline.label_logprobs(QUESTION, ["A", "B"])
    alone = [write(inline, p) for p in PROMPTS[:3]]
    results = each_in_a_thread(6, lambda i: write(inline, PROMPTS[i % 3]) if i < 3 else inline.label_logprobs(QUESTION, ["A", "B"]))
    assert results[:3] == alone
    assert all(r == pytest.approx(expected, abs=1e-3) for r in results[3:])


def test_a_stream_closed_early_frees_its_sequence_at_once(inline):
    pieces = inline.stream(PROMPTS[0] + " apple", max_tokens=200, stop=[])
    next(pieces)
    pieces.close()
    deadline = time.monotonic() + 2
    while inline.scheduler._batch.live and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not inline.scheduler._batch.live


@pytest.mark.parametrize("where", ["inline", "process"])
def test_a_turn_reserves_model_time_within_its_budget(where, inline, supervised):
    llm = inline if where == "inline" else supervised
    assert llm.batches_across_calls
    started = time.monotonic()
    with llm.reserve(30.0, sequences=5) as view:
        assert view is not None and view.granted == 5
        assert view.deadline is None, "a lone turn on an idle model is not cut short at its budget"
        assert write(view, PROMPTS[1]) == " " + LINES[1]
        many = {i: "" for i in range(2)}
        for index, piece in view.stream_many(PROMPTS[:2], max_tokens=16, stop=["\n"]):
            many[index] += piece or ""
        assert many == {0: " " + LINES[0], 1: " " + LINES[1]}
        with llm.reserve(0.001, sequences=5) as other:
            assert other is None, "with another turn's reservation held, nothing is written in a millisecond"
    with llm.reserve(0.001, sequences=5, least=2) as idle:
        assert idle is not None and idle.granted == 5, "an idle model grants a lone turn all it asks"
    with llm.reserve(30.0, sequences=5, peers=1) as shared:
        assert shared is not None and shared.deadline > started + 29, "a turn that shares the model ends with its budget"


def test_a_call_with_no_sequence_by_its_reservations_deadline_is_busy(inline):
    from assistant.llm.base import ReservedLLM

    holding, release = threading.Event(), threading.Event()

    def hold_the_model():
        with inline.hold():  # nothing is admitted meanwhile
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_model)
    holder.start()
    holding.wait(10)
    reservation = inline.scheduler.reserve(1000.0, 1)
    try:
        reservation.deadline = time.monotonic() + 0.2
        started = time.monotonic()
        with pytest.raises(ModelBusy, match="no room"):
            write(ReservedLLM(inline, reservation, 1, reservation.deadline), PROMPTS[0])
        assert time.monotonic() - started < 1
        assert not inline.scheduler._waiting, "the busy call left the queue"
    finally:
        inline.scheduler.release(reservation)
        release.set()
        holder.join(10)
    assert write(inline, PROMPTS[2]) == " " + LINES[2]


@pytest.mark.parametrize("where", ["inline", "process"])
def test_a_generation_held_to_given_words_writes_only_those(where, inline, supervised):
    llm = inline if where == "inline" else supervised
    assert llm.writes_given_words
    # Asked to repeat "apple banana cherry grape lemon" but held to three of its words, and with
    # a second prompt in the same passes left free.
    many: dict[int, str] = {}
    for index, piece in llm.stream_many(PROMPTS[:2], max_tokens=16, stop=["\n"], words=["cherry banana apple", None]):
        many[index] = many.get(index, "") + (piece or "")
    written = many[0].split()
    assert written and set(written) <= {"apple", "banana", "cherry"}, many[0]
    assert many[1] == " " + LINES[1], "the free prompt beside it writes what it writes alone"
