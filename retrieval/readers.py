"""Reading catalog and event files into rows: CSV/TSV (delimiter sniffed), JSONL and Parquet,
with the line number of every row, and column mappings resolved against the header."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from core.errors import IngestError
from retrieval.records import Item
from retrieval.rows import FORMATS, MAX_TEXT, Bad, Reject


# -- reading files into rows -----------------------------------------------------------------


@dataclass
class _Table:
    name: str
    columns: list[str]
    rows: list[tuple[int, dict]]  # (line, raw row)
    rejects: list[Reject]
    total_rows: int
    typed: bool  # values are JSON-typed (JSONL, Parquet) rather than all strings (CSV)


def read_table(path: Path) -> _Table:
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


def resolve(
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


def convert(
    rows: list[tuple[int, Any]], name: str, build: Callable[[Any], Any], key: Callable[[Any], str] | None
) -> tuple[list, list[Reject]]:
    """Build a record per row; a Bad becomes a Reject, and a repeated key rejects the later row."""
    records, rejects, seen = [], [], {}
    for line, row in rows:
        try:
            record = build(row)
        except Bad as bad:
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


def as_dict(row: Any) -> dict:
    if not isinstance(row, dict):
        raise Bad(None, f"a {type(row).__name__}, not an object", "send a list of JSON objects")
    return row


def item_key(item: Item) -> str:
    return item.id
