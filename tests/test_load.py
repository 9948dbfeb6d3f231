"""Load: the load script's checks and figures, the model shared by whole turns, and a real server under load."""

from __future__ import annotations

import json
import threading
import time

import pytest

from assistant.agent import MODEL_BUSY
from assistant.events import collect
from assistant.llm.fake import FakeLLM
from evaluation.load import (
    Sample,
    check_chat_json,
    check_chat_sse,
    failures,
    report_markdown,
    run_load,
    summarize,
)
from tests.servers import running_server


def test_figures_of_nothing_are_none_not_zero():
    figures = summarize(1, 1, [Sample("chat", 1.0, 200)], wall_s=1.0)
    assert figures["first_event_p50_ms"] is None and figures["events_p50_ms"] is None
    assert figures["chat_p50_ms"] == 1000.0


def test_summary_and_report_from_known_samples():
    samples = [
        Sample("chat", 1.0, 200, first_event_s=0.1, model_reasons=5, listed=5),
        Sample("chat", 3.0, 200, first_event_s=0.3, notices=[MODEL_BUSY], listed=5, message="换一批"),
        Sample("chat", 0.5, 200, listed=0),  # "why the first one?": an answer without a list
        Sample("chat", 2.0, 200, problem="empty answer: no items and no text"),
        Sample("chat", 9.0, 503, problem="HTTP 503: busy"),
        Sample("events", 0.01, 200, posted=3, acknowledged=3),
        Sample("events", 0.03, 200, posted=1, acknowledged=1),
    ]
    figures = summarize(2, 3, samples, wall_s=12.0)
    assert figures["turns_done"] == 5 and figures["turns_planned"] == 6
    assert figures["requests"] == 7 and figures["throughput_rps"] == round(7 / 12, 2)
    assert figures["errors"] == 1 and figures["server_errors"] == 1 and figures["malformed"] == 1
    assert figures["chat_p50_ms"] == 2000.0  # of 0.5, 1, 2, 3, 9 s
    assert figures["first_event_p50_ms"] == 200.0
    assert figures["events_p50_ms"] == 20.0
    assert figures["events_posted"] == 4 and figures["events_acknowledged"] == 4
    assert figures["replies_with_notice"] == 1 and figures["notices"] == {MODEL_BUSY: 1}
    assert figures["replies_with_model_reasons"] == 1 and figures["replies_listing_items"] == 2
    assert figures["model_reasons_share"] == 0.5, "of the replies that list items only"
    assert figures["listed_without_model_reasons"] == {"换一批": 1}

    figures.update(peak_rss_mib=512.0, events_stored=3, events_lost=1)
    result = {"run": "r", "levels": [figures, {"sessions": 32, "skipped": "the --max-seconds 5 bound was reached"}]}
    found = failures(result)
    assert any("1 of 4 events were not stored" in f for f in found)
    assert any("1 chat replies were empty or malformed" in f for f in found)
    report = report_markdown(result, {"llm": "fake", "turns": 3, "cpus": 2, "loadavg_before": [0.5]})
    assert "| 2 | 5/6 | 7 | 0.58 | 2000 |" in report
    assert "| 2 | 1 | 1 | 1 | 1 | 2 | 1 | 4 | 3 | 1 | 50% |" in report
    assert "N=32 skipped" in report
    assert "lists without a model-written reason, by message: '换一批' x1" in report


def _sse(*events: tuple[str, dict | str]) -> list[str]:
    lines = []
    for name, data in events:
        lines += [f"event: {name}", "data: " + (data if isinstance(data, str) else json.dumps(data)), ""]
    return lines


CARD = {"item_id": "bk-001", "title": "Pride and Prejudice", "reason": "It shares Romance."}
DONE = ("done", {"type": "done", "session_id": "s"})


def test_model_written_reasons_are_counted():
    written = {"type": "reason", "item_id": "bk-001", "text": "A sharp comedy of manners.", "source": "llm"}
    reply = check_chat_sse(_sse(("cards", {"type": "cards", "cards": [CARD]}), ("reason", written), DONE))
    assert reply.problem is None and reply.model_reasons == 1
    assert check_chat_json({"items": [{**CARD, "reason_source": "evidence"}], "summary": "s"}).model_reasons == 0


@pytest.mark.parametrize(
    "lines, problem",
    [
        (_sse(("cards", {"type": "cards", "cards": [CARD]}), ("message", {"type": "message", "text": "1 pick."}), DONE), None),
        (_sse(("message", {"type": "message", "text": "Hi! Which titles have you loved?"}), DONE), None),
        (_sse(("cards", {"type": "cards", "cards": [CARD]})), "without a done event"),
        (_sse(("cards", {"type": "cards", "cards": [CARD]}), ("error", {"error": {"type": "internal_error"}})), "error event"),
        (_sse(("cards", "{not json"), DONE), "not JSON"),
        (_sse(("cards", {"type": "message", "text": "x"}), DONE), "carries data of type"),
        (_sse(DONE), "empty answer"),
        (_sse(("cards", {"type": "cards", "cards": [{**CARD, "reason": ""}]}), DONE), "has no reason"),
    ],
)
def test_sse_replies_are_checked(lines, problem):
    found = check_chat_sse(lines).problem
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"items": [CARD], "summary": "1 pick."}, None),
        ({"items": [], "summary": "Which one do you mean?"}, None),
        ({"items": [], "summary": "  "}, "empty answer"),
        ({"items": [{"item_id": "bk-001", "reason": "r"}], "summary": "s"}, "lacks an item_id or a title"),
        ({"summary": "s"}, "not a chat response"),
        ([], "not a chat response"),
    ],
)
def test_json_replies_are_checked(body, problem):
    found = check_chat_json(body).problem
    assert (found is None) if problem is None else (problem in found)


def test_only_loopback_servers_are_loaded():
    with pytest.raises(SystemExit, match="only loopback"):
        run_load("http://192.0.2.1:7860", [1], 1)


class OneAtATimeModel(FakeLLM):
    """A slow model that, like llama.cpp, serves one call at a time; it counts overlapping calls."""

    backend = "llama"

    def __init__(self, seconds: float):
        super().__init__(default="A fine pick.", one_call_at_a_time=True)
        self.seconds, self.inside, self.most_inside = seconds, 0, 0
        self._guard = threading.Lock()
        self.turn_owners: list[str] = []

    def _enter(self):
        with self._guard:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.turn_owners.append(threading.current_thread().name)
        time.sleep(self.seconds)
        with self._guard:
            self.inside -= 1

    def stream(self, prompt, **kwargs):
        self._enter()
        yield from super().stream(prompt, **kwargs)

    def label_logprobs(self, prompt, labels):
        self._enter()
        return super().label_logprobs(prompt, labels)


def test_concurrent_turns_share_a_one_call_model_by_whole_turns(make_engine):
    """Twelve turns at once: each answers with cards and reasons; the model serves whole turns one
    after another; turns that could not get it in time say so instead of failing or waiting long."""
    model = OneAtATimeModel(seconds=0.3)
    engine = make_engine(llm=model, llm_timeout_s=1.0)
    engine.retriever  # built once before the threads start, as the server does at startup
    states, spent = {}, {}

    def turn(i: int) -> None:
        start = time.monotonic()
        states[i] = collect(engine.agent.respond(f"load-user-{i}", "a witty romance"))
        spent[i] = time.monotonic() - start

    threads = [threading.Thread(target=turn, args=(i,), name=f"turn-{i}") for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(states) == 12
    assert all(s.cards and all(s.reasons.get(c.item_id) for c in s.cards) and s.text for s in states.values())
    assert model.most_inside == 1
    # Whole turns: the calls of one turn (rank, reasons, summary) are not interleaved with another's.
    runs = [name for j, name in enumerate(model.turn_owners) if j == 0 or model.turn_owners[j - 1] != name]
    assert len(runs) == len(set(runs))
    busy = [i for i, s in states.items() if MODEL_BUSY in s.notices]
    served = set(model.turn_owners)
    assert busy and len(served) + len(busy) == 12
    assert all(f"turn-{i}" not in served for i in busy)
    # A generous bound: nobody queued behind every other turn (12 turns x 8 calls x 0.3 s).
    assert max(spent.values()) < 20


@pytest.mark.integration
def test_load_on_a_real_server_loses_nothing(tmp_path):
    """`recassist serve` on loopback, four sessions at once: every event stored, every reply well formed."""
    data_dir = tmp_path / "data"
    with running_server(data_dir) as url:
        result = run_load(url, [4], 2, max_seconds=120, timeout_s=60, db_path=data_dir / "recassist.db")
    (level,) = result["levels"]
    assert level["turns_done"] == 8 and level["requests"] == 16
    assert level["errors"] == 0 and level["server_errors"] == 0 and level["malformed"] == 0, level["examples"]
    assert level["events_posted"] > 8
    assert level["events_stored"] == level["events_posted"] == level["events_acknowledged"]
    assert level["first_event_p50_ms"] is not None  # half the sessions streamed
    assert failures(result) == []
