"""Reason hooks written ahead in the model's idle time, and remembered texts shared through a file."""

from __future__ import annotations

import threading

import pytest

from assistant.events import NoticeEvent, ReasonEvent
from assistant.explain import item_about, item_only, nothing_to_sum_up
from assistant.llm.fake import FakeLLM
from assistant.llm.memo import Remembered
from assistant.prewrite import HookWriter, _writer_lock
from prompts import Prompts
from test_postgres import postgres_server, postgres_url  # noqa: F401 - fixtures, skipped without PostgreSQL

from test_agent import run


def _about_line(prompt: str) -> str:
    """What a greedy hook model would write: the last About line's first words (so each item differs)."""
    about = [line for line in str(prompt).splitlines() if line.startswith("About:")][-1]
    return " ".join(about.removeprefix("About:").split()[:6]).rstrip(".,;")


def _greedy_batching(**kw) -> FakeLLM:
    llm = FakeLLM(one_call_at_a_time=True, batches_across_calls=True, supports_batch=True, greedy_repeats=True, **kw)
    llm.default = _about_line  # a callable default: every prompt gets its own hook
    return llm


def _hook_prompts(llm: FakeLLM) -> list[str]:
    return [str(p) for p in llm.prompts if str(p).rstrip().endswith("Hook:")]


def _writer(engine, **kw) -> HookWriter:
    return HookWriter(engine.agent, lambda: engine.retriever, items=kw.pop("items", 50), idle_s=kw.pop("idle_s", 0.0), **kw)


# The remembered texts, in the store -------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'recassist.db'}"
    return request.getfixturevalue("postgres_url")


def _memory_store(url):
    from assistant.memory_store import MemoryStore
    from retrieval.sql import Database

    return MemoryStore(Database(url))


def test_remembered_texts_outlive_the_process_and_are_shared_by_every_worker(database_url):
    llm = FakeLLM(greedy_repeats=True)
    stores = [_memory_store(database_url), _memory_store(database_url)]  # two workers, one database
    one, other = Remembered(store=stores[0]), Remembered(store=stores[1])
    one.bind(llm).put("About: a whale\nHook:", 32, ["\n"], "a captain hunts a whale")
    assert other.bind(llm).get("About: a whale\nHook:", 32, ["\n"]) == "a captain hunts a whale"
    assert other.bind(llm).get("About: a whale\nHook:", 16, ["\n"]) is None, "other limits, another generation"
    assert other.bind(FakeLLM(model="another", greedy_repeats=True)).get("About: a whale\nHook:", 32, ["\n"]) is None
    for store in stores:
        store.database.close()
    restarted = Remembered(store=_memory_store(database_url))
    assert restarted.bind(llm).has("About: a whale\nHook:", 32, ["\n"])
    assert restarted.stats()["hits"] == 0 and restarted.stats()["stored"] == 1, "has() counts no hit"


def test_the_store_keeps_the_newest_texts_within_its_bound(tmp_path, monkeypatch):
    from assistant.llm import memo

    monkeypatch.setattr(memo, "PRUNE_EVERY", 5)
    store = _memory_store(f"sqlite:///{tmp_path / 'r.db'}")
    memory = Remembered(limit=1, store=store)
    view = memory.bind(FakeLLM(greedy_repeats=True))
    for n in range(20):
        view.put(f"p{n}", 8, ["\n"], f"t{n}")
    assert store.remembered_count() <= memo.KEPT_PER_LIMIT + memo.PRUNE_EVERY and view.get("p19", 8, ["\n"]) == "t19"
    assert view.get("p0", 8, ["\n"]) is None, "the oldest went"


def test_a_store_that_fails_leaves_the_texts_in_memory_and_says_so_once(tmp_path, caplog):
    store = _memory_store(f"sqlite:///{tmp_path / 'r.db'}")
    store.database.close()  # gone: every read and write fails
    memory = Remembered(store=store)
    view = memory.bind(FakeLLM(greedy_repeats=True))
    view.put("p", 8, ["\n"], "text")
    assert view.get("p", 8, ["\n"]) == "text" and view.get("q", 8, ["\n"]) is None
    assert caplog.text.count("kept in memory") == 1


def test_only_prompts_about_the_item_alone_are_written_ahead():
    assert item_only(Prompts(style="completion").get("reason")), "the embedded model's hook template"
    assert not item_only(Prompts(style="chat").get("reason")), "a chat model's reason is about the user too"


# Writing ahead ------------------------------------------------------------------------------------


def test_hooks_written_ahead_serve_the_next_turn_without_asking_the_model(make_engine):
    llm = _greedy_batching()
    engine = make_engine(llm=llm, rank_blend=0.0, llm_summary=False)
    writer = _writer(engine, items=engine.store.item_count())  # the whole demo catalog
    pending = writer.pending()
    assert pending and all(p.rstrip().endswith("Hook:") for p in pending)
    assert writer.write_some() == len(pending) and writer.pending() == []
    assert {call["kind"] for call in llm.calls} == {"stream_many"} and all(call["n"] <= 2 for call in llm.calls)
    asked = len(llm.prompts)
    events, cards, _ = run(engine, "ben", "recommend me something")
    assert cards and len(llm.prompts) == asked, "the turn found every hook written"
    reasons = {e.item_id: e for e in events if isinstance(e, ReasonEvent)}
    written = [c for c in cards if reasons[c.item_id].source == "llm"]
    assert written, "model-written reasons without a model call"
    for card in written:
        about = " ".join(engine.store.get_item(card.item_id).text.split()[:3])
        assert card.reason.lower().startswith(about.lower()[:10])


def test_hooks_written_ahead_are_held_to_each_items_words_like_a_turns(make_engine):
    llm = _greedy_batching()
    llm.writes_given_words = True  # plays the local llama.cpp model (llm/words.py)
    engine = make_engine(llm=llm, rank_blend=0.0, llm_summary=False)
    writer = _writer(engine, items=4)
    assert writer.write_some() > 0
    prompts, held = iter(llm.prompts), []
    for call in llm.calls:  # stream_many calls only: their prompts, in order
        batch = [str(next(prompts)) for _ in range(call["n"])]
        held += zip(batch, call["words"] or [None] * len(batch))
    assert held and all(words for _, words in held)
    for prompt, words in held:
        assert _about_line(prompt).split()[0] in words.split(), "each prompt's own About line, not another's"


def test_the_next_start_and_the_other_workers_find_what_was_written(make_engine, tmp_path):
    data = tmp_path / "shared"
    llm = _greedy_batching()
    first = make_engine(llm=llm, rank_blend=0.0, llm_summary=False, data_dir=data)
    written = _writer(first, items=first.store.item_count()).write_some()
    assert written > 0
    second_llm = _greedy_batching()
    second = make_engine(llm=second_llm, rank_blend=0.0, llm_summary=False, data_dir=data, demo=False)
    assert _writer(second).pending() == [], "another worker of the data dir has nothing left to write"
    _, cards, _ = run(second, "ben", "recommend me something")
    assert cards and _hook_prompts(second_llm) == []


def test_the_writer_waits_while_a_turn_is_on_its_way_and_stops_its_call_when_one_comes(make_engine):
    llm = _greedy_batching()
    engine = make_engine(llm=llm, rank_blend=0.0, llm_summary=False)
    gate = engine.agent._gate
    with gate.coming():  # a turn is understanding or retrieving
        assert _writer(engine).write_some() == 0 and llm.prompts == []
    assert _writer(engine, idle_s=60.0).write_some() == 0, "a turn ended just now: not idle long enough"

    turn = gate.coming()
    writer = _writer(engine)

    def comes_mid_call(prompt):
        if not turn_started.is_set():
            turn.__enter__()  # a turn arrives while the first hook of the call is being written
            turn_started.set()
        return "a long phrase about this item"

    turn_started = threading.Event()
    llm.default = comes_mid_call
    assert writer.write_some() == 0, "the call stopped at the next piece; nothing half-written is kept"
    assert len(llm.prompts) == 2 and writer.pending()[:2] == [str(p) for p in llm.prompts]
    turn.__exit__(None, None, None)


def test_a_model_that_is_not_remembered_or_a_user_dependent_template_writes_nothing_ahead(make_engine):
    engine = make_engine(llm=FakeLLM(supports_batch=True), rank_blend=0.0)  # may sample: never remembered
    assert engine.agent.write_ahead_setup() is None and engine.write_ahead() is None
    chat = make_engine(llm=_greedy_batching(prompt_style="chat"), rank_blend=0.0)
    assert chat.agent.write_ahead_setup() is None
    off = make_engine(llm=_greedy_batching(), rank_blend=0.0, llm_write_ahead=0)
    assert off.write_ahead() is None


def test_one_process_of_a_data_dir_writes(tmp_path):
    lock = tmp_path / ".write-ahead.lock"
    with _writer_lock(lock) as mine, _writer_lock(lock) as theirs:
        assert mine and not theirs
    with _writer_lock(lock) as again:
        assert again, "free once the writer stops"


def test_the_background_writer_fills_in_idle_time_and_stops(make_engine):
    llm = _greedy_batching()
    engine = make_engine(llm=llm, rank_blend=0.0, llm_summary=False)
    writer = engine.write_ahead()
    assert writer is not None
    deadline = threading.Event()
    for _ in range(1200):  # at most a minute on a loaded machine; a few tenths here
        if writer.written and not writer.pending():
            break
        deadline.wait(0.05)
    assert writer.written > 0 and writer.pending() == []
    engine.close()
    assert writer._stop.is_set()
    assert not writer._thread.is_alive(), "closing the engine waits for the writer before the store closes"


def test_stopping_the_writer_waits_for_its_work_so_a_closed_store_is_not_read(make_engine, caplog, monkeypatch):
    # Work in flight when `serve` stops: the writer is told to stop, finishes what it was doing (here
    # a look in the store for a hook already written, as `pending` makes for each item), and only
    # then may the store close.
    entered = threading.Event()

    def in_flight(self, n=None):
        entered.set()
        self._stop.wait(10)
        threading.Event().wait(0.2)
        _llm, _template, remembered = self.agent.write_ahead_setup()
        return int(remembered.has("About: a prompt\nHook:", 8, ["\n"]))

    monkeypatch.setattr(HookWriter, "write_some", in_flight)
    engine = make_engine(llm=_greedy_batching(), rank_blend=0.0, llm_summary=False)
    writer = engine.write_ahead()
    assert entered.wait(30), "the writer began its work (once the model had been idle long enough)"
    with caplog.at_level("WARNING", logger="assistant.llm.memo"):
        engine.close()
        threading.Event().wait(0.5)  # what a writer left running would do after the store closed
    assert not writer._thread.is_alive()
    assert "could not be read or stored" not in caplog.text


@pytest.mark.parametrize("busy", [True, False])
def test_a_busy_model_turn_still_shows_hooks_written_ahead(make_engine, busy):
    llm = _greedy_batching()
    engine = make_engine(llm=llm, rank_blend=0.0, llm_summary=False)
    if not busy:
        _writer(engine).write_some()
    llm.grant = 0  # the model turns every turn away
    events, cards, _ = run(engine, "ben", "recommend me something")
    sources = [e.source for e in events if isinstance(e, ReasonEvent)]
    assert any(isinstance(e, NoticeEvent) and "Many requests at once" in e.text for e in events)
    assert ("llm" in sources) is (not busy)


def test_info_says_what_is_remembered_and_written_ahead(make_engine):
    llm = _greedy_batching()
    engine = make_engine(llm=llm, rank_blend=0.0, llm_summary=False)
    writer = engine.write_ahead()
    for _ in range(1200):
        if writer.written and not writer.pending():
            break
        threading.Event().wait(0.05)
    run(engine, "ben", "recommend me something")
    text = engine.info()["llm_reasons_remembered"]
    assert text.startswith(f"{writer.written} kept in the store")
    assert f"{writer.written} written ahead here" in text and " 0 served" not in text
    assert make_engine(llm_backend="none").info()["llm_reasons_remembered"] is None


def test_cards_a_busy_model_left_without_its_words_are_written_first(make_engine):
    llm = _greedy_batching()
    engine = make_engine(llm=llm, rank_blend=0.0, llm_summary=False)
    llm.grant = 0  # busy: the turn shows evidence reasons
    _, cards, _ = run(engine, "ben", "ghost stories for a winter night")
    assert cards and all(c.reason_source == "evidence" for c in cards)
    shown = [c.item_id for c in cards if not nothing_to_sum_up(engine.store.get_item(c.item_id))]
    writer = _writer(engine, items=1)  # the single most popular item besides
    written = [p for p in writer.pending()]
    assert len(written) == len(shown) + (0 if _popular_one(engine) in shown else 1)
    assert writer.write_some() == len(written)
    llm.grant = None
    asked = len(llm.prompts)
    _, again, _ = run(engine, "ben", "ghost stories for a winter night")
    same = [c for c in again if c.item_id in shown]
    asked_now = [str(p) for p in llm.prompts[asked:]]
    assert same and any(c.reason_source == "llm" for c in same)
    for card in same:  # written ahead: the turn did not ask for them again
        about = item_about(engine.store.get_item(card.item_id))
        assert not any(f"About: {about}\n" in p for p in asked_now)


def _popular_one(engine) -> str:
    return engine.retriever.popular(1)[0][0]


def test_a_reason_prompt_with_the_users_words_is_remembered_in_memory_but_never_stored(make_engine, tmp_path):
    from assistant.explain import llm_reasons

    engine = make_engine(llm_backend="none")
    candidate = engine.retriever.candidates("ben", _request("sea"), k=1)[0]
    for style, on_disk in (("completion", 1), ("chat", 0)):
        store = _memory_store(f"sqlite:///{tmp_path / style}.db")
        looked_up = []
        read = store.remembered_text
        store.remembered_text = lambda key: looked_up.append(key) or read(key)
        memory = Remembered(store=store)
        llm = FakeLLM(default="a captain and the sea", greedy_repeats=True, prompt_style=style)
        list(llm_reasons(llm, Prompts(style=style), [candidate], "a sea story, please", "en", remembered=memory.bind(llm)))
        assert len(memory) == 1, "remembered in this process either way"
        assert store.remembered_count() == on_disk, f"{style}: the chat reason prompt holds the user's request"
        assert len(looked_up) == on_disk, f"{style}: the store is asked only for what it may hold"


def _request(text):
    from retrieval.request import Request

    return Request(query=text)


def test_the_write_ahead_command_says_when_the_model_has_nothing_to_write_ahead(cli_env, capsys):
    from server.cli import main

    assert main(["write-ahead"]) != 0  # RECASSIST_LLM_BACKEND=none
    err = capsys.readouterr().err
    assert "no reasons to write ahead" in err and "RECASSIST_LLM_BACKEND=llama" in err


@pytest.mark.integration
def test_the_write_ahead_command_has_the_embedded_model_write_hooks_every_worker_then_finds(tmp_path, embedded_model_path):
    import os
    import subprocess
    import sys

    from assistant.engine import Engine
    from assistant.settings import Settings

    env = {**os.environ, "RECASSIST_DATA_DIR": str(tmp_path / "data"), "RECASSIST_EMBEDDING_BACKEND": "hash",
           "RECASSIST_LLM_BACKEND": "llama", "RECASSIST_LLM_MODEL_PATH": str(embedded_model_path)}
    settings = Settings.load(env={k: v for k, v in env.items() if k.startswith("RECASSIST_")})
    loader = Engine(settings)
    loader.load_demo(progress=False)
    loader.close()
    command = [sys.executable, "-m", "server.cli", "write-ahead", "--items", "6"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "Writing the reason hooks of 6 of the 6 most popular items ahead" in first.stderr
    assert "wrote 6 hooks in" in first.stdout and "6 kept in the store" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert "of 0 of the 6" in again.stderr and "wrote 0 hooks" in again.stdout, "a re-run writes nothing twice"
    engine = Engine(settings)  # a worker starting on the data dir
    try:
        assert HookWriter(engine.agent, lambda: engine.retriever, items=6).pending() == [], "it starts with them"
    finally:
        engine.close()
