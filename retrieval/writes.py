"""The one way items and events enter the store: the file ingest, the Engine, the HTTP API and the
evaluation all write through these two functions, so they cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from retrieval.records import Event, Item
from retrieval.store import Store


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
    before = store.stored_event_ids(event.id for event in events) if on_new is not None else set()
    added = store.add_events(events)
    if on_new is not None:
        fresh = {event.id: event for event in events if event.id not in before}
        if fresh:
            on_new(list(fresh.values()))
    return added
