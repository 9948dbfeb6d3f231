"""The streamed events ingest: the same events, counts and rejects as reading the whole file, in
bounded memory, idempotent, and resumable after a crash (PostgreSQL's COPY path in
tests/test_bulk_ingest_postgres.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

import retrieval.ingest as ingest_module
import retrieval.readers as readers_module
import retrieval.rows as rows_module
from retrieval.ingest import format_report, ingest_events, read_events
from retrieval.readers import stream_table
from retrieval.records import Event, Item
from retrieval.rows import Bad, EventParser, to_event
from retrieval.store import EventLoader, Store
from retrieval.writes import write_events

REPO = Path(__file__).resolve().parent.parent
HEADER = "user_id,item_id,type,timestamp,value,text"
ALL = {name: name for name in ("user_id", "item_id", "type", "timestamp", "value", "text")}
KNOWN = {"i1", "i2", "i3"}


@pytest.fixture
def store(tmp_path):
    with Store.open(f"sqlite:///{tmp_path}/db/recassist.db") as store:
        store.upsert_items([Item(item_id, f"Title {item_id}") for item_id in sorted(KNOWN)])
        yield store


def _write(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines))
    return path


def _stored(store: Store) -> list[tuple]:
    return sorted((event.id, event.user_id, event.type, event.timestamp, event.item_id, event.value, event.text)
                  for event in store.iter_events())


# -- the fast parser against to_event, on the same rows ------------------------------------------

ROW = {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "100", "value": "", "text": ""}

PARSER_CASES = [
    pytest.param({}, id="plain"),
    pytest.param({"user_id": "  u1 ", "item_id": "\ti1", "type": " LIKE "}, id="padded-and-upper-case"),
    pytest.param({"type": "rate", "value": "4"}, id="rating"),
    pytest.param({"type": "rate", "value": "0.5"}, id="half-star"),
    pytest.param({"type": "", "value": "3"}, id="no-type-with-value-is-rate"),
    pytest.param({"type": "", "value": ""}, id="no-type-no-value-is-view"),
    pytest.param({"type": "not_interested"}, id="feedback-type"),
    pytest.param({"timestamp": "964982703000"}, id="milliseconds"),
    pytest.param({"timestamp": "964982703.5"}, id="fractional-seconds"),
    pytest.param({"timestamp": "2024-05-01T12:00:00Z"}, id="iso-8601"),
    pytest.param({"timestamp": "1e3"}, id="exponent"),
    pytest.param({"timestamp": "1_000"}, id="underscore-digits"),
    pytest.param({"item_id": "", "type": "search", "text": "space films, \"quoted\"\ttab \\ slash"}, id="search"),
    pytest.param({"text": "Amélie 🎬 عربى 中文 e\u0301 \u200b"}, id="unicode-text"),
    pytest.param({"text": "x" * 20_000}, id="longest-text"),
    # rejected: the message must be to_event's own
    pytest.param({"type": "teleport"}, id="unknown-type"),
    pytest.param({"item_id": "i404"}, id="unknown-item"),
    pytest.param({"item_id": ""}, id="missing-item"),
    pytest.param({"user_id": ""}, id="missing-user"),
    pytest.param({"user_id": "   "}, id="blank-user"),
    pytest.param({"user_id": "u\x00"}, id="nul-in-user"),
    pytest.param({"text": "a\x00b"}, id="nul-in-text"),
    pytest.param({"type": "vi\x00ew"}, id="nul-in-type"),
    pytest.param({"text": "x" * 20_001}, id="text-too-long"),
    pytest.param({"timestamp": ""}, id="missing-timestamp"),
    pytest.param({"timestamp": "yesterday"}, id="bad-timestamp"),
    pytest.param({"timestamp": "-5"}, id="negative-timestamp"),
    pytest.param({"timestamp": "nan"}, id="nan-timestamp"),
    pytest.param({"timestamp": "inf"}, id="infinite-timestamp"),
    pytest.param({"type": "rate", "value": "11"}, id="rating-too-high"),
    pytest.param({"type": "rate", "value": ""}, id="rating-missing"),
    pytest.param({"type": "rate", "value": "five"}, id="rating-not-a-number"),
    pytest.param({"type": "rate", "value": "nan"}, id="rating-nan"),
    pytest.param({"value": "1e400"}, id="value-overflows"),
    # JSON-typed values (JSONL, Parquet, the API)
    pytest.param({"user_id": 12, "timestamp": 100}, id="int-user-and-time"),
    pytest.param({"user_id": 12.0, "timestamp": 1.5}, id="float-user-and-time"),
    pytest.param({"type": "rate", "value": 4}, id="int-rating"),
    pytest.param({"type": "rate", "value": float("nan")}, id="nan-rating-is-missing"),
    pytest.param({"value": float("nan")}, id="nan-value-is-absent"),
    pytest.param({"timestamp": float("nan")}, id="nan-timestamp-is-missing"),
    pytest.param({"timestamp": True}, id="bool-timestamp"),
    pytest.param({"type": "rate", "value": True}, id="bool-rating"),
    pytest.param({"item_id": ["i1"]}, id="list-item"),
    pytest.param({"type": 5}, id="number-type"),
    pytest.param({"text": 5}, id="number-text"),
    pytest.param({"timestamp": None, "value": None, "text": None}, id="nulls"),
]


def _outcome(parse, row):
    try:
        return parse(row)
    except Bad as bad:
        return ("rejected", bad.field, bad.reason, bad.hint)


@pytest.mark.parametrize("columns", [
    pytest.param(ALL, id="all-columns"),
    pytest.param({**ALL, "type": "=rate"}, id="constant-type"),
    pytest.param({k: v for k, v in ALL.items() if k not in ("type", "value")}, id="no-type-no-value-column"),
])
@pytest.mark.parametrize("now", [None, 1_700_000_000.0])
@pytest.mark.parametrize("known", [KNOWN, None])
@pytest.mark.parametrize("change", PARSER_CASES)
def test_parser_gives_what_to_event_gives(change, known, now, columns):
    row = {**ROW, **change}
    parser = EventParser(columns, known, now=now)
    expected = _outcome(lambda r: to_event(r, columns, known, now), row)
    assert _outcome(parser, row) == expected
    if isinstance(expected, Event):
        assert parser(row).id == expected.id


def test_a_plain_row_does_not_go_through_to_event(monkeypatch):
    calls = []
    monkeypatch.setattr(rows_module, "to_event", lambda *args: calls.append(args))
    parser = EventParser(ALL, KNOWN)
    assert parser(ROW) == Event("u1", "view", 100.0, "i1")
    assert parser({**ROW, "type": "rate", "value": "4.5", "timestamp": "964982703000"}).timestamp == 964982703.0
    assert calls == []


# -- the same events, counts and rejects as the whole-file path -----------------------------------

CSV_LINES = [
    HEADER,
    "u1,i1,view,100,,",
    "u1,i2,rate,200,4,",
    "u2,i1,LIKE,150,,",
    "u2,i1,like,150,,",  # the line above again (type case differs, same event)
    "u3,i404,view,100,,",  # unknown item
    "",
    "u4,i1,view,yesterday,,",  # bad timestamp
    b"u\xe9,i2,like,100,,",  # not UTF-8
    "u5,i2,view,100,,extra,column",  # column count
    'u6,,search,300,,"space, ""films""\nsecond line"',  # a quoted field over two lines
    "u7,i3,rate,964982703000,2.5,",  # milliseconds
    "u8,i3,purchase,2024-05-01T12:00:00Z,,",
    "u1,i1,view,100,,",  # line 2 again, in a later batch
    "u9,i1,rate,400,11,",  # out of range
    "u9,i2,comment,500,,tab\there\\backslash",
    ",i1,view,100,,",  # no user
    "u10,i1,view,600,,",
]

JSONL_LINES = [
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 100}),
    json.dumps({"user_id": 2, "item_id": "i2", "type": "like", "timestamp": 200.5}),
    "{not json",
    "[1, 2]",
    json.dumps({"user_id": "u3", "item_id": "i404", "timestamp": 100}),
    "",
    json.dumps({"user_id": "u3", "item_id": "i1", "timestamp": "2024-05-01"}),
    # "value" first appears here, after the first chunk: ratings must still be read as ratings
    json.dumps({"user_id": "u4", "item_id": "i3", "timestamp": 300, "value": 4}),
    json.dumps({"user_id": "u4", "item_id": "i3", "type": "rate", "timestamp": 300, "value": 4}),
    b'{"user_id": "u\xe9", "item_id": "i1", "timestamp": 1}',
    json.dumps({"user_id": "u5", "item_id": "i1", "type": "rate", "timestamp": 300, "value": float("nan")}),
    json.dumps({"user_id": "u6", "type": "search", "timestamp": 700, "text": "emoji 🎬\nnewline"}),
]


def _old_ingest(path: Path, store: Store) -> dict:
    """The ingest before streaming: the whole file read, then written 5,000 events at a time."""
    result = read_events(path, known_item_ids=store.item_ids())
    inserted = sum(write_events(store, result.records[start : start + 5000])
                   for start in range(0, len(result.records), 5000))
    return {"read": result.total_rows, "inserted": inserted, "unchanged": len(result.records) - inserted,
            "rejected": len(result.rejects), "rejects": result.rejects}


@pytest.mark.parametrize("name, lines", [("events.csv", CSV_LINES), ("events.jsonl", JSONL_LINES)])
@pytest.mark.parametrize("batch_size", [1, 3, 100_000])
def test_streamed_ingest_stores_what_the_whole_file_path_stores(tmp_path, name, lines, batch_size):
    path = _write(tmp_path / name, lines)
    with Store.open(f"sqlite:///{tmp_path}/old.db") as old_store, Store.open(f"sqlite:///{tmp_path}/new.db") as new_store:
        for s in (old_store, new_store):
            s.upsert_items([Item(item_id, item_id) for item_id in sorted(KNOWN)])
        expected = _old_ingest(path, old_store)
        report = ingest_events(path, new_store, progress=False, batch_size=batch_size)
        got = {"read": report.read, "inserted": report.inserted, "unchanged": report.unchanged,
               "rejected": report.rejected, "rejects": report.rejects}
        assert got == expected
        assert _stored(new_store) == _stored(old_store)
        assert expected["inserted"] > 3 and expected["rejected"] > 3  # the file exercises both


def test_rerun_stores_nothing_twice(tmp_path, store):
    path = _write(tmp_path / "events.csv", CSV_LINES)
    first = ingest_events(path, store, progress=False, batch_size=2)
    before = _stored(store)
    again = ingest_events(path, store, progress=False, batch_size=5)
    assert (again.read, again.inserted, again.rejected) == (first.read, 0, first.rejected)
    assert again.unchanged == first.inserted + first.unchanged
    assert _stored(store) == before and store.event_count() == first.inserted


def test_new_events_are_handed_over_once_across_batches(tmp_path, store):
    path = _write(tmp_path / "events.csv", CSV_LINES)
    received: list[list[Event]] = []
    report = ingest_events(path, store, progress=False, on_events=received.append, batch_size=3)
    ids = [event.id for batch in received for event in batch]
    assert len(ids) == len(set(ids)) == report.inserted == store.event_count()
    assert all(len(batch) <= 3 for batch in received)
    received.clear()
    ingest_events(path, store, progress=False, on_events=received.append, batch_size=3)
    assert received == []


# -- crashes: whole transactions land, a re-run stores the rest -----------------------------------


def _numbered_events(path: Path, count: int) -> Path:
    return _write(path, [HEADER] + [f"u{n % 7},i{1 + n % 3},view,{1000 + n},," for n in range(count)])


@pytest.mark.parametrize("commit_size, landed", [(20, 20), (30, 0)])  # the third batch of 10 fails
@pytest.mark.parametrize("fail_in", ["store", "stage"])
def test_an_interrupted_ingest_resumes_without_duplicates(tmp_path, store, monkeypatch, fail_in, commit_size, landed):
    path = _numbered_events(tmp_path / "events.csv", 50)
    real = getattr(EventLoader, fail_in)
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EventLoader, fail_in, failing)
    with pytest.raises(RuntimeError, match="disk went away"):
        ingest_events(path, store, progress=False, batch_size=10, commit_size=commit_size)
    assert store.event_count() == landed  # whole transactions, nothing of the one that failed
    monkeypatch.setattr(EventLoader, fail_in, real)
    report = ingest_events(path, store, progress=False, batch_size=10, commit_size=commit_size)
    assert (report.read, report.inserted, report.unchanged) == (50, 50 - landed, landed)
    assert store.event_count() == 50 == len({row[0] for row in _stored(store)})


KILLED_AFTER = """
import os, signal, sys
from retrieval.ingest import ingest_events
from retrieval.store import Store

batches = []
def kill_after_two(events):
    batches.append(len(events))
    if len(batches) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers: a real crash

with Store.open(sys.argv[1]) as store:
    ingest_events(sys.argv[2], store, progress=False, on_events=kill_after_two, batch_size=10)
"""


def test_a_killed_ingest_resumes_without_duplicates(tmp_path, store):
    path = _numbered_events(tmp_path / "events.csv", 45)
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER, store.database.url, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert store.event_count() == 20
    report = ingest_events(path, store, progress=False, batch_size=10)
    assert (report.inserted, report.unchanged) == (25, 20)
    assert store.event_count() == 45 == len({row[0] for row in _stored(store)})


# -- bounded memory ----------------------------------------------------------------------------


def test_the_reader_reads_a_chunk_ahead_not_the_file(tmp_path):
    """Through a pipe whose writer counts what it wrote: the first chunk arrives long before the rest is written."""
    fifo = tmp_path / "events.csv"
    os.mkfifo(fifo)
    written, rows = [0], 200_000
    may_finish = threading.Event()

    def produce():
        with open(fifo, "w", encoding="utf-8") as out:
            out.write(HEADER + "\n")
            for n in range(rows):
                if n == rows // 2:
                    may_finish.wait(10)
                out.write(f"u{n},i1,view,{n},,\n")
                written[0] = n + 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with stream_table(fifo, chunk_rows=1000) as table:
        sizes = [len(next(table.chunks).rows) for _ in range(2)]
        assert written[0] <= rows // 2  # the reader already has two chunks; the writer is waiting halfway
        may_finish.set()
        sizes += [len(chunk.rows) for chunk in table.chunks]
    producer.join(10)
    assert sum(sizes) == rows and max(sizes) == 1000


def test_batches_hold_at_most_batch_size_events(tmp_path, store, monkeypatch):
    staged: list[int] = []
    real = EventLoader.stage
    monkeypatch.setattr(EventLoader, "stage", lambda self, rows: (staged.append(len(rows)), real(self, rows))[1])
    path = _numbered_events(tmp_path / "events.csv", 95)
    ingest_events(path, store, progress=False, batch_size=10)
    assert staged == [10] * 9 + [5]


def _peak_bytes(path: Path, store: Store) -> int:
    tracemalloc.start()
    try:
        ingest_events(path, store, progress=False, batch_size=500)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_file(tmp_path, store, monkeypatch):
    monkeypatch.setattr(readers_module, "READ_BYTES", 16_384)  # both files are larger than a block
    small = _peak_bytes(_numbered_events(tmp_path / "small.csv", 2_000), store)
    large = _peak_bytes(_numbered_events(tmp_path / "large.csv", 20_000), store)
    assert large < 1.5 * small, (small, large)


def test_a_report_keeps_the_first_rejects_and_counts_all(tmp_path, store, monkeypatch):
    monkeypatch.setattr(ingest_module, "MAX_REJECTS_KEPT", 5)
    path = _write(tmp_path / "events.csv", [HEADER] + [f"u{n},i404,view,{n},," for n in range(12)] + ["u,i1,view,1,,"])
    report = ingest_events(path, store, progress=False, batch_size=4)
    assert (report.read, report.inserted, report.rejected) == (13, 1, 12)
    assert [reject.line for reject in report.rejects] == [2, 3, 4, 5, 6]
    assert "... and 7 more" in format_report(report, max_rejects=5)


def test_an_in_memory_store_takes_a_bulk_ingest(tmp_path):
    with Store.open("sqlite:///:memory:") as store:
        store.upsert_items([Item("i1", "One"), Item("i2", "Two"), Item("i3", "Three")])
        report = ingest_events(_numbered_events(tmp_path / "e.csv", 30), store, progress=False, batch_size=7)
        assert report.inserted == store.event_count() == 30


def test_bulk_settings_are_put_back(store):
    with store.database.read() as db:
        before = [db.all(f"PRAGMA {name}")[0][0] for name in ("cache_size", "wal_autocheckpoint")]
    with store.event_loader() as loader:
        loader.stage(loader.rows([Event("u", "view", 1.0, "i1")]))
        assert loader.store() == (1, None)
    with store.database.read() as db:
        after = [db.all(f"PRAGMA {name}")[0][0] for name in ("cache_size", "wal_autocheckpoint")]
        assert db.all("SELECT name FROM temp.sqlite_master") == []
    assert after == before
