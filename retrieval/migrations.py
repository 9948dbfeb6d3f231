"""Schema changes to stores created before them, applied when a `Store` opens (idempotent, cheap).

- `items.published_at` (epoch seconds, NULL when the catalog gives none): a news catalog decays
  old items by it (`retrieval.freshness`).
- An increasing key per event, which `retrieval.live` tails to count new events without a full
  pass. SQLite has one already: the implicit `rowid` (the events table is not WITHOUT ROWID), so
  nothing changes there. PostgreSQL has none: `events.seq BIGSERIAL` is added, and filled for the
  rows already stored when it is.

Both are plain `ALTER TABLE ... ADD COLUMN`, taken under the dialect's schema lock, only when the
column is missing: a database opened by an older recassist still works with it (it never names
the new columns; new rows get NULL and the next sequence number).

- The events table's layout. An event is stored once, by its id (a hash of everything it says,
  its time included). Stores made before this layout kept that rule with a primary key on the id,
  plus an index on (time, id) for reading in order and one on the item: three B-trees, two of
  them keyed by a random hash, so a bulk load of a large log rewrote pages all over both for every
  batch (11k events/s appending 1M to 10M). Now one unique index on (time, id) is both the rule
  (the same id has the same time) and the read order, and the item index is gone (no query reads
  by item alone). A log arriving in time order then appends at the index's end (`evaluation.
  bench_ingest`; the README has the figures). A store in the old layout is upgraded when it is
  opened if it holds at most `AUTO_UPGRADE_EVENTS` events (seconds); a larger one keeps working as
  it is, with a warning, until `recassist upgrade-store` rebuilds it (about 5 s per million events
  on SQLite; on PostgreSQL the key is swapped in place). The upgrade is one transaction: a crash
  leaves the old layout whole, and a re-run starts again.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("recassist.store")

AUTO_UPGRADE_EVENTS = 1_000_000
LEGACY_KEY, EVENT_KEY = "id", "ts, id"  # what ON CONFLICT names: the old primary key, the new unique index
_EVENT_TABLE = """CREATE TABLE {name} (
    id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT,
    type TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION,
    text TEXT
)"""
EVENTS_TABLE = _EVENT_TABLE.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS").format(name="events")
_KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (ts, id)"
_USER_INDEX = "CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts)"


def is_postgres(database) -> bool:
    return database.dialect.serial.startswith("BIGSERIAL")


def event_key(database) -> str:
    """The column that orders events by arrival: a tail reads the rows above the last one it read."""
    return "seq" if is_postgres(database) else "rowid"


def migrate(database) -> str:
    """Add the columns older databases lack, upgrade a small store's events layout (see the module
    docstring); returns the conflict target of the layout in use (`EVENT_KEY` or `LEGACY_KEY`)."""
    postgres = is_postgres(database)
    with database.write() as db:
        if database.dialect.schema_lock:
            db.execute(database.dialect.schema_lock)
        if "published_at" not in _columns(db, "items", postgres):
            db.execute("ALTER TABLE items ADD COLUMN published_at DOUBLE PRECISION")
        if postgres and "seq" not in _columns(db, "events", postgres):
            db.execute("ALTER TABLE events ADD COLUMN seq BIGSERIAL")
            db.execute("CREATE INDEX IF NOT EXISTS events_seq ON events (seq)")
        if not _legacy_layout(db, postgres):
            db.execute(_KEY_INDEX)
            return EVENT_KEY
        stored = _events_stored(db, postgres)
        if stored <= AUTO_UPGRADE_EVENTS:
            _upgrade(db, postgres, stored)
            return EVENT_KEY
    log.warning("the events table of %s has the older layout (primary key on the event id; %s events): it works, but bulk ingest "
                "is 2-5x slower; run `recassist upgrade-store` once (about 5 s per million events)",
                database.url, f"{stored:,}")
    return LEGACY_KEY


def upgrade_events(database) -> dict:
    """Rebuild the events table in the current layout whatever its size (`recassist upgrade-store`):
    {"upgraded": whether it was needed, "events": how many, "seconds": how long}."""
    postgres = is_postgres(database)
    began = time.perf_counter()
    with database.write() as db:
        if database.dialect.schema_lock:
            db.execute(database.dialect.schema_lock)
        stored = int(db.all("SELECT COUNT(*) FROM events")[0][0])
        legacy = _legacy_layout(db, postgres)
        if legacy:
            _upgrade(db, postgres, stored)
    return {"upgraded": legacy, "events": stored, "seconds": time.perf_counter() - began}


def _legacy_layout(db, postgres: bool) -> bool:
    """Whether the events table still has its primary key on the id (the older layout)."""
    if postgres:
        return bool(_pg_primary_keys(db))
    return any(row[1] == "id" and row[5] for row in db.all("PRAGMA table_info(events)"))


def _pg_primary_keys(db) -> list[str]:
    """The names of the events table's primary-key constraints on PostgreSQL (one, or none)."""
    return [row[0] for row in db.all("SELECT conname FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype = 'p'")]


def _events_stored(db, postgres: bool) -> int:
    """About how many events are stored, without counting them: the largest arrival key (on
    PostgreSQL a little more, as a sequence skips the numbers of rows that were not new)."""
    return int(db.all(f"SELECT MAX({'seq' if postgres else 'rowid'}) FROM events")[0][0] or 0)


def _upgrade(db, postgres: bool, stored: int) -> None:
    """Into the current layout, inside the caller's transaction. PostgreSQL drops the primary key in
    place; SQLite cannot, so the rows are copied, arrival keys (rowid) kept, into a new table."""
    began = time.perf_counter()
    if postgres:
        for name in _pg_primary_keys(db):
            db.execute(f'ALTER TABLE events DROP CONSTRAINT "{name}"')
    else:
        db.execute("DROP TABLE IF EXISTS events_upgrade")
        db.execute(_EVENT_TABLE.format(name="events_upgrade"))
        db.execute("INSERT INTO events_upgrade (rowid, id, user_id, item_id, type, ts, value, text)"
                   " SELECT rowid, id, user_id, item_id, type, ts, value, text FROM events ORDER BY rowid")
        db.execute("DROP TABLE events")  # and its indexes
        db.execute("ALTER TABLE events_upgrade RENAME TO events")
    db.execute("DROP INDEX IF EXISTS events_ts")
    db.execute("DROP INDEX IF EXISTS events_item")
    db.execute(_KEY_INDEX)
    db.execute(_USER_INDEX)
    log.info("events table upgraded to the keyed-by-time layout: %s events in %.1f s", f"{stored:,}", time.perf_counter() - began)


def high_water(store) -> int:
    """The largest event key stored now (0 for an empty log)."""
    with store.database.read() as db:
        return int(db.all(f"SELECT MAX({event_key(store.database)}) FROM events")[0][0] or 0)


def _columns(db, table: str, postgres: bool) -> set[str]:
    if postgres:
        rows = db.all("SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = current_schema()",
                      (table,))
        return {row[0] for row in rows}
    return {row[1] for row in db.all(f"PRAGMA table_info({table})")}
