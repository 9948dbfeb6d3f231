"""Catalog and behaviour ingest from CSV/TSV, JSONL and (when pyarrow is installed) Parquet.

Bad rows never stop a file: each becomes a `Reject` naming file, line, field, reason and a hint,
and the good rows still land. Only a file that cannot be read at all raises `IngestError`.

A mapping renames columns: `{"id": "movieId", "text": "overview"}` means our field `id` is the
file's column `movieId`. A value starting with "=" is a constant for every row, e.g.
`{"type": "=rate"}` for a ratings file that has no type column.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from core.errors import IngestError
from retrieval.progress import progress_bar
from retrieval.readers import CHUNK_ROWS, RowStream, as_dict, convert, item_key, read_table, resolve, stream_table
from retrieval.records import Event, Item
from retrieval.rows import Bad, EventParser, Reject, field_value, string, to_event, to_item
from retrieval.store import Store
from retrieval.writes import write_event_batches, write_items


ITEM_FIELDS = ("id", "title", "text", "categories", "tags", "year", "creator", "popularity", "published_at")
EVENT_FIELDS = ("user_id", "item_id", "type", "timestamp", "value", "text")
EVENT_BATCH = 100_000  # events staged and moved into the table at a time by an events ingest
EVENT_COMMIT = 500_000  # events per transaction: five moves, each index page they touch written once
MAX_REJECTS_KEPT = 10_000  # in an events report; more are counted, not kept (memory stays bounded)


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



# -- public entry points ---------------------------------------------------------------------


def read_catalog(path: str | Path, mapping: dict[str, str] | None = None) -> ReadResult:
    """Read catalog items from a file; other columns go to `Item.extra` (scalar values only)."""
    table = read_table(Path(path))
    columns = resolve(table, mapping, ITEM_FIELDS, required=("id", "title"), kind="catalog")
    used = {column for column in columns.values() if not column.startswith("=")}
    extra_columns = [c for c in table.columns if c not in used]
    items, rejects = convert(
        table.rows, table.name, lambda row: to_item(row, columns, extra_columns, table.typed), item_key
    )
    return ReadResult(items, _by_line(table.rejects + rejects), table.total_rows, table.name)


def _by_line(rejects: list[Reject]) -> list[Reject]:
    """Rejects in file order (reading finds bad bytes first, conversion the rest)."""
    return sorted(rejects, key=lambda r: r.line)


def read_events(
    path: str | Path, mapping: dict[str, str] | None = None, known_item_ids: set[str] | None = None
) -> ReadResult:
    """Read behaviour events from a file. Without a type column: "rate" if a value is given, else "view"."""
    table = read_table(Path(path))
    columns = resolve(table, mapping, EVENT_FIELDS, required=("user_id", "timestamp"), kind="events")
    events, rejects = convert(
        table.rows, table.name, lambda row: to_event(row, columns, known_item_ids, now=None), None
    )
    return ReadResult(events, _by_line(table.rejects + rejects), table.total_rows, table.name)


def items_from_dicts(rows: list[dict]) -> tuple[list[Item], list[Reject]]:
    """Items from JSON objects (the HTTP API); rejects carry the list index as `line`."""
    columns = {name: name for name in ITEM_FIELDS}

    def build(row: Any) -> Item:
        row = as_dict(row)
        return to_item(row, columns, [key for key in row if key not in columns and key != "extra"], typed=True)

    return convert(list(enumerate(rows)), "request", build, item_key)


def events_from_dicts(rows: list[dict], known_item_ids: set[str] | None = None) -> tuple[list[Event], list[Reject]]:
    """Events from JSON objects (the HTTP API); a missing timestamp means now."""
    columns = {name: name for name in EVENT_FIELDS}
    now = time.time()
    return convert(
        list(enumerate(rows)), "request", lambda row: to_event(as_dict(row), columns, known_item_ids, now=now), None
    )


def event_item_ids(rows: list) -> set[str]:
    """The item ids that event objects name, read as `events_from_dicts` reads them (to look up which are known)."""
    columns = {"item_id": "item_id"}
    named = set()
    for row in rows:
        try:
            item_id = string(field_value(as_dict(row), columns, "item_id"), "item_id")
        except Bad:
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
    batch_size: int = EVENT_BATCH,
    commit_size: int = EVENT_COMMIT,
) -> IngestReport:
    """Read an events file into the store; `on_events` receives each batch of newly stored events.

    The file is read a chunk at a time and stored `batch_size` events at a time, `commit_size` a
    transaction, so memory stays bounded whatever its size; the report keeps the first
    `MAX_REJECTS_KEPT` rejects and counts them all.
    """
    started = time.perf_counter()
    known = store.item_ids()
    if not known:
        raise IngestError(
            f"the catalog in {store.url} is empty, so no event in {Path(path).name} can name a known item; "
            "ingest the catalog first"
        )
    with stream_table(Path(path), min(CHUNK_ROWS, max(1, batch_size))) as table:
        columns = resolve(table, mapping, EVENT_FIELDS, required=("user_id", "timestamp"), kind="events")
        if table.typed:  # JSONL keys are known from the first chunk only: a later row may hold more
            columns = {name: name for name in EVENT_FIELDS} | columns
        report = IngestReport(table.name, "events")
        chunks = _chunk_events(table, EventParser(columns, known, now=None), report)
        with progress_bar(None, f"ingest {table.name}", progress, unit="rows", terminal_only=True) as bar:
            for written in write_event_batches(store, chunks, batch_size, on_new=on_events, commit_size=commit_size):
                report.inserted += written.new
                report.unchanged += written.events - written.new  # already stored, or repeated in the file
                bar.update(written.events)
    report.seconds = time.perf_counter() - started
    _print_summary(report, progress)
    return report


def _chunk_events(table: RowStream, build: EventParser, report: IngestReport) -> Iterator[list[Event]]:
    """The events of each chunk of the file; rows read and rejected are counted in `report`."""
    for chunk in table.chunks:
        events, rejects = convert(chunk.rows, table.name, build, None)
        rejects = _by_line(chunk.rejects + rejects)
        report.read += chunk.total_rows
        report.rejected += len(rejects)
        report.rejects += rejects[: max(0, MAX_REJECTS_KEPT - len(report.rejects))]
        yield events


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
        if report.rejected > max_rejects:
            lines.append(f"  ... and {report.rejected - max_rejects} more")
    return "\n".join(lines)


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
