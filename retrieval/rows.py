"""Rows into records: each field parsed on its own, and a bad value raises `Bad` naming the field,
what was wrong and how to fix it (the ingest turns it into a Reject with the row's line)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from retrieval.records import ALL_EVENT_TYPES, Event, Item
from retrieval.store import normalize_event


MAX_TITLE = 500
MAX_TEXT = 20_000
# 0.5 rather than 1: MovieLens rates in half stars from 0.5 to 5.
RATING_RANGE = (0.5, 10.0)
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
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



class Bad(Exception):
    """One row's problem; becomes a Reject with the row's line."""

    def __init__(self, field: str | None, reason: str, hint: str = ""):
        super().__init__(reason)
        self.field, self.reason, self.hint = field, reason, hint



# -- rows into records -----------------------------------------------------------------------


def field_value(row: dict, columns: dict[str, str], name: str) -> Any:
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


def to_item(row: dict, columns: dict[str, str], extra_columns: list[str], typed: bool) -> Item:
    item_id = string(field_value(row, columns, "id"), "id")
    if item_id is None:
        raise Bad("id", "missing id", "every item needs a unique id")
    title = string(field_value(row, columns, "title"), "title", MAX_TITLE)
    if title is None:
        raise Bad("title", "no title", "every item needs a title")
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
        text=string(field_value(row, columns, "text"), "text", MAX_TEXT) or "",
        categories=_labels(field_value(row, columns, "categories"), "categories"),
        tags=_labels(field_value(row, columns, "tags"), "tags"),
        year=_year(field_value(row, columns, "year")),
        creator=string(field_value(row, columns, "creator"), "creator", MAX_TITLE),
        popularity=_number(field_value(row, columns, "popularity"), "popularity"),
        extra=extra,
        published_at=_published(field_value(row, columns, "published_at")),
    )


def to_event(row: dict, columns: dict[str, str], known_item_ids: set[str] | None, now: float | None) -> Event:
    user_id = string(field_value(row, columns, "user_id"), "user_id")
    if user_id is None:
        raise Bad("user_id", "missing user_id", "every event needs the user who did it")
    value = _number(field_value(row, columns, "value"), "value")
    raw_type = field_value(row, columns, "type")
    if raw_type is None:
        event_type = "rate" if value is not None else "view"
    else:
        event_type = str(raw_type).strip().lower()
    if event_type not in ALL_EVENT_TYPES:
        raise Bad("type", f"unknown event type {raw_type!r}", f"use one of {', '.join(ALL_EVENT_TYPES)}")
    item_id = string(field_value(row, columns, "item_id"), "item_id")
    if item_id is None and event_type != "search":
        raise Bad("item_id", f"missing item_id for a {event_type!r} event", "only search events may omit the item")
    if item_id is not None and known_item_ids is not None and item_id not in known_item_ids:
        raise Bad("item_id", f"unknown item id {item_id!r}", "ingest the catalog that contains it first")
    if event_type == "rate":
        if value is None:
            raise Bad("value", "a rate event without a value", "give the rating in the value column")
        low, high = RATING_RANGE
        if not low <= value <= high:
            raise Bad("value", f"rating {value:g} is out of range {low:g}..{high:g}", "ratings run from 1 to 5 or 1 to 10")
    raw_ts = field_value(row, columns, "timestamp")
    if raw_ts is None:
        if now is None:
            raise Bad("timestamp", "missing timestamp", "give epoch seconds/milliseconds or an ISO 8601 date")
        timestamp = now
    else:
        timestamp = _timestamp(raw_ts)
    text = string(field_value(row, columns, "text"), "text", MAX_TEXT)
    return normalize_event(Event(user_id=user_id, type=event_type, timestamp=timestamp, item_id=item_id,
                                 value=value, text=text))


class _Unusual(Exception):
    """A value the fast path of `EventParser` leaves to `to_event`."""


class EventParser:
    """`to_event` for every row of one file, faster: the columns are looked up once and a plain row
    (text values that are well-formed) is parsed inline; any other row goes through `to_event`, so
    results and messages are the same (tests/test_bulk_ingest.py checks both on the same rows)."""

    _TYPES = frozenset(ALL_EVENT_TYPES)

    def __init__(self, columns: dict[str, str], known_item_ids: set[str] | None, now: float | None = None):
        self.columns, self.known, self.now = columns, known_item_ids, now
        fields = ("user_id", "item_id", "type", "timestamp", "value", "text")
        # Per field: the column to read, or None and the constant ("=value") or None for an absent field.
        self._from = tuple(None if columns.get(f, "=").startswith("=") else columns[f] for f in fields)
        self._constant = tuple(field_value({}, columns, f) for f in fields)

    def __call__(self, row: dict) -> Event:
        try:
            return self._plain(row)
        except (_Unusual, ValueError):
            return to_event(row, self.columns, self.known, self.now)

    def _plain(self, row: dict) -> Event:
        (user_col, item_col, type_col, ts_col, value_col, text_col), constant = self._from, self._constant
        user_id = _plain_text(row.get(user_col) if user_col is not None else constant[0])
        item_id = _plain_text(row.get(item_col) if item_col is not None else constant[1])
        raw_type = _plain_text(row.get(type_col) if type_col is not None else constant[2])
        value = _plain_number(row.get(value_col) if value_col is not None else constant[4])
        timestamp = _plain_number(row.get(ts_col) if ts_col is not None else constant[3])
        text = _plain_text(row.get(text_col) if text_col is not None else constant[5])
        event_type = raw_type.lower() if raw_type is not None else "rate" if value is not None else "view"
        if (user_id is None or timestamp is None or timestamp < 0 or event_type not in self._TYPES
                or (item_id is None and event_type != "search")
                or (item_id is not None and self.known is not None and item_id not in self.known)
                or (event_type == "rate" and (value is None or not RATING_RANGE[0] <= value <= RATING_RANGE[1]))
                or (text is not None and len(text) > MAX_TEXT)):
            raise _Unusual
        if timestamp > 1e11:
            timestamp /= 1000.0  # epoch milliseconds, as `_timestamp` reads them
        return Event(user_id=user_id, type=event_type, timestamp=timestamp, item_id=item_id, value=value, text=text)


def _plain_text(value: Any) -> str | None:
    """`string(field_value(...))` for a plain string (None when blank); _Unusual for anything else."""
    if value is None:
        return None
    if type(value) is not str or "\x00" in value:
        raise _Unusual
    return value.strip() or None


def _plain_number(value: Any) -> float | None:
    """A finite number from a string, int or float (None when blank); ValueError or _Unusual otherwise."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        value = value.strip()
        if not value:
            return None
    elif kind is not int and kind is not float:
        raise _Unusual
    number = float(value)
    if not math.isfinite(number):
        raise _Unusual
    return number


# -- field parsers: each raises Bad naming its field ------------------------------------------


def string(value: Any, name: str, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Bad(name, f"expected text, got a {type(value).__name__}", f"give {name} as a string")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an id written as 12.0 by a spreadsheet
    text = str(value)
    if limit is not None and len(text) > limit:
        raise Bad(name, f"{len(text):,} characters, more than the {limit:,} allowed",
                   "shorten it, or map a shorter column")
    if "\x00" in text:
        raise Bad(name, "contains a NUL character", "remove it (PostgreSQL cannot store it)")
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
                raise Bad(name, f"looks like a JSON list but is not valid JSON: {value[:60]!r}",
                           'use ["a", "b"] or a|b') from None
        else:
            separator = "|" if "|" in value else ","
            return [part.strip() for part in value.split(separator) if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise Bad(name, f"expected a list or a |-separated string, got a {type(value).__name__}",
                   'use ["a", "b"] or a|b')
    labels = []
    for entry in value:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            entry = entry["name"]  # TMDB style: [{"id": 28, "name": "Action"}]
        if isinstance(entry, bool) or not isinstance(entry, (str, int, float)):
            raise Bad(name, f"list entries must be text, got a {type(entry).__name__}",
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
        raise Bad("year", f"{value!r} is not a year or a date", "use a year like 1995 or a date like 1995-07-20")
    return year


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    hint = f"give {name} as a plain number like 4 or 3.5"
    if isinstance(value, bool):
        raise Bad(name, f"expected a number, got {value!r}", hint)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Bad(name, f"{value!r} is not a number", hint) from None
    if not math.isfinite(number):
        raise Bad(name, f"{value!r} is not a finite number", hint)
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
                raise Bad("timestamp", f"{value!r} is not a time",
                           "use epoch seconds, epoch milliseconds or ISO 8601 like 2024-05-01T12:00:00Z") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp()
    if number is None or not math.isfinite(number) or number < 0:
        raise Bad("timestamp", f"{value!r} is not a time", "use epoch seconds, epoch milliseconds or ISO 8601")
    return number / 1000.0 if number > 1e11 else number


def _published(value: Any) -> float | None:
    """An item's publication time, read as event timestamps are; None when the catalog gives none."""
    if value is None:
        return None
    try:
        return _timestamp(value)
    except Bad as bad:
        raise Bad("published_at", bad.reason, bad.hint) from None


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
