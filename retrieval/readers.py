"""Reading catalog and event files into rows: CSV/TSV, JSONL and Parquet, with the line number of
every row, and column mappings resolved against the header.

`stream_table` reads a file a chunk at a time (memory bounded by the chunk, whatever the file's
size); `read_table` is the same stream gathered into one table, for callers that need every row.
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator

from core.errors import IngestError
from retrieval.records import Item
from retrieval.rows import FORMATS, MAX_TEXT, Bad, Reject

CHUNK_ROWS = 10_000  # rows per chunk of a streamed file
READ_BYTES = 1 << 20  # bytes of lines read and decoded at once


# -- reading files into rows -----------------------------------------------------------------


@dataclass
class Chunk:
    """Consecutive rows of a file: the readable ones with their line, and the rejected ones."""

    rows: list[tuple[int, Any]] = field(default_factory=list)  # (line, raw row)
    rejects: list[Reject] = field(default_factory=list)
    total_rows: int = 0  # rows read, readable or not (blank lines do not count)


@dataclass
class RowStream:
    """A file being read: its columns, known from the header (or, for JSONL, the first chunk's keys),
    and its chunks, which can be iterated once."""

    name: str
    columns: list[str]
    typed: bool  # values are JSON-typed (JSONL, Parquet) rather than all strings (CSV)
    chunks: Iterator[Chunk]
    has_rows: bool  # the first chunk holds a readable row


@dataclass
class _Table:
    name: str
    columns: list[str]
    rows: list[tuple[int, dict]]  # (line, raw row)
    rejects: list[Reject]
    total_rows: int
    typed: bool

    @property
    def has_rows(self) -> bool:
        return bool(self.rows)


def read_table(path: Path) -> _Table:
    """The whole file in memory (one chunk): every row, every reject, the union of JSONL keys."""
    with stream_table(path, chunk_rows=None) as stream:
        rows, rejects, total = [], [], 0
        for chunk in stream.chunks:
            rows += chunk.rows
            rejects += chunk.rejects
            total += chunk.total_rows
        return _Table(stream.name, stream.columns, rows, rejects, total, stream.typed)


@contextmanager
def stream_table(path: Path, chunk_rows: int | None = CHUNK_ROWS) -> Iterator[RowStream]:
    """Open `path` and read it `chunk_rows` rows at a time (None: the whole file as one chunk)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(
            f"{path}: unknown file format {path.suffix or '(no extension)'!r}; "
            f"use one of {', '.join(sorted(FORMATS))} (rename the file if its content is one of these)"
        )
    if fmt == "parquet":
        yield _parquet_stream(path, chunk_rows)
        return
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise IngestError(f"cannot open {path}: {exc.strerror or exc}; check the path and its permissions") from None
    with handle:
        bad: dict[int, str] = {}  # line number -> why it is not UTF-8, until its row is rejected
        lines = _text_lines(handle, path, bad)
        if fmt == "jsonl":
            yield _stream(path.name, _chunked(_jsonl_entries(path.name, lines, bad), chunk_rows), typed=True)
        else:
            header, chunks = _csv_entries(path.name, lines, bad, fmt, chunk_rows)
            yield _stream(path.name, chunks, typed=False, header=header)


def _stream(name: str, chunks: Iterator[Chunk], typed: bool, header: list[str] | None = None) -> RowStream:
    """The first chunk is read at once, so the stream knows whether the file has rows and, for
    JSONL, its keys."""
    first = next(chunks)
    columns = header if header is not None else list(dict.fromkeys(key for _, row in first.rows for key in row))
    return RowStream(name, columns, typed, chain([first], chunks), bool(first.rows))


def _chunked(entries: Iterator, chunk_rows: int | None) -> Iterator[Chunk]:
    """Entries (a Reject, or a (line, row) pair, per row read) in chunks of `chunk_rows` rows read
    (the last may hold fewer); at least one chunk, empty for an empty file."""
    limit, chunk, yielded = chunk_rows or sys.maxsize, Chunk(), False
    for entry in entries:
        if isinstance(entry, Reject):
            chunk.rejects.append(entry)
        else:
            chunk.rows.append(entry)
        chunk.total_rows += 1
        if chunk.total_rows >= limit:
            yield chunk
            chunk, yielded = Chunk(), True
    if chunk.total_rows or not yielded:
        yield chunk


def _text_lines(handle: Any, path: Path, bad: dict[int, str]) -> Iterator[str]:
    """The file's lines as text, decoded a block at a time (a loop per line costs more than the
    parsing). A line that is not UTF-8 becomes an empty line, and why goes into `bad` under its
    number, so one bad line stays one reject and line numbers stay right."""

    def blocks() -> Iterator[list[str]]:
        number = 0
        try:
            for block in iter(lambda: handle.readlines(READ_BYTES), []):
                try:
                    lines = [raw.decode("utf-8") for raw in block]
                except UnicodeDecodeError:
                    lines = [_decoded(raw, number + k, bad) for k, raw in enumerate(block, start=1)]
                if number == 0 and lines[0].startswith("\ufeff"):
                    lines[0] = lines[0][1:]  # a byte-order mark opens the file, not its first column
                number += len(block)
                yield lines
        except OSError as exc:
            raise IngestError(f"cannot read {path}: {exc.strerror or exc}; check the file and its disk") from None

    return chain.from_iterable(blocks())


def _decoded(raw: bytes, number: int, bad: dict[int, str]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad[number] = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8"
        return "\n"


def _jsonl_entries(name: str, lines: Iterator[str], bad: dict[int, str]) -> Iterator:
    for number, text in enumerate(lines, start=1):
        if bad and number in bad:
            yield Reject(name, number, None, f"undecodable bytes: {bad.pop(number)}", "save the file as UTF-8")
            continue
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Reject(name, number, None, f"not valid JSON: {exc.msg} at column {exc.colno}",
                         "each line must be one JSON object")
            continue
        if not isinstance(row, dict):
            yield Reject(name, number, None, f"a JSON {type(row).__name__}, not an object",
                         "each line must be one JSON object")
            continue
        yield number, row


def _csv_entries(name: str, lines: Iterator[str], bad: dict[int, str], fmt: str,
                 chunk_rows: int | None) -> tuple[list[str], Iterator[Chunk]]:
    """The header (read at once) and the chunks of the rows after it. `reader.line_num` counts
    the lines read so far, so a row spans the lines after the previous row's last up to it."""
    reader = csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",")
    early: list[Reject] = []  # malformed lines before the header still count as rows
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            raise IngestError(f"{name} is empty: a CSV file needs a header line naming its columns") from None
        except csv.Error as exc:
            early.append(_malformed(name, start, exc))
            continue
        undecodable = [bad.pop(n) for n in range(start, reader.line_num + 1) if n in bad]
        if undecodable:
            raise IngestError(f"{name}: the header line is not UTF-8 ({undecodable[0]}); save the file as UTF-8")
        if values:
            header = [column.strip() for column in values]
            return header, _csv_chunks(name, reader, header, bad, early, chunk_rows)


def _csv_chunks(name: str, reader: Any, header: list[str], bad: dict[int, str], early: list[Reject],
                chunk_rows: int | None) -> Iterator[Chunk]:
    """The rows after the header, in chunks (the loop of a large ingest: written out, not layered)."""
    limit, chunk, yielded, end = chunk_rows or sys.maxsize, Chunk([], early, len(early)), False, reader.line_num
    while True:
        try:
            for values in reader:
                start, end = end + 1, reader.line_num
                if bad and (undecodable := [bad.pop(n) for n in range(start, end + 1) if n in bad]):
                    # only undecodable lines are ever in `bad`; each is taken out by the row that spans it
                    chunk.rejects.append(Reject(name, start, None, f"undecodable bytes: {undecodable[0]}",
                                                "save the file as UTF-8"))
                elif not values:
                    continue
                elif len(values) != len(header):
                    chunk.rejects.append(Reject(name, start, None, f"has {len(values)} columns, the header has {len(header)}",
                                                "check for an unquoted delimiter or a missing value"))
                else:
                    chunk.rows.append((start, dict(zip(header, values))))
                chunk.total_rows += 1
                if chunk.total_rows >= limit:
                    yield chunk
                    chunk, yielded = Chunk(), True
            break
        except csv.Error as exc:
            start, end = end + 1, reader.line_num
            chunk.rejects.append(_malformed(name, start, exc))
            chunk.total_rows += 1
            if chunk.total_rows >= limit:
                yield chunk
                chunk, yielded = Chunk(), True
    if chunk.total_rows or not yielded:
        yield chunk


def _malformed(name: str, line: int, exc: csv.Error) -> Reject:
    if "field limit" in str(exc):
        return Reject(name, line, None, f"a field is longer than {csv.field_size_limit():,} characters",
                      f"shorten it: text allows {MAX_TEXT:,} characters")
    return Reject(name, line, None, f"malformed CSV: {exc}", "check quoting on this line")


def _parquet_stream(path: Path, chunk_rows: int | None) -> RowStream:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise IngestError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow (or convert to CSV/JSONL)") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise IngestError(f"cannot read Parquet file {path}: {exc}") from None

    def entries() -> Iterator[tuple[int, dict]]:
        line = 0  # Parquet has no lines: a row's "line" is its 1-based row number
        try:
            for batch in parquet.iter_batches(batch_size=chunk_rows or 65_536):
                for row in batch.to_pylist():
                    line += 1
                    yield line, row
        except Exception as exc:
            raise IngestError(f"cannot read Parquet file {path}: {exc}") from None

    return _stream(path.name, _chunked(entries(), chunk_rows), typed=True, header=list(parquet.schema_arrow.names))


def resolve(
    table: _Table | RowStream, mapping: dict[str, str] | None, fields: tuple[str, ...], required: tuple[str, ...], kind: str
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
        if name not in columns and table.has_rows:
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
