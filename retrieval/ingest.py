"""Catalog and behaviour ingest from CSV/TSV, JSONL and (when pyarrow is installed) Parquet.

Bad rows never stop a file: each becomes a `Reject` naming file, line, field, reason and a hint,
and the good rows still land. Only a file that cannot be read at all raises `IngestError`.

A mapping renames columns: `{"id": "movieId", "text": "overview"}` means our field `id` is the
file's column `movieId`. A value starting with "=" is a constant for every row, e.g.
`{"type": "=rate"}` for a ratings file that has no type column.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from core.errors import IngestError
from retrieval.progress import progress_bar
from retrieval.records import ALL_EVENT_TYPES, Event, Item
from retrieval.store import Store, normalize_event
from retrieval.writes import write_events, write_items

ITEM_FIELDS = ("id", "title", "text", "categories", "tags", "year", "creator", "popularity")
EVENT_FIELDS = ("user_id", "item_id", "type", "timestamp", "value", "text")
MAX_TITLE = 500
MAX_TEXT = 20_000
# 0.5 rather than 1: MovieLens rates in half stars from 0.5 to 5.
RATING_RANGE = (0.5, 10.0)
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
EVENT_BATCH = 5000
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_LEADING_ZERO = re.compile(r"-?0\d")


@dataclass
class Reject:
    """One row that did not land, and why. `line` is the 1-based file line (or the list index)."""

    file: str
    line: int
    field: str | None
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " + (f"{self.field}: " if self.field else "")
        return where + self.reason + (f" ({self.hint})" if self.hint else "")

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.reason, "hint": self.hint}


@dataclass
class ReadResult:
    """What reading one file produced: the good records, the rejects, and how many rows it had."""

    records: list
    rejects: list[Reject]
    total_rows: int
    file: str = ""


@dataclass
class IngestReport:
    """Counts and rejects of one ingest run."""

    file: str
    kind: str  # "catalog" or "events"
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    embedded: int = 0
    rejected: int = 0
    rejects: list[Reject] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        """Rows read per second."""
        return self.read / self.seconds if self.seconds > 0 else float(self.read)

    @property
    def exit_code(self) -> int:
        """0 when every row landed, 2 when some were rejected."""
        return 2 if self.rejected else 0


class _Bad(Exception):
    """One row's problem; becomes a Reject with the row's line."""

    def __init__(self, field: str | None, reason: str, hint: str = ""):
        super().__init__(reason)
        self.field, self.reason, self.hint = field, reason, hint


# -- public entry points ---------------------------------------------------------------------


def read_catalog(path: str | Path, mapping: dict[str, str] | None = None) -> ReadResult:
    """Read catalog items from a file; other columns go to `Item.extra` (scalar values only)."""
    table = _read_table(Path(path))
    columns = _resolve(table, mapping, ITEM_FIELDS, required=("id", "title"), kind="catalog")
    used = {column for column in columns.values() if not column.startswith("=")}
    extra_columns = [c for c in table.columns if c not in used]
    items, rejects = _convert(
        table.rows, table.name, lambda row: _item(row, columns, extra_columns, table.typed), _item_key
    )
    return ReadResult(items, _by_line(table.rejects + rejects), table.total_rows, table.name)


def _by_line(rejects: list[Reject]) -> list[Reject]:
    """Rejects in file order (reading finds bad bytes first, conversion the rest)."""
    return sorted(rejects, key=lambda r: r.line)


def read_events(
    path: str | Path, mapping: dict[str, str] | None = None, known_item_ids: set[str] | None = None
) -> ReadResult:
    """Read behaviour events from a file. Without a type column: "rate" if a value is given, else "view"."""
    table = _read_table(Path(path))
    columns = _resolve(table, mapping, EVENT_FIELDS, required=("user_id", "timestamp"), kind="events")
    events, rejects = _convert(
        table.rows, table.name, lambda row: _event(row, columns, known_item_ids, now=None), None
    )
    return ReadResult(events, _by_line(table.rejects + rejects), table.total_rows, table.name)


def items_from_dicts(rows: list[dict]) -> tuple[list[Item], list[Reject]]:
    """Items from JSON objects (the HTTP API); rejects carry the list index as `line`."""
    columns = {name: name for name in ITEM_FIELDS}

    def build(row: Any) -> Item:
        row = _as_dict(row)
        return _item(row, columns, [key for key in row if key not in columns and key != "extra"], typed=True)

    return _convert(list(enumerate(rows)), "request", build, _item_key)


def events_from_dicts(rows: list[dict], known_item_ids: set[str] | None = None) -> tuple[list[Event], list[Reject]]:
    """Events from JSON objects (the HTTP API); a missing timestamp means now."""
    columns = {name: name for name in EVENT_FIELDS}
    now = time.time()
    return _convert(
        list(enumerate(rows)), "request", lambda row: _event(_as_dict(row), columns, known_item_ids, now=now), None
    )


def event_item_ids(rows: list) -> set[str]:
    """The item ids that event objects name, read as `events_from_dicts` reads them (to look up which are known)."""
    columns = {"item_id": "item_id"}
    named = set()
    for row in rows:
        try:
            item_id = _string(_get(_as_dict(row), columns, "item_id"), "item_id")
        except _Bad:
            continue  # events_from_dicts rejects this row with the reason
        if item_id is not None:
            named.add(item_id)
    return named


def ingest_catalog(
    path: str | Path,
    store: Store,
    mapping: dict[str, str] | None = None,
    index: Callable[[list[Item]], None] | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> IngestReport:
    """Read a catalog file into the store, and hand new or changed items to `index` batch by batch.

    Each batch is upserted first, then embedded, then marked embedded: a run killed halfway can be
    re-run, duplicates nothing, and re-embeds only the items that were not marked.
    """
    started = time.perf_counter()
    batch_size = max(1, batch_size)
    result = read_catalog(path, mapping)
    report = IngestReport(result.file, "catalog", read=result.total_rows, rejects=result.rejects,
                          rejected=len(result.rejects))
    with progress_bar(len(result.records), f"ingest {result.file}", progress, unit="rows", terminal_only=True) as bar:
        for start in range(0, len(result.records), batch_size):
            batch = result.records[start : start + batch_size]
            written = write_items(store, _noting(index, report), batch)
            report.inserted += len(written.inserted)
            report.updated += len(written.updated)
            report.unchanged += len(written.unchanged)
            report.embedded += len(written.embedded)
            bar.update(len(batch))
    report.seconds = time.perf_counter() - started
    _print_summary(report, progress)
    return report


def _noting(index: Callable[[list[Item]], None] | None, report: IngestReport) -> Callable[[list[Item]], None] | None:
    """`index`, whose failure says how far the ingest got and that re-running it resumes."""
    if index is None:
        return None

    def noted(pending: list[Item]) -> None:
        try:
            index(pending)
        except Exception as exc:
            exc.add_note(
                f"ingest of {report.file} stopped after {report.embedded} items were embedded; "
                "re-run the same command to resume (finished items are skipped)"
            )
            raise

    return noted


def ingest_events(
    path: str | Path,
    store: Store,
    mapping: dict[str, str] | None = None,
    progress: bool = True,
    on_events: Callable[[list[Event]], None] | None = None,
) -> IngestReport:
    """Read an events file into the store; `on_events` receives each batch of newly stored events."""
    started = time.perf_counter()
    known = store.item_ids()
    if not known:
        raise IngestError(
            f"the catalog in {store.url} is empty, so no event in {Path(path).name} can name a known item; "
            "ingest the catalog first"
        )
    result = read_events(path, mapping, known_item_ids=known)
    report = IngestReport(result.file, "events", read=result.total_rows, rejects=result.rejects,
                          rejected=len(result.rejects))
    with progress_bar(len(result.records), f"ingest {result.file}", progress, unit="rows", terminal_only=True) as bar:
        for start in range(0, len(result.records), EVENT_BATCH):
            batch = result.records[start : start + EVENT_BATCH]
            added = write_events(store, batch, on_new=on_events)
            report.inserted += added
            report.unchanged += len(batch) - added  # already stored, or repeated in the file
            bar.update(len(batch))
    report.seconds = time.perf_counter() - started
    _print_summary(report, progress)
    return report


def format_report(report: IngestReport, max_rejects: int = 20) -> str:
    """A human-readable summary: counts, throughput, then the first rejects."""
    lines = [
        f"{report.kind} {report.file}: read {report.read} rows in {report.seconds:.2f} s "
        f"({report.throughput:,.0f} rows/s)",
        f"  inserted {report.inserted}, updated {report.updated}, unchanged {report.unchanged}, "
        f"embedded {report.embedded}, rejected {report.rejected}",
    ]
    if report.rejects:
        lines.append("rejected rows:")
        lines.extend(f"  {reject}" for reject in report.rejects[:max_rejects])
        if len(report.rejects) > max_rejects:
            lines.append(f"  ... and {len(report.rejects) - max_rejects} more")
    return "\n".join(lines)


# -- reading files into rows -----------------------------------------------------------------


@dataclass
class _Table:
    name: str
    columns: list[str]
    rows: list[tuple[int, dict]]  # (line, raw row)
    rejects: list[Reject]
    total_rows: int
    typed: bool  # values are JSON-typed (JSONL, Parquet) rather than all strings (CSV)


def _read_table(path: Path) -> _Table:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(
            f"{path}: unknown file format {path.suffix or '(no extension)'!r}; "
            f"use one of {', '.join(sorted(FORMATS))} (rename the file if its content is one of these)"
        )
    try:
        if fmt == "parquet":
            return _read_parquet(path)
        with path.open("rb") as handle:
            lines = _decoded_lines(handle)
            return _read_jsonl(path.name, lines) if fmt == "jsonl" else _read_csv(path.name, lines, fmt)
    except OSError as exc:
        raise IngestError(f"cannot open {path}: {exc.strerror or exc}; check the path and its permissions") from None


def _decoded_lines(handle: Iterable[bytes]) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None if not UTF-8, why not) per physical line: one bad line stays one reject."""
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8"
            continue
        yield number, text, ""


def _read_jsonl(name: str, lines: Iterator[tuple[int, str | None, str]]) -> _Table:
    rows, rejects, columns, total = [], [], {}, 0
    for number, text, why in lines:
        if text is not None and not text.strip():
            continue
        total += 1
        if text is None:
            rejects.append(Reject(name, number, None, f"undecodable bytes: {why}", "save the file as UTF-8"))
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            rejects.append(Reject(name, number, None, f"not valid JSON: {exc.msg} at column {exc.colno}",
                                  "each line must be one JSON object"))
            continue
        if not isinstance(row, dict):
            rejects.append(Reject(name, number, None, f"a JSON {type(row).__name__}, not an object",
                                  "each line must be one JSON object"))
            continue
        columns.update(dict.fromkeys(row))
        rows.append((number, row))
    return _Table(name, list(columns), rows, rejects, total, typed=True)


def _read_csv(name: str, lines: Iterator[tuple[int, str | None, str]], fmt: str) -> _Table:
    # csv needs text: an undecodable line is fed as an empty line (so line numbers stay right) and
    # the row that spans it is rejected.
    bad: dict[int, str] = {}
    position = [0]

    def feed() -> Iterator[str]:
        for number, text, why in lines:
            position[0] = number
            if text is None:
                bad[number] = why
                text = "\n"
            yield text

    reader = csv.reader(feed(), delimiter="\t" if fmt == "tsv" else ",")
    header: list[str] | None = None
    rows, rejects, total = [], [], 0
    while True:
        start = position[0] + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            total += 1
            if "field limit" in str(exc):
                rejects.append(Reject(name, start, None, f"a field is longer than {csv.field_size_limit():,} characters",
                                      f"shorten it: text allows {MAX_TEXT:,} characters"))
            else:
                rejects.append(Reject(name, start, None, f"malformed CSV: {exc}", "check quoting on this line"))
            continue
        span = range(start, position[0] + 1)
        undecodable = [bad[n] for n in span if n in bad]
        if header is None:
            if undecodable:
                raise IngestError(f"{name}: the header line is not UTF-8 ({undecodable[0]}); save the file as UTF-8")
            if not values:
                continue
            header = [column.strip() for column in values]
            continue
        if undecodable:
            total += 1
            rejects.append(Reject(name, start, None, f"undecodable bytes: {undecodable[0]}", "save the file as UTF-8"))
            continue
        if not values:
            continue
        total += 1
        if len(values) != len(header):
            rejects.append(Reject(name, start, None, f"has {len(values)} columns, the header has {len(header)}",
                                  "check for an unquoted delimiter or a missing value"))
            continue
        rows.append((start, dict(zip(header, values))))
    if header is None:
        raise IngestError(f"{name} is empty: a CSV file needs a header line naming its columns")
    return _Table(name, header, rows, rejects, total, typed=False)


def _read_parquet(path: Path) -> _Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise IngestError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow (or convert to CSV/JSONL)") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise IngestError(f"cannot read Parquet file {path}: {exc}") from None
    # Parquet has no lines: a row's "line" is its 1-based row number.
    rows = [(number, row) for number, row in enumerate(table.to_pylist(), start=1)]
    return _Table(path.name, list(table.column_names), rows, [], len(rows), typed=True)


def _resolve(
    table: _Table, mapping: dict[str, str] | None, fields: tuple[str, ...], required: tuple[str, ...], kind: str
) -> dict[str, str]:
    """Our field -> the file's column (or "=constant"); raises when the mapping cannot work."""
    mapping = dict(mapping or {})
    for ours, theirs in mapping.items():
        if ours not in fields:
            raise IngestError(
                f"mapping names {ours!r}, which is not a {kind} field; the fields are {', '.join(fields)}"
            )
        if not theirs.startswith("=") and theirs not in table.columns:
            raise IngestError(
                f"mapping {ours}={theirs!r}: {table.name} has no column {theirs!r}; "
                f"its columns are {', '.join(table.columns) or '(none)'}"
            )
    columns = {name: name for name in fields if name in table.columns} | mapping
    for name in required:
        if name not in columns and table.rows:
            raise IngestError(
                f"{table.name} has no {name!r} column (its columns are {', '.join(table.columns)}); "
                f"map one, e.g. mapping={{{name!r}: 'yourColumn'}}, or give a constant with '=value'"
            )
    return columns


def _convert(
    rows: list[tuple[int, Any]], name: str, build: Callable[[Any], Any], key: Callable[[Any], str] | None
) -> tuple[list, list[Reject]]:
    """Build a record per row; a _Bad becomes a Reject, and a repeated key rejects the later row."""
    records, rejects, seen = [], [], {}
    for line, row in rows:
        try:
            record = build(row)
        except _Bad as bad:
            rejects.append(Reject(name, line, bad.field, bad.reason, bad.hint))
            continue
        if key is not None:
            record_key = key(record)
            if record_key in seen:
                rejects.append(Reject(name, line, "id", f"duplicate id {record_key!r}, first seen at line {seen[record_key]}",
                                      "each item may appear once per file; the first one was kept"))
                continue
            seen[record_key] = line
        records.append(record)
    return records, rejects


def _as_dict(row: Any) -> dict:
    if not isinstance(row, dict):
        raise _Bad(None, f"a {type(row).__name__}, not an object", "send a list of JSON objects")
    return row


def _item_key(item: Item) -> str:
    return item.id


# -- rows into records -----------------------------------------------------------------------


def _get(row: dict, columns: dict[str, str], name: str) -> Any:
    """The raw value of our field `name` in `row`; None when absent or blank."""
    column = columns.get(name)
    if column is None:
        return None
    value = column[1:] if column.startswith("=") else row.get(column)
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _item(row: dict, columns: dict[str, str], extra_columns: list[str], typed: bool) -> Item:
    item_id = _string(_get(row, columns, "id"), "id")
    if item_id is None:
        raise _Bad("id", "missing id", "every item needs a unique id")
    title = _string(_get(row, columns, "title"), "title", MAX_TITLE)
    if title is None:
        raise _Bad("title", "no title", "every item needs a title")
    extra = {}
    for column in extra_columns:
        value = _scalar(row.get(column), typed)
        if value is not None:
            extra[column] = value
    if isinstance(row.get("extra"), dict):
        extra |= {k: v for k, v in row["extra"].items() if _scalar(v, True) is not None}
    return Item(
        id=item_id,
        title=title,
        text=_string(_get(row, columns, "text"), "text", MAX_TEXT) or "",
        categories=_labels(_get(row, columns, "categories"), "categories"),
        tags=_labels(_get(row, columns, "tags"), "tags"),
        year=_year(_get(row, columns, "year")),
        creator=_string(_get(row, columns, "creator"), "creator", MAX_TITLE),
        popularity=_number(_get(row, columns, "popularity"), "popularity"),
        extra=extra,
    )


def _event(row: dict, columns: dict[str, str], known_item_ids: set[str] | None, now: float | None) -> Event:
    user_id = _string(_get(row, columns, "user_id"), "user_id")
    if user_id is None:
        raise _Bad("user_id", "missing user_id", "every event needs the user who did it")
    value = _number(_get(row, columns, "value"), "value")
    raw_type = _get(row, columns, "type")
    if raw_type is None:
        event_type = "rate" if value is not None else "view"
    else:
        event_type = str(raw_type).strip().lower()
    if event_type not in ALL_EVENT_TYPES:
        raise _Bad("type", f"unknown event type {raw_type!r}", f"use one of {', '.join(ALL_EVENT_TYPES)}")
    item_id = _string(_get(row, columns, "item_id"), "item_id")
    if item_id is None and event_type != "search":
        raise _Bad("item_id", f"missing item_id for a {event_type!r} event", "only search events may omit the item")
    if item_id is not None and known_item_ids is not None and item_id not in known_item_ids:
        raise _Bad("item_id", f"unknown item id {item_id!r}", "ingest the catalog that contains it first")
    if event_type == "rate":
        if value is None:
            raise _Bad("value", "a rate event without a value", "give the rating in the value column")
        low, high = RATING_RANGE
        if not low <= value <= high:
            raise _Bad("value", f"rating {value:g} is out of range {low:g}..{high:g}", "ratings run from 1 to 5 or 1 to 10")
    raw_ts = _get(row, columns, "timestamp")
    if raw_ts is None:
        if now is None:
            raise _Bad("timestamp", "missing timestamp", "give epoch seconds/milliseconds or an ISO 8601 date")
        timestamp = now
    else:
        timestamp = _timestamp(raw_ts)
    text = _string(_get(row, columns, "text"), "text", MAX_TEXT)
    return normalize_event(Event(user_id=user_id, type=event_type, timestamp=timestamp, item_id=item_id,
                                 value=value, text=text))


# -- field parsers: each raises _Bad naming its field ------------------------------------------


def _string(value: Any, name: str, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad(name, f"expected text, got a {type(value).__name__}", f"give {name} as a string")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an id written as 12.0 by a spreadsheet
    text = str(value)
    if limit is not None and len(text) > limit:
        raise _Bad(name, f"{len(text):,} characters, more than the {limit:,} allowed",
                   "shorten it, or map a shorter column")
    if "\x00" in text:
        raise _Bad(name, "contains a NUL character", "remove it (PostgreSQL cannot store it)")
    return text


def _labels(value: Any, name: str) -> list[str]:
    """A JSON list (of strings or of {"name": ...} objects) or a string split on | or ,."""
    if value is None:
        return []
    if isinstance(value, str):
        if value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _Bad(name, f"looks like a JSON list but is not valid JSON: {value[:60]!r}",
                           'use ["a", "b"] or a|b') from None
        else:
            separator = "|" if "|" in value else ","
            return [part.strip() for part in value.split(separator) if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise _Bad(name, f"expected a list or a |-separated string, got a {type(value).__name__}",
                   'use ["a", "b"] or a|b')
    labels = []
    for entry in value:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            entry = entry["name"]  # TMDB style: [{"id": 28, "name": "Action"}]
        if isinstance(entry, bool) or not isinstance(entry, (str, int, float)):
            raise _Bad(name, f"list entries must be text, got a {type(entry).__name__}",
                       'use ["a", "b"] or [{"name": "a"}]')
        if str(entry).strip():
            labels.append(str(entry).strip())
    return labels


def _year(value: Any) -> int | None:
    if value is None:
        return None
    year: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        year = value
    elif isinstance(value, float) and value.is_integer():
        year = int(value)
    elif isinstance(value, (date, datetime)):
        year = value.year
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text) and float(text).is_integer():
            year = int(float(text))  # "1995" or a spreadsheet's "1995.0"
        else:
            try:
                year = datetime.fromisoformat(text).year
            except ValueError:
                year = None
    if year is None or not -9999 <= year <= 9999:
        raise _Bad("year", f"{value!r} is not a year or a date", "use a year like 1995 or a date like 1995-07-20")
    return year


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    hint = f"give {name} as a plain number like 4 or 3.5"
    if isinstance(value, bool):
        raise _Bad(name, f"expected a number, got {value!r}", hint)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Bad(name, f"{value!r} is not a number", hint) from None
    if not math.isfinite(number):
        raise _Bad(name, f"{value!r} is not a finite number", hint)
    return number


def _timestamp(value: Any) -> float:
    """Epoch seconds, epoch milliseconds (values past year 5000 in seconds), or ISO 8601."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise _Bad("timestamp", f"{value!r} is not a time",
                           "use epoch seconds, epoch milliseconds or ISO 8601 like 2024-05-01T12:00:00Z") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp()
    if number is None or not math.isfinite(number) or number < 0:
        raise _Bad("timestamp", f"{value!r} is not a time", "use epoch seconds, epoch milliseconds or ISO 8601")
    return number / 1000.0 if number > 1e11 else number


def _scalar(value: Any, typed: bool) -> str | int | float | bool | None:
    """A value fit for Item.extra: scalars only; CSV text that is a whole number becomes a number."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else None
    if not isinstance(value, str):
        return None  # lists and objects do not fit vector-store metadata
    text = value.strip()
    if not text or "\x00" in text:
        return None
    if not typed:
        if text[0] in "[{":
            return None  # JSON inside a CSV cell
        if _NUMBER.fullmatch(text) and not _LEADING_ZERO.match(text):  # "007" stays text: it is a code
            return float(text) if "." in text else int(text)
    return text


# -- progress --------------------------------------------------------------------------------


def _print_summary(report: IngestReport, progress: bool) -> None:
    if progress:
        print(
            f"{report.kind} {report.file}: {report.read} rows in {report.seconds:.2f} s "
            f"({report.throughput:,.0f} rows/s); inserted {report.inserted}, updated {report.updated}, "
            f"unchanged {report.unchanged}, embedded {report.embedded}, rejected {report.rejected}",
            file=sys.stderr,
        )


def parse_mapping(pairs: list[str], flag: str = "--map") -> dict[str, str]:
    """['id=sku', 'type==view'] -> {'id': 'sku', 'type': '=view'}: FIELD=COLUMN, or FIELD==CONSTANT."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise IngestError(f"{flag} {pair!r}: write FIELD=COLUMN (e.g. id=movieId) or FIELD==CONSTANT (e.g. type==rate)")
        mapping[field.strip()] = column.strip()
    return mapping
