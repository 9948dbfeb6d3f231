"""The streamed events ingest on PostgreSQL: COPY into a temporary table, then one
INSERT ... ON CONFLICT DO NOTHING per batch; the same result as SQLite, idempotent, resumable."""

from __future__ import annotations

import pytest

from retrieval.ingest import ingest_events
from retrieval.records import Event, Item
from retrieval.store import EventLoader, Store
from test_bulk_ingest import CSV_LINES, JSONL_LINES, KNOWN, _numbered_events, _stored, _write
from test_postgres import postgres_server, postgres_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_store(postgres_url):  # noqa: F811 - the fixture imported above
    with Store.open(postgres_url) as store:
        store.upsert_items([Item(item_id, item_id) for item_id in sorted(KNOWN)])
        yield store


@pytest.mark.parametrize("name, lines", [("events.csv", CSV_LINES), ("events.jsonl", JSONL_LINES)])
def test_copy_path_stores_what_sqlite_stores(tmp_path, pg_store, name, lines):
    path = _write(tmp_path / name, lines)
    with Store.open(f"sqlite:///{tmp_path}/lite.db") as lite:
        lite.upsert_items([Item(item_id, item_id) for item_id in sorted(KNOWN)])
        expected = ingest_events(path, lite, progress=False, batch_size=3)
        got = ingest_events(path, pg_store, progress=False, batch_size=3)
        assert (got.read, got.inserted, got.unchanged, got.rejected) == \
            (expected.read, expected.inserted, expected.unchanged, expected.rejected)
        assert got.rejects == expected.rejects
        assert _stored(pg_store) == _stored(lite)


def test_copy_keeps_text_exactly(pg_store):
    """COPY's text format escapes tabs, newlines and backslashes; none may change on the way."""
    texts = ["tab\there", "line\nbreak\r\nwindows", "back\\slash \\N \\t", "quote \" ' ,;|", "Amélie 🎬 中文 \u200b\u202e"]
    events = [Event(f"u{n}", "search", float(n), None, None, text) for n, text in enumerate(texts)]
    with pg_store.event_loader() as loader:
        loader.stage(loader.rows(events))
        added, new_ids = loader.store(new_ids=True)
    assert added == len(texts) and sorted(new_ids) == sorted(event.id for event in events)
    assert [event.text for event in pg_store.iter_events()] == texts
    assert sorted(event.id for event in pg_store.iter_events()) == sorted(event.id for event in events)


def test_rerun_and_new_event_hand_over(tmp_path, pg_store):
    path = _write(tmp_path / "events.csv", CSV_LINES)
    received: list[list[Event]] = []
    first = ingest_events(path, pg_store, progress=False, on_events=received.append, batch_size=4)
    assert sum(len(batch) for batch in received) == first.inserted == pg_store.event_count()
    received.clear()
    again = ingest_events(path, pg_store, progress=False, on_events=received.append, batch_size=4)
    assert (again.inserted, again.unchanged) == (0, first.inserted + first.unchanged)
    assert received == [] and pg_store.event_count() == first.inserted


def test_an_interrupted_ingest_resumes_without_duplicates(tmp_path, pg_store, monkeypatch):
    path = _numbered_events(tmp_path / "events.csv", 50)
    real, calls = EventLoader.store, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("connection went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EventLoader, "store", failing)
    with pytest.raises(RuntimeError, match="went away"):
        ingest_events(path, pg_store, progress=False, batch_size=10, commit_size=20)
    assert pg_store.event_count() == 20  # the first transaction (two batches), nothing of the second
    monkeypatch.setattr(EventLoader, "store", real)
    report = ingest_events(path, pg_store, progress=False, batch_size=10, commit_size=20)
    assert (report.inserted, report.unchanged) == (30, 20) and pg_store.event_count() == 50
    with pg_store.database.read() as db:  # the staging table went with each load
        assert db.all("SELECT count(*) FROM pg_tables WHERE tablename = 'events_load'") == [(0,)]
