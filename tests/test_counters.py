"""Counters that follow the log (retrieval/live.py) as a specification: after folding new events
they equal a full fit on the same events; another process sees them within its poll; deleting a
user leaves none of their events counted."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.engine import Engine
from assistant.settings import Settings
from retrieval.candidates import Retriever
from retrieval.fitting import fit_signals
from retrieval.live import LiveCounters
from retrieval.records import Event, Item
from retrieval.request import Request
from retrieval.store import Store
from test_postgres import postgres_server, postgres_url  # noqa: F401 - fixtures (pytest puts tests/ on sys.path)

TYPES = ("view", "click", "like", "dislike", "rate", "purchase", "search", "not_interested")


def _events(rng, n: int, users: int, items: int, start: float, span: float) -> list[Event]:
    out = []
    for k in range(n):
        kind = TYPES[rng.integers(len(TYPES))]
        item = None if kind == "search" else f"i{rng.integers(items)}"
        value = float(rng.integers(1, 6)) if kind == "rate" else None
        out.append(Event(f"u{rng.integers(users)}", kind, start + float(rng.random()) * span, item, value, f"t{k}"))
    return out


def _co_counts(events: list[Event]) -> dict[tuple[str, str], int]:
    """How many users had both items (positive events), every ordered pair of distinct items."""
    had: dict[str, set[str]] = {}
    for e in events:
        if e.item_id and e.weight > 0:
            had.setdefault(e.user_id, set()).add(e.item_id)
    out: dict[tuple[str, str], int] = {}
    for items in had.values():
        for a in items:
            for b in items:
                if a != b:
                    out[(a, b)] = out.get((a, b), 0) + 1
    return out


def _live_pairs(live: LiveCounters) -> dict[tuple[str, str], int]:
    if live.pairs is None:
        return {}
    matrix = live.pairs.tocoo()
    return {(live.ids[r], live.ids[c]): int(v) for r, c, v in zip(matrix.row, matrix.col, matrix.data) if v}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store.open(url)
    store.upsert_items([Item(f"i{k}", f"Item {k}", popularity=(k % 7) / 7) for k in range(40)])
    yield store
    store.close()


@pytest.mark.parametrize("polls, late_items", [(1, False), (4, False), (3, True)], ids=["one poll", "four polls", "new catalog items"])
def test_counters_after_new_events_equal_a_full_fit(store, polls, late_items):
    rng = np.random.default_rng(polls)
    before = _events(rng, 600, 30, 40, 1_700_000_000.0, 30 * 86400)
    store.add_events(before)
    retriever = Retriever(store, None, None)
    live = LiveCounters(store).attach(retriever)
    retriever.refit()
    if late_items:
        store.upsert_items([Item(f"n{k}", f"New {k}", popularity=0.9) for k in range(5)])
    after = _events(rng, 400, 40, 40, 1_700_000_000.0 + 20 * 86400, 20 * 86400)  # overlapping and newer times
    if late_items:
        after += [Event(f"u{k}", "like", 1_700_000_000.0 + 45 * 86400, f"n{k % 5}") for k in range(12)]
    for chunk in np.array_split(np.arange(len(after)), polls):
        store.add_events([after[k] for k in chunk])
        assert live.poll() == len(chunk)

    full = fit_signals(store)
    expected = full.popularity_scores()
    assert set(expected) <= set(retriever._popularity)
    assert [retriever._popularity[i] for i in expected] == pytest.approx(list(expected.values()), rel=1e-12, abs=1e-12)
    assert retriever.behaviour_confidence == pytest.approx(full.confidence, rel=1e-12)
    ids, _, _, trending = retriever.comention._state
    served = dict(zip(ids, trending.tolist()))
    assert [served.get(i, 0.0) for i in full.item_ids] == pytest.approx(full.trending.tolist(), rel=1e-5, abs=1e-7)
    grown = {key: n - _co_counts(before).get(key, 0) for key, n in _co_counts(before + after).items()}
    assert _live_pairs(live) == {key: n for key, n in grown.items() if n}
    assert full.manifest["tail"]["key"] == live.key


def test_a_fit_counts_only_the_events_up_to_its_mark(store):
    store.add_events(_events(np.random.default_rng(0), 50, 5, 40, 1_700_000_000.0, 86400))
    retriever = Retriever(store, None, None)
    live = LiveCounters(store).attach(retriever)
    signals = retriever.refit()
    assert signals.manifest["tail"]["key"] == live.key and signals.manifest["events"] == 50
    assert live.poll() == 0


def test_signals_without_counts_leave_the_counters_waiting_for_the_next_fit(store):
    store.add_events(_events(np.random.default_rng(0), 50, 5, 40, 1_700_000_000.0, 86400))
    retriever = Retriever(store, None, None)
    live = LiveCounters(store).attach(retriever)
    signals = fit_signals(store)
    signals.counters = {}  # published by an older recassist
    retriever.adopt(signals)
    store.add_events([Event("x", "like", 1_800_000_000.0, "i1")])
    assert live.poll() == 0 and live.key is None


def _settings(data_dir, **extra):
    return Settings.load(env={}, data_dir=data_dir, llm_backend="none", embedding_backend="hash", **extra)


@pytest.fixture
def two_workers(tmp_path):
    """Two engines (as two API workers) on one data dir; the second polls every 0.2 s."""
    first = Engine(_settings(tmp_path / "data"), demo="en")
    first.load_demo(progress=False)
    second = Engine(_settings(tmp_path / "data", live_poll_s=0.2), demo="en")
    first.retriever, second.retriever
    yield first, second
    first.close()
    second.close()


def _crowd(item_id: str, n: int = 40) -> list[dict]:
    return [{"user_id": f"crowd-{k}", "item_id": item_id, "type": "like", "timestamp": 1_900_000_000 + k} for k in range(n)]


def test_another_worker_sees_new_events_within_its_poll(two_workers):
    import time

    first, second = two_workers
    item = second.retriever.popular(20)[-1][0]  # the 20th most popular item
    before = second.retriever._popularity[item]
    first.add_events(_crowd(item))
    # The worker that wrote them counts them at once: more popular, and the most trending item.
    assert first.retriever._popularity[item] > before and list(first.retriever.comention.trending(1)) == [item]
    assert second.retriever._popularity[item] == before  # the other one: not before its poll
    time.sleep(0.25)
    found = second.retriever.candidates("someone-new", Request(), k=5)
    assert second.retriever._popularity[item] == pytest.approx(first.retriever._popularity[item])
    assert list(second.retriever.comention.trending(1)) == [item]
    assert item in [c.item.id for c in found]  # a newcomer is shown what is trending


def test_deleting_a_user_removes_their_counts_everywhere(two_workers):
    first, second = two_workers
    item = first.retriever.popular(1000)[-1][0]
    before = first.retriever._popularity[item]
    rows = [{"user_id": "spammer", "item_id": item, "type": t, "timestamp": 1_900_000_000 + k}
            for k, t in enumerate(("like", "purchase", "click", "view"))]
    first.add_events(rows)
    second.retriever.live.poll()
    assert first.retriever._popularity[item] > before and second.retriever._popularity[item] > before
    first.agent.delete_user("spammer")
    assert first.retriever._popularity[item] == pytest.approx(before)
    assert first.retriever.live.poll() == 0  # the tail finds nothing to add back
    second.reload_signals()  # what Refresher.watch does every 30 s
    second.retriever.live.poll()
    assert second.retriever._popularity[item] == pytest.approx(before)


def test_a_postgresql_log_from_before_the_tail_gets_its_key_and_is_tailed(postgres_url):
    import psycopg

    with Store.open(postgres_url) as store:
        store.add_events([Event("u1", "like", 1.0, "i1"), Event("u2", "like", 2.0, "i1")])
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as an older recassist left it
        conn.execute("ALTER TABLE events DROP COLUMN seq")
    with Store.open(postgres_url) as store:
        store.upsert_items([Item("i1", "One"), Item("i2", "Two")])
        with store.database.read() as db:
            assert sorted(row[0] for row in db.all("SELECT seq FROM events")) == [1, 2]  # the stored rows numbered
        retriever = Retriever(store, None, None)
        live = LiveCounters(store).attach(retriever)
        retriever.refit()
        store.add_events([Event("u3", "like", 3.0, "i2")])
        assert live.poll() == 1
        assert retriever._popularity == pytest.approx(fit_signals(store).popularity_scores())


def test_a_backlog_too_large_to_fold_waits_for_the_next_fit(store, monkeypatch):
    import retrieval.live

    retriever = Retriever(store, None, None)
    live = LiveCounters(store).attach(retriever)
    retriever.refit()
    monkeypatch.setattr(retrieval.live, "MAX_BACKLOG", 3)
    store.add_events([Event(f"bulk{k}", "like", 1_900_000_000.0 + k, "i1") for k in range(5)])
    before = dict(retriever._popularity)
    assert live.poll() == 0 and live.key is None and retriever._popularity == before
    retriever.refit()  # the fit after the bulk load counts them, and the tail starts again from it
    store.add_events([Event("late", "like", 1_900_000_100.0, "i2")])
    assert live.poll() == 1


def test_items_read_together_since_the_fit_become_neighbours(store):
    store.add_events([Event(f"u{k}", "like", 1_700_000_000.0 + k, f"i{k % 3}") for k in range(30)])
    retriever = Retriever(store, None, None)
    live = LiveCounters(store).attach(retriever)
    retriever.refit()
    assert "fresh" not in retriever.comention.scores(["i1"])
    store.upsert_items([Item("fresh", "Breaking story")])
    store.add_events([Event(f"reader{k}", t, 1_800_000_000.0 + k, i)
                      for k in range(3) for t, i in (("like", "i1"), ("view", "fresh"))])
    live.poll()
    scores = retriever.comention.scores(["i1"])
    assert scores["fresh"] > 0  # three readers had both, all since the fit
    assert live.pairs[live.index["i1"], live.index["fresh"]] == 3


def test_what_is_said_in_chat_counts_but_never_trends(store):
    rng = np.random.default_rng(5)
    store.add_events(_events(rng, 300, 20, 40, 1_700_000_000.0, 30 * 86400))
    retriever = Retriever(store, None, None)
    live = LiveCounters(store).attach(retriever)
    retriever.refit()
    trending, likes = live.trending.copy(), live.likes.copy()
    # Five people tell the assistant, years later, that they loved item 3.
    store.add_events([Event(f"c{k}", "like", 1_900_000_000.0, "i3", text=f"chat s{k}") for k in range(5)])
    assert live.poll() == 5
    assert live.likes[live.index["i3"]] == likes[live.index["i3"]] + 5  # popularity hears them
    assert live.trending.tolist() == trending.tolist()  # trending does not: nothing was watched now
    full = fit_signals(store)  # and the next fit agrees
    served = dict(zip(live.ids, live.trending.tolist()))
    assert [served.get(i, 0.0) for i in full.item_ids] == pytest.approx(full.trending.tolist(), rel=1e-5, abs=1e-7)
