"""Catalog items and behaviour events in SQLite or PostgreSQL (the engines are `retrieval/sql.py`).

Conversations and profiles are the agent's (`assistant/memory_store.py`), kept in the same
database through the same `Database`.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, Iterable, Iterator

from retrieval.migrations import EVENTS_TABLE, event_key, migrate
from retrieval.records import SAID_SQL, STATED_IN_CHAT_SQL, Event, Item, event_weight
from retrieval.sql import BulkLoad, Database, mask_url  # noqa: F401 - mask_url: part of this module's interface

_PAGE = 1000  # rows per page when iterating

# Written with `?` placeholders and {serial}; _Dialect adapts them.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    categories TEXT NOT NULL,
    tags TEXT NOT NULL,
    year INTEGER,
    creator TEXT,
    popularity DOUBLE PRECISION,
    extra TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    embedded_fingerprint TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);
""" + EVENTS_TABLE + """;
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts)
"""  # and the unique (ts, id) index, created by `migrate` (an older store may have another layout)

_ITEM_COLUMNS = "id, title, text, categories, tags, year, creator, popularity, extra, published_at"
_EVENT_COLUMNS = "user_id, type, ts, item_id, value, text"
_EVENT_KEYED = ("id", "user_id", "type", "ts", "item_id", "value", "text")  # a row of `_event_row`, id first


@dataclass
class UpsertResult:
    """Which item ids a call to `upsert_items` inserted, changed, or found identical."""

    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class Store:
    """Items and events in SQLite or PostgreSQL (see module docstring)."""

    def __init__(self, database: Database):
        self.database = database
        self.url = database.url  # password masked: safe to log or show
        database.create(_SCHEMA)
        # items.published_at; on PostgreSQL, events.seq; the events layout (retrieval.migrations)
        self._event_conflict = migrate(database)
        self._event_key = event_key(database)
        self._read, self._write = database.read, database.write
        self.events_written = 0  # events added or deleted through this Store: a fitting job's cue

    @classmethod
    def open(cls, url: str, pool_size: int = 8) -> "Store":
        """Open (creating tables if needed) the database named by `url`."""
        database = Database(url, pool_size=pool_size)
        try:
            return cls(database)
        except BaseException:
            database.close()
            raise

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    __str__ = __repr__

    # -- items --------------------------------------------------------------------------------

    def upsert_items(self, items: list[Item]) -> UpsertResult:
        """Insert new items, update changed ones (by fingerprint), report which was which."""
        latest = {item.id: item for item in items}  # a repeated id: the last one wins
        result = UpsertResult()
        if not latest:
            return result
        now = time.time()
        with self._write() as db:
            stored = dict(db.rows_in("SELECT id, fingerprint FROM items WHERE id IN ({ids})", list(latest)))
            rows = []
            for item_id, item in latest.items():
                fingerprint = item.fingerprint()
                if item_id not in stored:
                    result.inserted.append(item_id)
                elif stored[item_id] != fingerprint:
                    result.updated.append(item_id)
                else:
                    result.unchanged.append(item_id)
                    continue
                rows.append(_item_row(item) + (fingerprint, now))
            db.executemany(
                f"INSERT INTO items ({_ITEM_COLUMNS}, fingerprint, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET title = excluded.title, text = excluded.text,"
                " categories = excluded.categories, tags = excluded.tags, year = excluded.year,"
                " creator = excluded.creator, popularity = excluded.popularity,"
                " extra = excluded.extra, published_at = excluded.published_at, fingerprint = excluded.fingerprint,"
                " updated_at = excluded.updated_at",
                rows,
            )
        return result

    def get_item(self, item_id: str) -> Item | None:
        return self.get_items([item_id]).get(item_id)

    def get_items(self, ids: Iterable[str]) -> dict[str, Item]:
        """The stored items among `ids`, by id (missing ids are simply absent)."""
        with self._read() as db:
            rows = db.rows_in(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({{ids}})", list(dict.fromkeys(ids)))
        return {row[0]: _item_from_row(row) for row in rows}

    def iter_items(self) -> Iterator[Item]:
        """Every item, by id, fetched a page at a time (no connection held between pages)."""
        last = ""
        while True:
            with self._read() as db:
                rows = db.all(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id > ? ORDER BY id LIMIT ?", (last, _PAGE))
            yield from (_item_from_row(row) for row in rows)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def item_ids(self) -> set[str]:
        with self._read() as db:
            return {row[0] for row in db.all("SELECT id FROM items")}

    def item_count(self) -> int:
        with self._read() as db:
            return db.all("SELECT COUNT(*) FROM items")[0][0]

    def items_needing_embedding(self, ids: Iterable[str] | None = None) -> list[Item]:
        """Items whose current content has not been embedded yet (new, changed, or interrupted)."""
        where = "embedded_fingerprint IS NULL OR embedded_fingerprint <> fingerprint"
        with self._read() as db:
            if ids is None:
                rows = db.all(f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY id")
            else:
                rows = db.rows_in(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({{ids}}) AND ({where})", list(dict.fromkeys(ids))
                )
                rows.sort(key=lambda row: row[0])
        return [_item_from_row(row) for row in rows]

    def mark_embedded(self, items: list[Item]) -> None:
        """Record that these exact item versions are in the vector store."""
        # The fingerprint of the version that was embedded: if the row changed meanwhile, it stays pending.
        with self._write() as db:
            db.executemany(
                "UPDATE items SET embedded_fingerprint = ? WHERE id = ?",
                [(item.fingerprint(), item.id) for item in items],
            )

    # -- events -------------------------------------------------------------------------------

    def add_events(self, events: list[Event]) -> int:
        """Store events in one transaction; returns how many were new (same Event.id = duplicate)."""
        rows = {}
        for event in map(normalize_event, events):
            rows[event.id] = (event.id,) + _event_row(event)
        if not rows:
            return 0
        with self._write() as db:
            new = db.executemany(
                f"INSERT INTO events (id, {_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT ({self._event_conflict}) DO NOTHING",
                list(rows.values()),
            )
        self.events_written += new
        return new

    @contextmanager
    def event_loader(self) -> Iterator["EventLoader"]:
        """A bulk load of events on one connection held for the block (see `EventLoader`)."""
        with self.database.bulk_load("events", _EVENT_KEYED, key=self._event_conflict, returning="id") as load:
            yield EventLoader(load, by_time=self._event_conflict != "id")

    def stored_event_ids(self, events: Iterable[Event]) -> set[str]:
        """The ids of these events that are stored already (lets ingest report only new events).
        Asked by time and id, the stored key, a few hundred events a query."""
        keyed = {event.id: float(event.timestamp) for event in events}
        ids, found = list(keyed), set()
        with self._read() as db:
            for start in range(0, len(ids), 400):
                chunk = ids[start : start + 400]
                times = sorted({keyed[i] for i in chunk})
                rows = db.all(f"SELECT id FROM events WHERE ts IN ({', '.join('?' * len(times))})"
                              f" AND id IN ({', '.join('?' * len(chunk))})", tuple(times) + tuple(chunk))
                found.update(row[0] for row in rows)
        return found

    def events_for_user(self, user_id: str, limit: int | None = None) -> list[Event]:
        """A user's events, oldest first; with `limit`, only the most recent `limit` of them."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = ? ORDER BY ts DESC, id DESC"
        params: tuple = (user_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (int(limit),)
        with self._read() as db:
            rows = db.all(sql, params)
        return [_event_from_row(row) for row in reversed(rows)]

    def iter_events(self) -> Iterator[Event]:
        """Every event, oldest first, fetched a page at a time."""
        sql = f"SELECT {_EVENT_COLUMNS}, id FROM events"
        last: tuple | None = None
        while True:
            with self._read() as db:
                if last is None:
                    rows = db.all(f"{sql} ORDER BY ts, id LIMIT ?", (_PAGE,))
                else:
                    rows = db.all(f"{sql} WHERE (ts, id) > (?, ?) ORDER BY ts, id LIMIT ?", last + (_PAGE,))
            yield from (_event_from_row(row) for row in rows)
            if len(rows) < _PAGE:
                return
            last = (rows[-1][2], rows[-1][6])

    def iter_event_columns(self, chunk_size: int = 50_000, through: int | None = None) -> Iterator[tuple[tuple, ...]]:
        """Every event in `iter_events` order, a chunk at a time as columns (user ids, item ids,
        types, timestamps, values, event ids, 1 where it was only said in chat, a search's words):
        no Event object per row, for the fitting job."""
        sql = f"SELECT user_id, item_id, type, ts, value, id, {STATED_IN_CHAT_SQL}, {SAID_SQL} FROM events"
        # `through`: only the events up to a tail's key (retrieval.live counts the later ones itself).
        bound = "" if through is None else f"{self._event_key} <= {int(through)}"
        last: tuple | None = None
        while True:
            with self._read() as db:
                if last is None:
                    rows = db.all(f"{sql} {'WHERE ' + bound if bound else ''} ORDER BY ts, id LIMIT ?", (chunk_size,))
                else:
                    rows = db.all(f"{sql} WHERE (ts, id) > (?, ?) {'AND ' + bound if bound else ''} ORDER BY ts, id LIMIT ?",
                                  last + (chunk_size,))
            if rows:
                yield tuple(zip(*rows))
            if len(rows) < chunk_size:
                return
            last = (rows[-1][3], rows[-1][5])

    def event_count(self) -> int:
        with self._read() as db:
            return db.all("SELECT COUNT(*) FROM events")[0][0]

    def user_ids(self) -> list[str]:
        """Every user with at least one event, sorted."""
        with self._read() as db:
            return [row[0] for row in db.all("SELECT DISTINCT user_id FROM events ORDER BY user_id")]

    def user_count(self) -> int:
        with self._read() as db:
            return db.all("SELECT COUNT(DISTINCT user_id) FROM events")[0][0]

    def item_popularity(self) -> dict[str, float]:
        """Per item, how many interactions with a positive weight it received."""
        # Grouped in SQL, weighted in Python: weights stay defined in one place (records.py).
        with self._read() as db:
            rows = db.all(
                "SELECT item_id, type, value, COUNT(*) FROM events"
                " WHERE item_id IS NOT NULL GROUP BY item_id, type, value"
            )
        popularity: dict[str, float] = {}
        for item_id, event_type, value, count in rows:
            if event_weight(event_type, value) > 0:
                popularity[item_id] = popularity.get(item_id, 0.0) + float(count)
        return popularity

    def delete_events(self, user_id: str, item_id: str | None = None, types: Iterable[str] | None = None) -> int:
        """Delete a user's events, optionally only about one item and/or of some types."""
        sql, params = "DELETE FROM events WHERE user_id = ?", [user_id]
        if item_id is not None:
            sql += " AND item_id = ?"
            params.append(item_id)
        if types is not None:
            types = [types] if isinstance(types, str) else list(types)
            if not types:
                return 0
            sql += f" AND type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        with self._write() as db:
            deleted = db.execute(sql, tuple(params)).rowcount
        self.events_written += deleted
        return deleted

    def delete_user(self, user_id: str) -> dict:
        """Forget a user's behaviour: every event. Returns {"events": rows removed}."""
        return {"events": self.delete_events(user_id)}


class EventLoader:
    """`add_events` for millions of events: a batch is staged (COPY on PostgreSQL), then stored by
    one statement in one transaction (`store`); an event already stored, or repeated in the batch,
    is stored once."""

    def __init__(self, load: BulkLoad, by_time: bool = True):
        self._load = load
        # The order a batch stores fastest in: the stored key's, (time, id); id alone in the old layout.
        self.order = itemgetter(3, 0) if by_time else itemgetter(0)

    @staticmethod
    def rows(events: list[Event]) -> list[tuple]:
        """The rows to `stage`, id first (computing them needs no connection: it can overlap a `store`)."""
        return [(event.id,) + _event_row(event) for event in map(normalize_event, events)]

    def stage(self, rows: list[tuple]) -> None:
        """Add rows to the next batch; in `order` they store fastest."""
        self._load.stage_rows(rows)

    def store(self, new_ids: bool = False, commit: bool = True) -> tuple[int, list[str] | None]:
        """Store what was staged: (how many events were new, their ids when `new_ids`); with
        `commit` False in the open transaction, which `commit()` ends."""
        return self._load.move(returning=new_ids, commit=commit)

    def commit(self) -> None:
        self._load.commit()


# -- rows <-> records ------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _item_row(item: Item) -> tuple:
    return (
        item.id, item.title, item.text, _dumps(list(item.categories)), _dumps(list(item.tags)),
        item.year, item.creator, item.popularity, _dumps(item.extra), item.published_at,
    )


def _item_from_row(row: tuple) -> Item:
    item_id, title, text, categories, tags, year, creator, popularity, extra, published_at = row
    return Item(
        id=item_id, title=title, text=text, categories=json.loads(categories), tags=json.loads(tags),
        year=year, creator=creator, popularity=popularity, extra=json.loads(extra), published_at=published_at,
    )


def normalize_event(event: Event) -> Event:
    """The event with float timestamp and value, as stored: its `.id` then survives a round trip."""
    value = None if event.value is None else float(event.value)
    if type(event.timestamp) is float and (event.value is None or type(event.value) is float):
        return event
    return replace(event, timestamp=float(event.timestamp), value=value)


def _event_row(event: Event) -> tuple:
    return (event.user_id, event.type, event.timestamp, event.item_id, event.value, event.text)


def _event_from_row(row: tuple) -> Event:
    user_id, event_type, ts, item_id, value, text = row[:6]
    return Event(user_id=user_id, type=event_type, timestamp=ts, item_id=item_id, value=value, text=text)


