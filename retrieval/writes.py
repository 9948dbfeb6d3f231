"""The one way items and events enter the store: the file ingest, the Engine, the HTTP API and the
evaluation all write through these functions, so they cannot drift apart."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from retrieval.records import Event, Item
from retrieval.store import EventLoader, Store


@dataclass
class ItemsWritten:
    """What one `write_items` call did: ids inserted, changed and identical, and the items it embedded."""

    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    embedded: list[Item] = field(default_factory=list)

    @property
    def upserted(self) -> int:
        """Items new or changed by this call."""
        return len(self.inserted) + len(self.updated)


def write_items(store: Store, index: Callable[[list[Item]], None] | None, items: list[Item]) -> ItemsWritten:
    """Upsert items, embed those whose current version is not embedded yet, and mark them embedded.

    Upsert first, embed second, mark last: a write stopped halfway can be repeated, duplicates
    nothing, and embeds only what was not marked (also items an earlier, interrupted write stored).
    Without `index` (no vector store), items are stored and stay pending.
    """
    upserted = store.upsert_items(items)
    written = ItemsWritten(upserted.inserted, upserted.updated, upserted.unchanged)
    if index is not None:
        pending = store.items_needing_embedding([item.id for item in items])
        if pending:
            index(pending)
            store.mark_embedded(pending)
            written.embedded = pending
    return written


def write_events(store: Store, events: list[Event], on_new: Callable[[list[Event]], None] | None = None) -> int:
    """Store events (an event already stored is not stored twice); returns how many were new.

    `on_new` receives the events that were not stored before, once each, e.g. to update a model
    incrementally; a repeat inside `events` counts once.
    """
    if not events:
        return 0
    before = store.stored_event_ids(events) if on_new is not None else set()
    added = store.add_events(events)
    if on_new is not None:
        fresh = {event.id: event for event in events if event.id not in before}
        if fresh:
            on_new(list(fresh.values()))
    return added


@dataclass
class EventsWritten:
    """One batch that `write_event_batches` stored: how many events it held, how many were new."""

    events: int
    new: int


def write_event_batches(
    store: Store, chunks: Iterable[list[Event]], batch_size: int, on_new: Callable[[list[Event]], None] | None = None,
    commit_size: int | None = None,
) -> Iterator[EventsWritten]:
    """Store events `batch_size` at a time; yields what each batch did.

    `write_events` for files of millions of events, which arrive in `chunks` of any size: one
    connection held throughout, each batch staged and then moved into the events table by the
    database, in a worker thread while the next batch is read and validated. A transaction
    commits once `commit_size` events are moved (default: every batch); a run stopped halfway
    leaves whole transactions stored, and running it again stores the rest. `on_new` is as in
    `write_events`; with it, each batch is stored and committed before the next is read.
    """
    commit_size = max(1, commit_size or batch_size)
    with store.event_loader() as loader, ThreadPoolExecutor(1, thread_name_prefix="recassist-events") as mover:
        pending: Future | None = None
        moved = 0  # since the last commit
        for rows, events in _batches(chunks, max(1, batch_size), keep_events=on_new is not None):
            rows.sort(key=loader.order)  # in the stored key's order a batch walks its index once
            if pending is not None:
                yield pending.result()
                pending = None
            loader.stage(rows)
            if on_new is None:
                moved += len(rows)
                commit = moved >= commit_size
                moved = 0 if commit else moved
                pending = mover.submit(_store_staged, loader, len(rows), commit)
                del rows  # staged: not held while the next batch is read
            else:
                yield _store_staged_new(loader, events, on_new)
        if pending is not None:
            yield pending.result()
        loader.commit()


def _batches(chunks: Iterable[list[Event]], size: int, keep_events: bool) -> Iterator[tuple[list[tuple], list[Event]]]:
    """Rows for `size` events at a time (and those events, when `keep_events`). Events become rows
    as they come: a batch held as tuples costs Python's garbage collector nothing, while 100,000
    Event objects alive at once had it scan them over and over (40% of reading and validating)."""
    rows: list[tuple] = []
    events: list[Event] = []
    for chunk in chunks:
        rows += EventLoader.rows(chunk)
        if keep_events:
            events += chunk
        while len(rows) >= size:
            yield rows[:size], events[:size]
            rows, events = rows[size:], events[size:]
    if rows:
        yield rows, events


def _store_staged(loader: EventLoader, count: int, commit: bool = True) -> EventsWritten:
    return EventsWritten(count, loader.store(commit=commit)[0])


def _store_staged_new(loader: EventLoader, events: list[Event], on_new: Callable[[list[Event]], None]) -> EventsWritten:
    added, new_ids = loader.store(new_ids=True)
    fresh = set(new_ids or ())
    new = {event.id: event for event in events if event.id in fresh}  # a repeat in the batch once
    if new:
        on_new(list(new.values()))
    return EventsWritten(len(events), added)
