"""The data layer: catalog items, behaviour events, conversations and profiles.

One class, two engines chosen by URL: `sqlite:///path/to/file.db` (the default, one file) or
`postgresql://user:password@host:port/dbname` (psycopg 3, for several API workers). Both run
the same SQL; the only differences (placeholders, auto-increment keys, how a write transaction
starts, which driver errors mean "connection lost") live in `_Dialect`.

Every method borrows a connection from a small pool for the length of one call, so a Store is
safe to share between the HTTP server's threads. Writes are one transaction per call.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from assistant.errors import StoreError
from retrieval.records import Event, Item, event_weight

SCHEMA_VERSION = 1
_CHUNK = 500  # ids per IN (...) list: well under SQLite's variable limit
_PAGE = 1000  # rows per page when iterating

# Written with `?` placeholders and {serial}; _Dialect adapts them.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
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
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT,
    type TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION,
    text TEXT
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts, id);
CREATE INDEX IF NOT EXISTS events_item ON events (item_id);
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    last_at DOUBLE PRECISION NOT NULL,
    turns INTEGER NOT NULL,
    title TEXT,
    PRIMARY KEY (user_id, session_id)
);
CREATE TABLE IF NOT EXISTS messages (
    seq {serial},
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    payload TEXT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages (user_id, session_id, seq);
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
"""

_ITEM_COLUMNS = "id, title, text, categories, tags, year, creator, popularity, extra"
_EVENT_COLUMNS = "user_id, type, ts, item_id, value, text"


@dataclass
class UpsertResult:
    """Which item ids a call to `upsert_items` inserted, changed, or found identical."""

    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class Store:
    """Items, events, conversations and profiles in SQLite or PostgreSQL (see module docstring)."""

    def __init__(self, dialect: "_Dialect", pool_size: int = 8):
        self._dialect = dialect
        self._pool = _Pool(dialect, 1 if dialect.single_connection else pool_size)
        self.url = dialect.masked_url  # password masked: safe to log or show
        try:
            self._create_schema()
        except BaseException:
            self._pool.close()
            raise

    @classmethod
    def open(cls, url: str, pool_size: int = 8) -> "Store":
        """Open (creating tables if needed) the database named by `url`."""
        return cls(_dialect_for(url), pool_size=pool_size)

    def close(self) -> None:
        self._pool.close()

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
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET title = excluded.title, text = excluded.text,"
                " categories = excluded.categories, tags = excluded.tags, year = excluded.year,"
                " creator = excluded.creator, popularity = excluded.popularity,"
                " extra = excluded.extra, fingerprint = excluded.fingerprint,"
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
            return db.executemany(
                f"INSERT INTO events (id, {_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                list(rows.values()),
            )

    def stored_event_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these event ids are already stored (lets ingest report only new events)."""
        with self._read() as db:
            return {row[0] for row in db.rows_in("SELECT id FROM events WHERE id IN ({ids})", list(dict.fromkeys(ids)))}

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
            return db.execute(sql, tuple(params)).rowcount

    # -- conversations ------------------------------------------------------------------------

    def append_message(
        self, user_id: str, session_id: str, role: str, content: str, payload: dict | None = None
    ) -> None:
        """Append one message to a user's session (created on first message)."""
        now = time.time()
        is_turn = 1 if role == "user" else 0
        title = content[:80] if role == "user" else None
        with self._write() as db:
            db.execute(
                "INSERT INTO sessions (user_id, session_id, started_at, last_at, turns, title)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, session_id) DO UPDATE SET"
                " last_at = excluded.last_at, turns = sessions.turns + excluded.turns,"
                " title = COALESCE(sessions.title, excluded.title)",
                (user_id, session_id, now, now, is_turn, title),
            )
            db.execute(
                "INSERT INTO messages (user_id, session_id, role, content, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, session_id, role, content, None if payload is None else _dumps(payload), now),
            )

    def get_messages(self, user_id: str, session_id: str) -> list[dict]:
        """A session's messages in order; empty if the session is not this user's."""
        with self._read() as db:
            rows = db.all(
                "SELECT role, content, payload, created_at FROM messages"
                " WHERE user_id = ? AND session_id = ? ORDER BY seq",
                (user_id, session_id),
            )
        return [
            {"role": role, "content": content, "payload": None if payload is None else json.loads(payload),
             "created_at": created_at}
            for role, content, payload, created_at in rows
        ]

    def list_sessions(self, user_id: str) -> list[dict]:
        """A user's sessions, most recent first; `turns` counts the user's messages."""
        with self._read() as db:
            rows = db.all(
                "SELECT session_id, started_at, last_at, turns, title FROM sessions"
                " WHERE user_id = ? ORDER BY last_at DESC, session_id",
                (user_id,),
            )
        keys = ("session_id", "started_at", "last_at", "turns", "title")
        return [dict(zip(keys, row)) for row in rows]

    # -- profiles and users -------------------------------------------------------------------

    def get_profile(self, user_id: str) -> dict | None:
        with self._read() as db:
            rows = db.all("SELECT profile FROM profiles WHERE user_id = ?", (user_id,))
        return json.loads(rows[0][0]) if rows else None

    def save_profile(self, user_id: str, profile: dict) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO profiles (user_id, profile, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at",
                (user_id, _dumps(profile), time.time()),
            )

    def delete_user(self, user_id: str) -> dict:
        """Forget a user: events, messages, sessions and profile. Returns rows removed per table."""
        tables = {"events": "events", "messages": "messages", "sessions": "sessions", "profile": "profiles"}
        with self._write() as db:
            return {
                name: db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount
                for name, table in tables.items()
            }

    # -- plumbing -----------------------------------------------------------------------------

    def _create_schema(self) -> None:
        try:
            self._create_tables()
        except StoreError as exc:
            if exc.__cause__ is None:  # already specific (cannot connect, newer schema)
                raise
            raise StoreError(
                f"cannot create the tables in {self.url}: {_first_line(exc.__cause__)}; check that the SQLite "
                "file and its directory are writable, or that the PostgreSQL user may CREATE TABLE"
            ) from exc.__cause__

    def _create_tables(self) -> None:
        with self._write() as db:
            if self._dialect.schema_lock:
                db.execute(self._dialect.schema_lock)
            for statement in _SCHEMA.format(serial=self._dialect.serial).split(";"):
                if statement.strip():
                    db.execute(statement)
            found = db.all("SELECT value FROM meta WHERE key = 'schema_version'")
            if not found:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0][0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.url} has schema version {found[0][0]}, newer than this recassist "
                    f"understands ({SCHEMA_VERSION}); upgrade recassist"
                )

    @contextmanager
    def _read(self) -> Iterator["_Session"]:
        with self._pool.connection() as conn:
            yield _Session(conn, self._dialect)

    @contextmanager
    def _write(self) -> Iterator["_Session"]:
        """One transaction: committed if the block finishes, rolled back if it raises."""
        with self._pool.connection() as conn:
            session = _Session(conn, self._dialect)
            session.execute(self._dialect.begin)
            try:
                yield session
                session.execute("COMMIT")
            except BaseException:
                self._dialect.rollback(conn)
                raise


# -- rows <-> records ------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _item_row(item: Item) -> tuple:
    return (
        item.id, item.title, item.text, _dumps(list(item.categories)), _dumps(list(item.tags)),
        item.year, item.creator, item.popularity, _dumps(item.extra),
    )


def _item_from_row(row: tuple) -> Item:
    item_id, title, text, categories, tags, year, creator, popularity, extra = row
    return Item(
        id=item_id, title=title, text=text, categories=json.loads(categories), tags=json.loads(tags),
        year=year, creator=creator, popularity=popularity, extra=json.loads(extra),
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


# -- engines ---------------------------------------------------------------------------------


class _Session:
    """One borrowed connection, speaking `?` placeholders whatever the engine."""

    def __init__(self, conn: Any, dialect: "_Dialect"):
        self._conn, self._dialect = conn, dialect

    def execute(self, sql: str, params: tuple = ()) -> Any:
        with self._dialect.translate_errors():
            return self._conn.execute(self._dialect.sql(sql), params)

    def executemany(self, sql: str, rows: list[tuple]) -> int:
        """Run `sql` once per row; returns the number of rows changed."""
        if not rows:
            return 0
        with self._dialect.translate_errors():
            cursor = self._conn.cursor()
            cursor.executemany(self._dialect.sql(sql), rows)
            return cursor.rowcount

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def rows_in(self, sql: str, ids: list[str]) -> list[tuple]:
        """Run `sql` whose `{ids}` is an IN list, in chunks; returns all rows."""
        rows: list[tuple] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows.extend(self.all(sql.format(ids=", ".join("?" * len(chunk))), tuple(chunk)))
        return rows


class _Dialect:
    """What differs between engines. Subclasses set the attributes and implement connect()."""

    masked_url: str
    serial: str  # an auto-increment primary key column type
    begin: str  # statement that opens a write transaction
    schema_lock: str | None = None
    single_connection = False
    errors: tuple[type[BaseException], ...] = ()

    def connect(self) -> Any:
        raise NotImplementedError

    def sql(self, sql: str) -> str:
        return sql

    def is_broken(self, conn: Any) -> bool:
        return False

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # a dead connection may fail to close; it is being discarded anyway
            pass

    def rollback(self, conn: Any) -> None:
        if not self.is_broken(conn):
            with self.translate_errors():
                conn.execute("ROLLBACK")

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        try:
            yield
        except self.errors as exc:
            raise StoreError(f"database {self.masked_url} failed: {_first_line(exc)}") from exc


class _SQLite(_Dialect):
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    # IMMEDIATE takes the write lock up front, so busy_timeout applies instead of a deadlock error.
    begin = "BEGIN IMMEDIATE"
    errors = (sqlite3.Error,)

    def __init__(self, url: str, path: str):
        self.masked_url = url
        self.path = path
        self.single_connection = path == ":memory:"
        if not self.single_connection:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the directory for SQLite database {path}: {exc.strerror}; "
                    "choose a writable location (RECASSIST_DATA_DIR or RECASSIST_DATABASE_URL)"
                ) from None

    def connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: we open transactions ourselves (see `begin`).
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open SQLite database {self.path}: {exc}; check that the file is a SQLite "
                "database and that it and its directory are writable"
            ) from None
        return conn


class _Postgres(_Dialect):
    serial = "BIGSERIAL PRIMARY KEY"
    begin = "BEGIN"
    # Two processes creating the tables at once would otherwise race on the catalog.
    schema_lock = "SELECT pg_advisory_xact_lock(7302114)"

    def __init__(self, url: str, masked_url: str):
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "PostgreSQL support needs psycopg 3: pip install 'recassist[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self.masked_url = masked_url
        self.errors = (psycopg.Error,)
        try:
            info = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            # libpq quotes the whole URL, password included, in this message.
            detail = _first_line(exc).replace(url, masked_url)
            raise StoreError(f"malformed PostgreSQL URL {masked_url!r}: {detail}") from None
        self._where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
        self._database = info.get("dbname") or info.get("user") or ""
        self._extra = {} if "connect_timeout" in info else {"connect_timeout": 10}

    def connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, autocommit=True, **self._extra)
        except self._psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._where} (database {self._database!r}): "
                f"{_first_line(exc)}. Check the server is running and that RECASSIST_DATABASE_URL "
                "names the right host, port, user, password and database."
            ) from None

    def sql(self, sql: str) -> str:
        return sql.replace("?", "%s")  # our SQL never holds a literal ? or %

    def is_broken(self, conn: Any) -> bool:
        return conn.closed or conn.broken


def _dialect_for(url: str) -> _Dialect:
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _SQLite(url, _sqlite_path(rest))
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        plain = "postgresql:" + rest
        return _Postgres(plain, mask_url(plain))
    raise StoreError(
        f"unsupported database URL {mask_url(url)!r}: use sqlite:///path/to/file.db or "
        "postgresql://user:password@host:port/dbname"
    )


def _sqlite_path(rest: str) -> str:
    """`sqlite:///abs/path.db` and `sqlite:////abs/path.db` -> /abs/path.db; `sqlite://rel.db` -> rel.db."""
    path = rest[2:] if rest.startswith("//") else rest
    if path in ("", "/", "/:memory:", ":memory:"):
        return ":memory:"
    if path.startswith("/"):
        path = "/" + path.lstrip("/")
    return os.path.expanduser(path)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:  # malformed: show only the scheme
        return url.partition(":")[0] + "://(malformed)"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(key == "password" for key, _ in pairs):
        return url  # untouched: urlunsplit would also rewrite sqlite:////abs as sqlite://abs
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Pool:
    """Up to `size` connections shared by threads; each call borrows one exclusively."""

    def __init__(self, dialect: _Dialect, size: int, wait_s: float = 60.0):
        self._dialect, self._size, self._wait_s = dialect, max(1, size), wait_s
        self._idle: list[Any] = []
        self._open = 0
        self._closed = False
        self._cond = threading.Condition()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self._take()
        try:
            yield conn
        finally:
            self._give(conn)

    def _take(self) -> Any:
        with self._cond:
            deadline = time.monotonic() + self._wait_s
            while not self._idle and self._open >= self._size:
                if self._closed:
                    raise StoreError(f"store {self._dialect.masked_url} is closed")
                if not self._cond.wait(timeout=deadline - time.monotonic()):
                    raise StoreError(
                        f"all {self._size} connections to {self._dialect.masked_url} stayed busy for "
                        f"{self._wait_s:.0f} s; raise pool_size or look for a stuck query"
                    )
            if self._closed:
                raise StoreError(f"store {self._dialect.masked_url} is closed")
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return self._dialect.connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _give(self, conn: Any) -> None:
        discard: list[Any] = []
        with self._cond:
            if self._closed:
                discard = [conn]
            elif self._dialect.is_broken(conn):
                # Usually the server restarted: the idle ones are dead too, so one call fails, not one per connection.
                discard, self._idle = [conn] + self._idle, []
            else:
                self._idle.append(conn)
            self._open -= len(discard)
            self._cond.notify_all()
        for dead in discard:
            self._dialect.close(dead)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            self._dialect.close(conn)


__all__ = ["Store", "StoreError", "UpsertResult", "mask_url", "normalize_event", "SCHEMA_VERSION"]
