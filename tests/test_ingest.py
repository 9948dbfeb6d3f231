"""Catalog and event ingest: what lands, what is rejected (file, line, reason), and re-runs."""

from __future__ import annotations

import csv
import importlib.util
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from core.errors import IngestError
from retrieval.ingest import (
    IngestReport,
    Reject,
    event_item_ids,
    events_from_dicts,
    format_report,
    ingest_catalog,
    ingest_events,
    items_from_dicts,
    read_catalog,
    read_events,
)
from retrieval.records import Event, Item
from retrieval.store import Store
from retrieval.writes import write_events, write_items

MOVIELENS = Path("/work/shared/data/movielens-small")


@pytest.fixture
def store(tmp_path):
    with Store.open(f"sqlite:///{tmp_path}/db/recassist.db") as store:
        yield store


def _write(tmp_path: Path, name: str, lines: list[str | bytes]) -> Path:
    """A real file, one entry per line; bytes entries are written as they are (bad encodings)."""
    path = tmp_path / name
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines))
    return path


def _jsonl(rows: list) -> list[str | bytes]:
    return [row if isinstance(row, (str, bytes)) else json.dumps(row) for row in rows]


class Recorder:
    """An `index` callable that remembers what it was given, and can fail on a chosen call."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, items: list[Item]) -> None:
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise RuntimeError("vector store went away")
        self.calls.append([item.id for item in items])

    @property
    def ids(self) -> list[str]:
        return [item_id for call in self.calls for item_id in call]


# -- rejects: each names file, line, field and reason; the good rows still land ----------------

CATALOG_CSV_HEADER = "id,title,text,year,categories"


@pytest.mark.parametrize(
    "bad_line, field, reason",
    [
        pytest.param(",No id,,,", "id", "missing id", id="missing-id"),
        pytest.param("1,Again,,,", "id", "duplicate id '1', first seen at line 2", id="duplicate-id"),
        pytest.param("5,,text,,", "title", "no title", id="no-title"),
        pytest.param("6,Six,,abc,", "year", "'abc' is not a year", id="year-wrong-type"),
        pytest.param("7," + "T" * 501 + ",,,", "title", "501 characters, more than the 500 allowed", id="long-title"),
        pytest.param("8,Eight," + "x" * 20_001 + ",,", "text", "20,001 characters", id="long-text"),
        pytest.param(b"9,Caf\xe9,,,", None, "undecodable bytes: byte 0xe9 at column 6", id="not-utf8"),
        pytest.param("10,Ten,,,,extra", None, "has 6 columns, the header has 5", id="column-count"),
        pytest.param('11,Eleven,,,"[""unclosed"', "categories", "not valid JSON", id="bad-json-list"),
        pytest.param("12,Twelve," + "x" * 200_000 + ",,", None, "longer than 131,072 characters", id="huge-field"),
    ],
)
def test_catalog_csv_rejects(tmp_path, bad_line, field, reason):
    path = _write(tmp_path, "catalog.csv", [CATALOG_CSV_HEADER, "1,One,,1999,Drama", bad_line, "2,Two,,,"])
    result = read_catalog(path)
    assert [item.id for item in result.records] == ["1", "2"]
    assert result.total_rows == 3
    [reject] = result.rejects
    assert (reject.file, reject.line, reject.field) == ("catalog.csv", 3, field)
    assert reason in reject.reason
    assert str(reject).startswith("catalog.csv:3: ")


@pytest.mark.parametrize(
    "bad_line, field, reason",
    [
        pytest.param("{not json", None, "not valid JSON", id="not-json"),
        pytest.param("[1, 2]", None, "a JSON list, not an object", id="not-an-object"),
        pytest.param({"id": "3"}, "title", "no title", id="no-title"),
        pytest.param({"title": "No id"}, "id", "missing id", id="missing-id"),
        pytest.param({"id": "3", "title": "T", "categories": 5}, "categories", "expected a list", id="categories-type"),
        pytest.param({"id": "3", "title": "T", "tags": [{"x": 1}]}, "tags", "entries must be text", id="tags-entries"),
        pytest.param({"id": "3", "title": "T", "year": True}, "year", "not a year", id="year-bool"),
        pytest.param({"id": "3", "title": "T", "popularity": "lots"}, "popularity", "not a number", id="popularity"),
        pytest.param({"id": "3", "title": ["T"]}, "title", "expected text", id="title-list"),
        pytest.param({"id": "3", "title": "a\u0000b"}, "title", "NUL", id="nul-char"),
        pytest.param(b'{"id": "3", "title": "Caf\xe9"}', None, "undecodable bytes", id="not-utf8"),
    ],
)
def test_catalog_jsonl_rejects(tmp_path, bad_line, field, reason):
    path = _write(tmp_path, "catalog.jsonl", _jsonl([{"id": "1", "title": "One"}, bad_line, {"id": 2, "title": "Two"}]))
    result = read_catalog(path)
    assert [item.id for item in result.records] == ["1", "2"]
    [reject] = result.rejects
    assert (reject.file, reject.line, reject.field) == ("catalog.jsonl", 2, field)
    assert reason in reject.reason


EVENTS_HEADER = "user_id,item_id,type,timestamp,value,text"


@pytest.mark.parametrize(
    "bad_line, field, reason",
    [
        pytest.param("u1,i1,teleport,100,,", "type", "unknown event type 'teleport'", id="unknown-type"),
        pytest.param("u1,i404,view,100,,", "item_id", "unknown item id 'i404'", id="unknown-item"),
        pytest.param("u1,i1,view,yesterday,,", "timestamp", "'yesterday' is not a time", id="bad-timestamp"),
        pytest.param("u1,i1,view,,,", "timestamp", "missing timestamp", id="no-timestamp"),
        pytest.param("u1,i1,rate,100,11,", "value", "rating 11 is out of range", id="rating-too-high"),
        pytest.param("u1,i1,rate,100,0,", "value", "rating 0 is out of range", id="rating-too-low"),
        pytest.param("u1,i1,rate,100,,", "value", "without a value", id="rating-missing"),
        pytest.param("u1,i1,rate,100,five,", "value", "'five' is not a number", id="rating-not-number"),
        pytest.param(",i1,view,100,,", "user_id", "missing user_id", id="no-user"),
        pytest.param("u1,,view,100,,", "item_id", "missing item_id", id="no-item"),
        pytest.param(b"u1,i1,comment,100,,\xff\xfe", None, "undecodable bytes", id="not-utf8"),
    ],
)
def test_event_rejects(tmp_path, bad_line, field, reason):
    path = _write(tmp_path, "events.csv", [EVENTS_HEADER, "u1,i1,view,100,,", bad_line, "u2,,search,200,,space"])
    result = read_events(path, known_item_ids={"i1"})
    assert [(e.user_id, e.type) for e in result.records] == [("u1", "view"), ("u2", "search")]
    [reject] = result.rejects
    assert (reject.file, reject.line, reject.field) == ("events.csv", 3, field)
    assert reason in reject.reason
    assert reject.hint  # every reject says how to fix it


def test_a_multiline_csv_field_keeps_line_numbers(tmp_path):
    path = _write(tmp_path, "c.csv", ["id,title,text", '1,One,"first line', 'second line"', "2,,missing title"])
    result = read_catalog(path)
    assert result.records[0].text == "first line\nsecond line"
    assert [(r.line, r.field) for r in result.rejects] == [(4, "title")]


# -- what good rows become ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "column, raw, expected",
    [
        ("categories", "Action|Sci-Fi", ["Action", "Sci-Fi"]),
        ("categories", "Action, Sci-Fi", ["Action", "Sci-Fi"]),
        ("categories", '["Action", "Sci-Fi"]', ["Action", "Sci-Fi"]),
        ("categories", '[{"id": 28, "name": "Action"}]', ["Action"]),
        ("categories", "", []),
        ("year", "1995", 1995),
        ("year", "1995.0", 1995),
        ("year", "1995-07-20", 1995),
        ("year", "2001-09-11T08:46:00", 2001),
        ("popularity", "12.5", 12.5),
        ("text", "  padded  ", "padded"),
    ],
)
def test_catalog_field_parsing(tmp_path, column, raw, expected):
    path = tmp_path / "c.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "title", column], ["1", "One", raw]])
    [item] = read_catalog(path).records
    assert getattr(item, column) == expected


def test_other_columns_go_to_extra_as_scalars(tmp_path):
    path = _write(tmp_path, "c.csv", [
        "id,title,budget,rating,zip,lang,companies,empty",
        '1,One,237000000,7.2,02139,en,"[{""name"": ""Fox""}]",',
    ])
    [item] = read_catalog(path).records
    assert item.extra == {"budget": 237000000, "rating": 7.2, "zip": "02139", "lang": "en"}


def test_jsonl_keeps_only_scalar_extras(tmp_path):
    path = _write(tmp_path, "c.jsonl", _jsonl([
        {"id": 1, "title": "One", "lang": "en", "adult": False, "cast": ["a"], "meta": {"x": 1}, "extra": {"k": 2}},
    ]))
    [item] = read_catalog(path).records
    assert item.id == "1" and item.extra == {"lang": "en", "adult": False, "k": 2}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("964982703", 964982703.0),
        ("964982703000", 964982703.0),  # milliseconds
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc).timestamp()),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc).timestamp()),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()),
    ],
)
def test_timestamps(tmp_path, raw, expected):
    path = _write(tmp_path, "e.csv", ["user_id,item_id,type,timestamp", f"u,i,view,{raw}"])
    [event] = read_events(path).records
    assert event.timestamp == expected


@pytest.mark.parametrize(
    "mapping, header, row, expected",
    [
        pytest.param({"user_id": "userId", "item_id": "movieId", "value": "rating"},
                     "userId,movieId,rating,timestamp", "1,31,2.5,1260759144",
                     Event("1", "rate", 1260759144.0, "31", 2.5), id="movielens-ratings-infer-rate"),
        pytest.param({"user_id": "userId", "item_id": "movieId", "text": "tag", "type": "=comment"},
                     "userId,movieId,tag,timestamp", "2,60756,funny,1445714994",
                     Event("2", "comment", 1445714994.0, "60756", None, "funny"), id="constant-type"),
        pytest.param({}, "user_id,item_id,timestamp", "u,i,5", Event("u", "view", 5.0, "i"), id="no-type-no-value"),
        pytest.param({}, "user_id,item_id,type,timestamp", "u,i,LIKE,5", Event("u", "like", 5.0, "i"),
                     id="type-case-insensitive"),
        pytest.param({}, "user_id,item_id,type,timestamp,value", "u,i,rate,5,0.5",
                     Event("u", "rate", 5.0, "i", 0.5), id="half-star-rating"),
    ],
)
def test_event_mapping(tmp_path, mapping, header, row, expected):
    path = _write(tmp_path, "e.csv", [header, row])
    result = read_events(path, mapping)
    assert result.rejects == [] and result.records == [expected]


def test_catalog_mapping(tmp_path):
    path = _write(tmp_path, "movies.csv", ["movieId,name,overview,genres", "31,Heat,A heist,Crime|Thriller"])
    [item] = read_catalog(path, {"id": "movieId", "title": "name", "text": "overview", "categories": "genres"}).records
    assert item == Item("31", "Heat", "A heist", ["Crime", "Thriller"])


# -- files that cannot be read at all: IngestError saying how to fix it ------------------------


@pytest.mark.parametrize(
    "name, content, mapping, message",
    [
        pytest.param("missing.csv", None, None, "cannot open", id="no-such-file"),
        pytest.param("catalog.xlsx", "x", None, "unknown file format '.xlsx'", id="unknown-format"),
        pytest.param("c.csv", "id,title\n1,One\n", {"text": "overview"}, "has no column 'overview'",
                     id="mapped-column-absent"),
        pytest.param("c.jsonl", '{"id": 1, "title": "x"}\n', {"text": "overview"}, "has no column 'overview'",
                     id="mapped-key-absent-jsonl"),
        pytest.param("c.csv", "id,title\n1,One\n", {"colour": "title"}, "'colour', which is not a catalog field",
                     id="unknown-field"),
        pytest.param("c.csv", "movieId,title\n1,One\n", None, "no 'id' column", id="no-id-column"),
        pytest.param("c.csv", "", None, "is empty", id="empty-file"),
        pytest.param("c.parquet", "x", None, "pyarrow", id="parquet-needs-pyarrow"),
    ],
)
def test_unreadable_files_raise(tmp_path, name, content, mapping, message):
    if name.endswith(".parquet") and importlib.util.find_spec("pyarrow"):
        pytest.skip("pyarrow is installed, so Parquet files are readable")
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(IngestError, match=message):
        read_catalog(path, mapping)


def test_events_before_any_catalog_raise(tmp_path, store):
    path = _write(tmp_path, "e.csv", [EVENTS_HEADER, "u1,i1,view,100,,"])
    with pytest.raises(IngestError, match="ingest the catalog first"):
        ingest_events(path, store, progress=False)


# -- ingest runs: counts, exit codes, re-runs and crashes ---------------------------------------


def _catalog(tmp_path: Path, count: int, bad: int = 0, name: str = "catalog.jsonl") -> Path:
    rows = [{"id": f"m{n}", "title": f"Movie {n}", "categories": ["Drama"]} for n in range(count)]
    rows += [{"id": f"bad{n}"} for n in range(bad)]  # no title
    return _write(tmp_path, name, _jsonl(rows))


@pytest.mark.parametrize("bad, exit_code", [(0, 0), (3, 2)])
def test_catalog_ingest_counts_and_exit_code(tmp_path, store, bad, exit_code):
    index = Recorder()
    report = ingest_catalog(_catalog(tmp_path, 5, bad), store, index=index, batch_size=2, progress=False)
    assert (report.read, report.inserted, report.embedded, report.rejected) == (5 + bad, 5, 5, bad)
    assert report.exit_code == exit_code
    assert sorted(index.ids) == [f"m{n}" for n in range(5)]
    assert store.item_count() == 5 and store.items_needing_embedding() == []


def test_catalog_rerun_adds_and_embeds_nothing(tmp_path, store):
    path = _catalog(tmp_path, 5)
    ingest_catalog(path, store, index=Recorder(), progress=False)
    again = Recorder()
    report = ingest_catalog(path, store, index=again, progress=False)
    assert (report.inserted, report.updated, report.unchanged, report.embedded) == (0, 0, 5, 0)
    assert again.calls == []


def test_only_changed_items_are_re_embedded(tmp_path, store):
    ingest_catalog(_catalog(tmp_path, 5), store, index=Recorder(), progress=False)
    rows = [{"id": f"m{n}", "title": f"Movie {n}", "categories": ["Drama"]} for n in range(5)]
    rows[3]["title"] = "Movie 3, director's cut"
    rows.append({"id": "m9", "title": "Brand new"})
    index = Recorder()
    report = ingest_catalog(_write(tmp_path, "v2.jsonl", _jsonl(rows)), store, index=index, progress=False)
    assert (report.inserted, report.updated, report.unchanged) == (1, 1, 4)
    assert sorted(index.ids) == ["m3", "m9"]


def test_crash_halfway_then_rerun_embeds_only_the_remainder(tmp_path, store):
    path = _catalog(tmp_path, 5)
    crashing = Recorder(fail_on_call=2)
    with pytest.raises(RuntimeError, match="vector store went away") as err:
        ingest_catalog(path, store, index=crashing, batch_size=2, progress=False)
    assert any("re-run" in note for note in err.value.__notes__)
    assert crashing.ids == ["m0", "m1"]

    resumed = Recorder()
    report = ingest_catalog(path, store, index=resumed, batch_size=2, progress=False)
    assert sorted(resumed.ids) == ["m2", "m3", "m4"]  # m2, m3 were stored but never marked embedded
    assert (report.inserted, report.unchanged, report.embedded) == (1, 4, 3)
    assert store.item_count() == 5 and store.items_needing_embedding() == []


def test_events_ingest_and_rerun(tmp_path, store):
    store.upsert_items([Item("i1", "One"), Item("i2", "Two")])
    path = _write(tmp_path, "events.csv", [
        EVENTS_HEADER, "u1,i1,view,100,,", "u1,i2,rate,200,4,", "u2,i1,like,150,,", "u2,i1,like,150,,",
        "u3,i404,view,100,,",
    ])
    received: list[list[Event]] = []
    report = ingest_events(path, store, progress=False, on_events=received.append)
    assert (report.read, report.inserted, report.unchanged, report.rejected) == (5, 3, 1, 1)
    assert report.exit_code == 2 and report.rejects[0].line == 6
    assert sum(len(batch) for batch in received) == 3

    received.clear()
    again = ingest_events(path, store, progress=False, on_events=received.append)
    assert (again.inserted, again.unchanged) == (0, 4)
    assert received == [] and store.event_count() == 3


def test_progress_prints_a_throughput_line(tmp_path, store, capsys):
    ingest_catalog(_catalog(tmp_path, 3), store, progress=True)
    assert "rows/s" in capsys.readouterr().err
    ingest_catalog(_catalog(tmp_path, 3), store, progress=False)
    assert capsys.readouterr().err == ""


def test_format_report_shows_first_twenty_rejects():
    rejects = [Reject("c.csv", n, "title", "no title", "every item needs a title") for n in range(2, 27)]
    report = IngestReport("c.csv", "catalog", read=30, inserted=5, rejected=25, rejects=rejects, seconds=0.5)
    text = format_report(report)
    assert "c.csv:2: title: no title (every item needs a title)" in text
    assert "c.csv:21:" in text and "c.csv:22:" not in text
    assert "... and 5 more" in text
    assert "60 rows/s" in text


# -- the one write path every caller shares --------------------------------------------------


def test_write_items_embeds_what_is_pending_then_marks_it(store):
    store.upsert_items([Item("left", "Stored by a write that stopped before embedding")])
    index = Recorder()
    written = write_items(store, index, [Item("new", "New"), Item("left", "Stored by a write that stopped before embedding")])
    assert (written.inserted, written.updated, written.unchanged, written.upserted) == (["new"], [], ["left"], 1)
    assert index.ids == ["left", "new"] and [i.id for i in written.embedded] == ["left", "new"]
    assert store.items_needing_embedding() == []

    again = Recorder()
    assert write_items(store, again, [Item("new", "New")]).embedded == [] and again.calls == []
    # Without a vector store the items land and stay pending for the next write that has one.
    assert write_items(store, None, [Item("new", "New, revised")]).updated == ["new"]
    assert [i.id for i in store.items_needing_embedding()] == ["new"]


def test_write_events_counts_new_ones_and_hands_each_over_once(store):
    store.upsert_items([Item("i1", "One")])
    first, repeat = Event("u1", "view", 100.0, "i1"), Event("u1", "like", 200.0, "i1")
    received: list[list[Event]] = []
    assert write_events(store, [first, repeat, repeat], on_new=received.append) == 2
    assert [e.id for batch in received for e in batch] == [first.id, repeat.id]
    received.clear()
    assert write_events(store, [first, Event("u2", "view", 300.0, "i1")], on_new=received.append) == 1
    assert [e.user_id for batch in received for e in batch] == ["u2"]
    assert write_events(store, []) == 0 and store.event_count() == 3


# -- the HTTP API's entry points: rejects carry the list index ----------------------------------


def test_items_from_dicts():
    items, rejects = items_from_dicts([
        {"id": "a", "title": "A", "year": "1999-01-01", "studio": "Ghibli"},
        {"id": "b"},
        {"id": "a", "title": "again"},
        "not an object",
    ])
    assert items == [Item("a", "A", year=1999, extra={"studio": "Ghibli"})]
    assert [(r.line, r.field) for r in rejects] == [(1, "title"), (2, "id"), (3, None)]
    assert all(r.file == "request" for r in rejects)


def test_events_from_dicts_default_timestamp_is_now():
    events, rejects = events_from_dicts(
        [{"user_id": "u", "item_id": "a", "type": "like"}, {"user_id": "u", "item_id": "zz", "type": "like"}],
        known_item_ids={"a"},
    )
    assert rejects[0].line == 1 and rejects[0].field == "item_id"
    assert abs(events[0].timestamp - datetime.now(timezone.utc).timestamp()) < 60


def test_event_item_ids_reads_ids_as_events_from_dicts_does():
    rows = [{"item_id": 12.0}, {"item_id": " a "}, {"type": "search"}, {"item_id": ["x"]}, "not an object"]
    assert event_item_ids(rows) == {"12", "a"}
    events, _ = events_from_dicts([{"user_id": "u", "item_id": 12.0, "type": "view"}], known_item_ids=event_item_ids(rows))
    assert [e.item_id for e in events] == ["12"]


# -- the real MovieLens files, when present ----------------------------------------------------


@pytest.mark.integration
def test_movielens_catalog_lands_whole(tmp_path, store):
    if not (MOVIELENS / "movies.csv").exists():
        pytest.skip(f"MovieLens not found at {MOVIELENS}")
    report = ingest_catalog(MOVIELENS / "movies.csv", store, {"id": "movieId", "categories": "genres"}, progress=False)
    assert report.rejected == 0 and report.inserted == 9742
    assert store.get_item("1").categories == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]


def test_rejects_are_reported_in_file_order(tmp_path):
    from retrieval.ingest import read_catalog

    path = tmp_path / "items.jsonl"
    path.write_bytes(
        b'{"id": "1", "title": "Good"}\n'
        b'{"id": "2"}\n'  # line 2: no title (found while converting)
        b'\xff\xfe not utf-8\n'  # line 3: undecodable (found while reading)
        b'{"id": "4", "title": "Also good"}\n'
        b'{"id": "5", "title": ""}\n'  # line 5: empty title
    )
    result = read_catalog(path)
    assert [r.line for r in result.rejects] == [2, 3, 5]
    assert [i.id for i in result.records] == ["1", "4"]
