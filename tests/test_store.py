"""The store contract: what every engine (SQLite here, PostgreSQL in test_postgres.py) guarantees."""

from __future__ import annotations

import sqlite3
import sys
import threading

import pytest

from core.errors import StoreError
from retrieval.records import Event, Item
from retrieval.migrations import EVENT_KEY
from retrieval.store import Store

# The events table as recassist made it before the (time, id) key: what an older store holds.
LEGACY_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, item_id TEXT, type TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION, text TEXT
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts, id);
CREATE INDEX IF NOT EXISTS events_item ON events (item_id)
"""


def _item(item_id: str, title: str | None = None, **fields) -> Item:
    return Item(id=item_id, title=title or f"Title {item_id}", **fields)


def _ids(items) -> list[str]:
    return sorted(item.id for item in items)


class StoreContract:
    """Subclasses provide `store_url`; every test here runs against each engine."""

    @pytest.fixture
    def store(self, store_url):
        with Store.open(store_url) as store:
            yield store

    # -- items --------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "before, now, expected",
        [
            pytest.param([], [_item("a"), _item("b")], {"inserted": ["a", "b"]}, id="new-items-inserted"),
            pytest.param([_item("a")], [_item("a")], {"unchanged": ["a"]}, id="same-content-unchanged"),
            pytest.param([_item("a")], [_item("a", "New title")], {"updated": ["a"]}, id="new-title-updated"),
            pytest.param([_item("a", extra={"k": 1})], [_item("a", extra={"k": 2})], {"updated": ["a"]},
                         id="new-extra-updated"),
            pytest.param([_item("a"), _item("b")], [_item("a"), _item("b", tags=["x"]), _item("c")],
                         {"inserted": ["c"], "updated": ["b"], "unchanged": ["a"]}, id="mixed"),
            pytest.param([], [_item("a", "first"), _item("a", "second")], {"inserted": ["a"]},
                         id="repeated-id-last-wins"),
        ],
    )
    def test_upsert_reports_what_changed(self, store, before, now, expected):
        store.upsert_items(before)
        result = store.upsert_items(now)
        for kind in ("inserted", "updated", "unchanged"):
            assert sorted(getattr(result, kind)) == expected.get(kind, []), kind
        for item in now:
            assert store.get_item(item.id) == {i.id: i for i in now}[item.id]

    def test_item_round_trip_keeps_every_field(self, store):
        item = Item(
            id="m-1", title="Amélie 🎬", text="A shy waitress…", categories=["Comedy", "Romance"],
            tags=["paris"], year=2001, creator="Jean-Pierre Jeunet", popularity=12.5,
            extra={"lang": "fr", "runtime": 122, "rating": 8.3, "adult": False},
        )
        store.upsert_items([item])
        assert store.get_item("m-1") == item
        assert store.get_items(["m-1", "nope"]) == {"m-1": item}
        assert store.get_item("nope") is None
        assert store.item_ids() == {"m-1"} and store.item_count() == 1

    def test_iter_items_crosses_page_boundaries(self, store):
        items = [_item(f"i{n:05d}") for n in range(1203)]
        store.upsert_items(items)
        assert [item.id for item in store.iter_items()] == [item.id for item in items]
        assert len(store.get_items([item.id for item in items])) == 1203

    def test_embedding_bookkeeping(self, store):
        a, b, c = _item("a"), _item("b"), _item("c")
        store.upsert_items([a, b, c])
        assert _ids(store.items_needing_embedding()) == ["a", "b", "c"]
        store.mark_embedded([a, b])
        assert _ids(store.items_needing_embedding()) == ["c"]
        assert _ids(store.items_needing_embedding(["a", "c", "zzz"])) == ["c"]
        # Re-upserting identical content keeps it embedded; changing it makes it pending again.
        store.upsert_items([a, _item("b", "B changed")])
        assert _ids(store.items_needing_embedding()) == ["b", "c"]

    def test_marking_an_outdated_version_keeps_the_item_pending(self, store):
        old = _item("a", "Old")
        store.upsert_items([old])
        store.upsert_items([_item("a", "New")])  # changed while `old` was being embedded
        store.mark_embedded([old])
        assert _ids(store.items_needing_embedding()) == ["a"]

    # -- events -------------------------------------------------------------------------------

    def test_events_are_idempotent(self, store):
        events = [Event("u1", "rate", 100.0, "a", 4.0), Event("u1", "like", 200.0, "b")]
        assert store.add_events(events) == 2
        assert store.add_events(events) == 0
        # The same event with int timestamp/value is still the same event.
        assert store.add_events([Event("u1", "rate", 100, "a", 4)]) == 0
        assert store.add_events(events + [Event("u2", "view", 50.0, "a")] * 2) == 1
        assert store.event_count() == 3
        stored = store.events_for_user("u1")
        assert {event.id for event in stored} == {event.id for event in events}

    def test_events_for_user_oldest_first_and_limit_keeps_most_recent(self, store):
        store.add_events([Event("u1", "view", float(t), f"i{t}") for t in (30, 10, 20, 40)])
        store.add_events([Event("u2", "view", 15.0, "x")])
        assert [e.timestamp for e in store.events_for_user("u1")] == [10, 20, 30, 40]
        assert [e.timestamp for e in store.events_for_user("u1", limit=2)] == [30, 40]
        assert store.events_for_user("nobody") == []

    def test_iter_events_in_time_order_across_pages(self, store):
        events = [Event(f"u{n % 7}", "view", float(n // 3), f"i{n}") for n in range(2500)]
        store.add_events(list(reversed(events)))
        seen = list(store.iter_events())
        assert len(seen) == 2500 and len({e.id for e in seen}) == 2500
        assert [e.timestamp for e in seen] == sorted(e.timestamp for e in events)

    def test_users(self, store):
        store.add_events([Event("b", "view", 1.0, "i"), Event("a", "view", 2.0, "i"), Event("b", "like", 3.0, "i")])
        assert store.user_ids() == ["a", "b"]
        assert store.user_count() == 2

    @pytest.mark.parametrize(
        "events, expected",
        [
            pytest.param([("view", None), ("like", None), ("like", None)], {"i": 3.0}, id="positive-counts"),
            pytest.param([("dislike", None), ("not_interested", None)], {}, id="negatives-ignored"),
            pytest.param([("rate", 5.0), ("rate", 1.0), ("rate", 4.0)], {"i": 2.0}, id="only-good-ratings"),
            pytest.param([("search", None)], {}, id="searches-are-neutral"),
        ],
    )
    def test_item_popularity_counts_positive_interactions(self, store, events, expected):
        store.add_events([Event(f"u{n}", t, float(n), "i", v) for n, (t, v) in enumerate(events)])
        store.add_events([Event("u", "search", 99.0, None, None, "space films")])
        assert store.item_popularity() == expected

    @pytest.mark.parametrize(
        "item_id, types, deleted, left",
        [
            pytest.param(None, None, 3, [], id="all-of-a-user"),
            pytest.param("a", None, 2, ["b"], id="one-item"),
            pytest.param(None, ["like"], 2, ["a"], id="by-type"),
            pytest.param("a", ["like"], 1, ["a", "b"], id="item-and-type"),
            pytest.param(None, [], 0, ["a", "a", "b"], id="no-types-deletes-nothing"),
        ],
    )
    def test_delete_events(self, store, item_id, types, deleted, left):
        store.add_events([Event("u", "view", 1.0, "a"), Event("u", "like", 2.0, "a"), Event("u", "like", 3.0, "b"),
                          Event("other", "like", 1.0, "a")])
        assert store.delete_events("u", item_id=item_id, types=types) == deleted
        assert sorted(e.item_id for e in store.events_for_user("u")) == left
        assert len(store.events_for_user("other")) == 1

    # -- conversations, profiles, users (the agent's MemoryStore in the same database) ---------

    @pytest.fixture
    def memory(self, store):
        from assistant.memory_store import MemoryStore

        return MemoryStore(store.database)

    def test_messages_in_order_with_payload(self, store, memory):
        memory.append_message("u1", "s1", "user", "something like Alien")
        memory.append_message("u1", "s1", "assistant", "Try these", {"cards": [{"item_id": "a"}]})
        memory.append_message("u1", "s1", "user", "older please")
        messages = memory.get_messages("u1", "s1")
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "something like Alien"), ("assistant", "Try these"), ("user", "older please")]
        assert messages[0]["payload"] is None and messages[1]["payload"] == {"cards": [{"item_id": "a"}]}
        assert messages[0]["created_at"] <= messages[2]["created_at"]

    def test_sessions_belong_to_one_user(self, store, memory):
        memory.append_message("alice", "s1", "user", "alice's secret")
        memory.append_message("bob", "s1", "user", "bob's message")  # same session id, another user
        assert [m["content"] for m in memory.get_messages("alice", "s1")] == ["alice's secret"]
        assert [m["content"] for m in memory.get_messages("bob", "s1")] == ["bob's message"]
        assert memory.get_messages("mallory", "s1") == []
        assert memory.list_sessions("mallory") == []

    def test_list_sessions(self, store, memory):
        for session, turns in (("s1", 2), ("s2", 1)):
            for n in range(turns):
                memory.append_message("u", session, "user", f"question {n}")
                memory.append_message("u", session, "assistant", "answer")
        sessions = memory.list_sessions("u")
        assert [(s["session_id"], s["turns"]) for s in sessions] == [("s2", 1), ("s1", 2)]  # most recent first
        assert sessions[1]["started_at"] <= sessions[1]["last_at"]
        assert sessions[1]["title"] == "question 0"

    def test_profile_round_trip(self, store, memory):
        assert memory.get_profile("u") is None
        profile = {"likes": ["sci-fi"], "era": [1970, 1989], "notes": "prefers subtitles ✓"}
        memory.save_profile("u", profile)
        assert memory.get_profile("u") == profile
        memory.save_profile("u", {"likes": []})
        assert memory.get_profile("u") == {"likes": []}

    def test_delete_user_removes_only_that_user(self, store, memory):
        for user in ("gone", "kept"):
            store.add_events([Event(user, "like", 1.0, "a"), Event(user, "view", 2.0, "b")])
            memory.append_message(user, "s", "user", "hi")
            memory.append_message(user, "s", "assistant", "hello")
            memory.save_profile(user, {"x": 1})
        assert {**store.delete_user("gone"), **memory.delete_user("gone")} == {"events": 2, "messages": 2, "sessions": 1, "profile": 1}
        assert store.events_for_user("gone") == [] and memory.get_profile("gone") is None
        assert memory.list_sessions("gone") == []
        assert len(store.events_for_user("kept")) == 2 and memory.get_profile("kept") == {"x": 1}
        assert {**store.delete_user("gone"), **memory.delete_user("gone")} == {"events": 0, "messages": 0, "sessions": 0, "profile": 0}

    # -- the events layout: keyed by (time, id); an older store upgraded or kept working --------

    def _legacy_store(self, store_url, events: list[Event]) -> None:
        """A store as an older recassist made it: primary key on the event id, three indexes."""
        from retrieval.sql import Database

        database = Database(store_url)
        try:
            database.create(LEGACY_EVENTS)
            with database.write() as db:
                db.executemany("INSERT INTO events (id, user_id, type, ts, item_id, value, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               [(e.id, e.user_id, e.type, e.timestamp, e.item_id, e.value, e.text) for e in events])
        finally:
            database.close()

    def _arrivals(self, store) -> list[tuple]:
        from retrieval.migrations import event_key

        with store.database.read() as db:
            return db.all(f"SELECT {event_key(store.database)}, id FROM events ORDER BY {event_key(store.database)}")

    def test_an_older_small_store_is_upgraded_when_opened(self, store_url):
        old = [Event(f"u{n % 3}", "view", float(n % 5), f"i{n}") for n in range(40)]
        self._legacy_store(store_url, old)
        with Store.open(store_url) as store:
            assert store._event_conflict == EVENT_KEY
            arrivals = self._arrivals(store)
            assert [row[1] for row in arrivals] == [e.id for e in old]  # every row, in arrival order, keys kept
            assert store.add_events(old) == 0  # still stored once
            assert store.add_events([Event("u9", "like", 3.0, "i1")] * 2) == 1
            assert self._arrivals(store)[-1][0] > arrivals[-1][0]  # arrives after them (the live tail's order)
            assert [e.timestamp for e in store.iter_events()] == sorted(e.timestamp for e in store.iter_events())
        with Store.open(store_url) as again:  # opening again changes nothing
            assert again.event_count() == 41

    def test_a_large_older_store_keeps_working_until_upgrade_store(self, store_url, monkeypatch, caplog):
        from retrieval import migrations
        from retrieval.writes import write_event_batches

        old = [Event("u1", "rate", float(n), f"i{n}", 4.0) for n in range(30)]
        self._legacy_store(store_url, old)
        monkeypatch.setattr(migrations, "AUTO_UPGRADE_EVENTS", 10)
        with caplog.at_level("WARNING", logger="recassist.store"), Store.open(store_url) as store:
            assert store._event_conflict == migrations.LEGACY_KEY
            assert "recassist upgrade-store" in caplog.text
            assert store.add_events(old[:5] + [Event("u2", "view", 1.0, "i1")]) == 1
            seen = []
            batches = list(write_event_batches(store, [old[5:] + [Event("u3", "view", 2.0, "i2")]], 7, on_new=seen.extend))
            assert sum(b.new for b in batches) == 1 and [e.user_id for e in seen] == ["u3"]
            before = self._arrivals(store)
            done = migrations.upgrade_events(store.database)
            assert done["upgraded"] and done["events"] == 32
            assert migrations.upgrade_events(store.database)["upgraded"] is False
        with Store.open(store_url) as store:  # the next process finds the new layout
            assert store._event_conflict == EVENT_KEY
            assert self._arrivals(store) == before
            assert store.add_events(old) == 0 and store.event_count() == 32
            assert store.stored_event_ids(old[:3] + [Event("u4", "view", 0.0, "i1")]) == {e.id for e in old[:3]}

    def test_stored_event_ids_asks_by_time_and_id(self, store):
        same_time = [Event(f"u{n}", "view", 7.0, "a") for n in range(900)]  # more than one query's worth
        store.add_events(same_time[::2])
        assert store.stored_event_ids(same_time) == {e.id for e in same_time[::2]}
        assert store.stored_event_ids([]) == set()

    # -- durability and concurrency -----------------------------------------------------------

    def test_data_survives_reopening(self, store_url, store):
        store.upsert_items([_item("a")])
        store.add_events([Event("u", "view", 1.0, "a")])
        store.close()
        with Store.open(store_url) as again:  # also: creating tables twice is harmless
            assert again.item_ids() == {"a"} and again.event_count() == 1

    def test_concurrent_writers_lose_nothing(self, store):
        from assistant.memory_store import MemoryStore

        memory = MemoryStore(store.database)
        threads, errors = 8, []
        barrier = threading.Barrier(threads)

        def work(n: int) -> None:
            try:
                barrier.wait()
                for batch in range(5):
                    store.add_events([Event(f"u{n}", "view", float(batch * 10 + k), f"i{k}") for k in range(10)])
                    store.upsert_items([_item(f"t{n}-{batch}")])
                    memory.append_message(f"u{n}", "s", "user", f"message {batch}")
                    memory.save_profile(f"u{n}", {"batch": batch})
                    store.events_for_user(f"u{n}")
            except Exception as exc:  # collected: an assertion in a thread would be lost
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        assert store.event_count() == threads * 50
        assert store.item_count() == threads * 5
        for n in range(threads):
            assert len(memory.get_messages(f"u{n}", "s")) == 5
            assert memory.list_sessions(f"u{n}")[0]["turns"] == 5
            assert memory.get_profile(f"u{n}") == {"batch": 4}


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path):
        return f"sqlite:///{tmp_path}/data/recassist.db"


# -- opening: URLs and the errors a user can meet ----------------------------------------------


@pytest.mark.parametrize("prefix", ["sqlite://", "sqlite:///"])
def test_sqlite_url_forms_create_the_directory(tmp_path, prefix):
    path = tmp_path / "deep" / "er" / "x.db"
    with Store.open(f"{prefix}{path}") as store:
        store.add_events([Event("u", "like", 1.0, "a")])
    assert path.exists()


def test_in_memory_sqlite(tmp_path):
    with Store.open("sqlite:///:memory:") as store:
        store.upsert_items([_item("a")])
        assert store.item_count() == 1


@pytest.mark.parametrize(
    "make_url, message",
    [
        pytest.param(lambda p: "mysql://root@localhost/db", "unsupported database URL", id="unknown-scheme"),
        pytest.param(lambda p: f"sqlite:///{p / 'a-file'}/x.db", "cannot create the directory", id="parent-is-a-file"),
        pytest.param(lambda p: f"sqlite:///{p / 'garbage.db'}", "cannot open SQLite database", id="not-a-database"),
        pytest.param(lambda p: f"sqlite:///{p}", "cannot open SQLite database", id="path-is-a-directory"),
        pytest.param(lambda p: "postgresql://u:s3cr3t@[bad/db", "malformed", id="malformed-postgres-url"),
    ],
)
def test_open_errors_say_what_and_where(tmp_path, make_url, message):
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "garbage.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=message) as err:
        Store.open(make_url(tmp_path))
    assert "s3cr3t" not in str(err.value)


def test_postgres_without_psycopg_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(StoreError, match=r"pip install 'recassist\[postgres\]'"):
        Store.open("postgresql://localhost/recassist")


def test_closed_store_refuses_work(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/x.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.item_count()


def test_sqlite_runs_in_wal_mode(tmp_path):
    Store.open(f"sqlite:///{tmp_path}/x.db").close()
    with sqlite3.connect(tmp_path / "x.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_upgrade_store_command_upgrades_once(tmp_path, monkeypatch, capsys):
    from retrieval import migrations
    from server.cli import main

    url = f"sqlite:///{tmp_path}/legacy.db"
    TestSQLiteStore()._legacy_store(url, [Event("u", "view", 1.0, "a"), Event("u", "like", 2.0, "a")])
    monkeypatch.setattr(migrations, "AUTO_UPGRADE_EVENTS", 0)  # as a store too large to upgrade on opening
    monkeypatch.setenv("RECASSIST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECASSIST_DATABASE_URL", url)
    assert main(["upgrade-store"]) == 0
    assert "upgraded 2 events" in capsys.readouterr().out
    assert main(["upgrade-store"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    with Store.open(url) as store:
        assert store._event_conflict == EVENT_KEY and store.event_count() == 2
