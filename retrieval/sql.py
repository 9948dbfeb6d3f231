"""The SQL engines under the stores: SQLite or PostgreSQL chosen by URL, a connection pool, sessions.

`sqlite:///path/to/file.db` (the default, one file) or `postgresql://user:password@host:port/dbname`
(psycopg 3, for several API workers). Both run the same SQL; the only differences (placeholders,
auto-increment keys, how a write transaction starts, how a bulk load stages rows, which driver
errors mean "connection lost") live in `retrieval.dialects`. A `Database` is shared by the stores above it (retrieval's items and events,
the agent's conversations and profiles): one pool, one file, one schema version.

Every call borrows a connection from a small pool for the length of one block, so a Database is
safe to share between the HTTP server's threads. `write()` blocks are one transaction;
`bulk_load()` holds one connection for a long load of many transactions (`BulkLoad`).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from core.errors import StoreError
from retrieval.dialects import Dialect, dialect_for, first_line, mask_url

SCHEMA_VERSION = 1
_CHUNK = 500  # ids per IN (...) list: well under SQLite's variable limit

_META = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""


class Database:
    """One database (see module docstring): read and write sessions, schema creation."""

    def __init__(self, url: str, pool_size: int = 8):
        self.dialect = dialect_for(url)
        self._pool = _Pool(self.dialect, 1 if self.dialect.single_connection else pool_size)
        self.url = self.dialect.masked_url  # password masked: safe to log or show
        try:
            self.create(_META)
            self._check_version()
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    @contextmanager
    def read(self) -> Iterator["Session"]:
        with self._pool.connection() as conn:
            yield Session(conn, self.dialect)

    @contextmanager
    def write(self) -> Iterator["Session"]:
        """One transaction: committed if the block finishes, rolled back if it raises."""
        with self._pool.connection() as conn:
            session = Session(conn, self.dialect)
            session.execute(self.dialect.begin)
            try:
                yield session
                session.execute("COMMIT")
            except BaseException:
                self.dialect.rollback(conn)
                raise

    @contextmanager
    def bulk_load(self, table: str, columns: tuple[str, ...], key: str, returning: str | None = None) -> Iterator["BulkLoad"]:
        """A long load into `table` on one connection held for the block (see `BulkLoad`)."""
        with self._pool.connection() as conn:
            session = Session(conn, self.dialect)
            before = session.pragmas(self.dialect.bulk_pragmas)
            load = BulkLoad(session, table, columns, key, returning)
            try:
                yield load
            finally:
                if not self.dialect.is_broken(conn):
                    load.rollback()  # moves the caller did not commit (it stopped halfway) are undone
                    session.execute(f"DROP TABLE IF EXISTS {load.stage}")
                    session.pragmas(before)

    def create(self, schema: str) -> None:
        """Create the tables and indexes of `schema` (`?` placeholders, {serial}) if missing."""
        try:
            with self.write() as db:
                if self.dialect.schema_lock:
                    db.execute(self.dialect.schema_lock)
                for statement in schema.format(serial=self.dialect.serial).split(";"):
                    if statement.strip():
                        db.execute(statement)
        except StoreError as exc:
            if exc.__cause__ is None:  # already specific (cannot connect)
                raise
            raise StoreError(
                f"cannot create the tables in {self.url}: {first_line(exc.__cause__)}; check that the SQLite "
                "file and its directory are writable, or that the PostgreSQL user may CREATE TABLE"
            ) from exc.__cause__

    def _check_version(self) -> None:
        with self.write() as db:
            found = db.all("SELECT value FROM meta WHERE key = 'schema_version'")
            if not found:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0][0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.url} has schema version {found[0][0]}, newer than this recassist "
                    f"understands ({SCHEMA_VERSION}); upgrade recassist"
                )


# -- engines ---------------------------------------------------------------------------------


class Session:
    """One borrowed connection, speaking `?` placeholders whatever the engine."""

    def __init__(self, conn: Any, dialect: "Dialect"):
        self.conn, self.dialect = conn, dialect

    def execute(self, sql: str, params: tuple = ()) -> Any:
        with self.dialect.translate_errors():
            return self.conn.execute(self.dialect.sql(sql), params)

    def executemany(self, sql: str, rows: list[tuple]) -> int:
        """Run `sql` once per row; returns the number of rows changed."""
        if not rows:
            return 0
        with self.dialect.translate_errors():
            cursor = self.conn.cursor()
            cursor.executemany(self.dialect.sql(sql), rows)
            return cursor.rowcount

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def pragmas(self, values: dict[str, int]) -> dict[str, int]:
        """Set SQLite PRAGMAs on this connection (none on PostgreSQL); returns what they were."""
        before = {name: self.all(f"PRAGMA {name}")[0][0] for name in values}
        for name, value in values.items():
            self.execute(f"PRAGMA {name} = {value}")
        return before

    def rows_in(self, sql: str, ids: list[str]) -> list[tuple]:
        """Run `sql` whose `{ids}` is an IN list, in chunks; returns all rows."""
        rows: list[tuple] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows.extend(self.all(sql.format(ids=", ".join("?" * len(chunk))), tuple(chunk)))
        return rows


class BulkLoad:
    """Rows staged in a temporary table (COPY on PostgreSQL), then moved into the table, skipping
    rows whose key is stored already. A move commits, or leaves its transaction open for the next
    moves (`commit=False`, then `commit()`): what one transaction holds lands whole or not at all,
    and a re-run (after a crash, too) stores nothing twice. Several moves in one transaction write
    each index page they touch once at the commit, not once per move. The move runs inside the
    database with Python's GIL released, so the caller can read its next batch meanwhile.
    Durability is the engine's usual: on SQLite (WAL, synchronous NORMAL) a committed transaction
    survives a crash of the process, and a power cut may lose the last ones, which re-running the
    load stores again."""

    def __init__(self, session: Session, table: str, columns: tuple[str, ...], key: str, returning: str | None = None):
        """`key`: the conflict target (columns of a unique index); `returning`: the column `move`
        returns for new rows (the key, when it is one column)."""
        self.session, self.columns, self._returning = session, columns, returning or key
        self.stage, names = f"{session.dialect.temp_schema}.{table}_load", ", ".join(columns)
        session.execute(f"DROP TABLE IF EXISTS {self.stage}")  # left by a load on this connection that died
        session.execute(f"CREATE TEMPORARY TABLE {table}_load AS SELECT {names} FROM {table} WHERE 1 = 0")
        # "WHERE true" lets SQLite tell the ON CONFLICT clause from a join constraint.
        self._move = f"INSERT INTO {table} ({names}) SELECT {names} FROM {self.stage} WHERE true ON CONFLICT ({key}) DO NOTHING"
        self.in_transaction = False

    def stage_rows(self, rows: list[tuple]) -> None:
        """Add rows (in `columns` order) to the next move."""
        with self.session.dialect.translate_errors():
            self.session.dialect.stage(self.session.conn, self.stage, self.columns, rows, self.in_transaction)

    def move(self, returning: bool = False, commit: bool = True) -> tuple[int, list | None]:
        """Store the staged rows: (how many were new, their keys if `returning`). With `commit`
        False the transaction stays open for the next moves."""
        if not self.in_transaction:
            self.session.execute(self.session.dialect.begin)
            self.in_transaction = True
        try:
            cursor = self.session.execute(self._move + (f" RETURNING {self._returning}" if returning else ""))
            keys = [row[0] for row in cursor.fetchall()] if returning else None
            self.session.execute(self.session.dialect.clear.format(table=self.stage))
            if commit:
                self.commit()
        except BaseException:
            self.rollback()
            raise
        return (len(keys), keys) if returning else (cursor.rowcount, None)

    def commit(self) -> None:
        """Commit the moves of the open transaction, if one is open."""
        if self.in_transaction:
            self.session.execute("COMMIT")
            self.in_transaction = False

    def rollback(self) -> None:
        """Undo the moves of the open transaction (a load stopped halfway)."""
        if self.in_transaction:
            self.in_transaction = False
            self.session.dialect.rollback(self.session.conn)


class _Pool:
    """Up to `size` connections shared by threads; each call borrows one exclusively."""

    def __init__(self, dialect: Dialect, size: int, wait_s: float = 60.0):
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


__all__ = ["BulkLoad", "Database", "Session", "StoreError", "mask_url", "SCHEMA_VERSION"]
