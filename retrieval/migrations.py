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
"""

from __future__ import annotations


def is_postgres(database) -> bool:
    return database.dialect.serial.startswith("BIGSERIAL")


def event_key(database) -> str:
    """The column that orders events by arrival: a tail reads the rows above the last one it read."""
    return "seq" if is_postgres(database) else "rowid"


def migrate(database) -> None:
    """Add the columns older databases lack (see the module docstring)."""
    postgres = is_postgres(database)
    with database.write() as db:
        if database.dialect.schema_lock:
            db.execute(database.dialect.schema_lock)
        if "published_at" not in _columns(db, "items", postgres):
            db.execute("ALTER TABLE items ADD COLUMN published_at DOUBLE PRECISION")
        if postgres and "seq" not in _columns(db, "events", postgres):
            db.execute("ALTER TABLE events ADD COLUMN seq BIGSERIAL")
            db.execute("CREATE INDEX IF NOT EXISTS events_seq ON events (seq)")


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
