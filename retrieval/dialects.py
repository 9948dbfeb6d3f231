"""SQLite and PostgreSQL: what differs between the two engines under `retrieval.sql.Database`.

Placeholders, auto-increment keys, how a write transaction starts, how a bulk load stages rows
(`executemany` into a temporary table, or PostgreSQL COPY) and which driver errors mean
"connection lost". `dialect_for(url)` picks one from a database URL.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from core.errors import StoreError


class Dialect:
    """What differs between engines. Subclasses set the attributes and implement connect()."""

    masked_url: str
    serial: str  # an auto-increment primary key column type
    begin: str  # statement that opens a write transaction
    schema_lock: str | None = None
    single_connection = False
    errors: tuple[type[BaseException], ...] = ()
    temp_schema: str  # where CREATE TEMPORARY TABLE puts a table
    clear: str  # empties a staging table
    bulk_pragmas: dict[str, int] = {}  # set on a bulk load's connection, put back after it

    def connect(self) -> Any:
        raise NotImplementedError

    def stage(self, conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple], in_transaction: bool = False) -> None:
        """Add `rows` to the temporary `table`, inside the open transaction when `in_transaction`."""
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
            raise StoreError(f"database {self.masked_url} failed: {first_line(exc)}") from exc


class _SQLite(Dialect):
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    # IMMEDIATE takes the write lock up front, so busy_timeout applies instead of a deadlock error.
    begin = "BEGIN IMMEDIATE"
    errors = (sqlite3.Error,)
    temp_schema, clear = "temp", "DELETE FROM {table}"
    # A bulk load's connection only: 128 MiB of page cache for the indexes it grows (with 2 MiB each
    # insert read and spilled pages), a WAL checkpoint per ~160 MiB rather than 4 MiB. Not
    # temp_store=MEMORY: each batch's statement journal then grew with the indexes, in memory.
    bulk_pragmas = {"cache_size": -131_072, "wal_autocheckpoint": 40_000}

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

    def stage(self, conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple], in_transaction: bool = False) -> None:
        insert = f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})"
        if in_transaction:  # part of the load's open transaction, undone with it
            conn.executemany(insert, rows)
            return
        conn.execute("BEGIN")  # one transaction of the temporary database, not one per row
        with conn:  # commits, or rolls back on an error
            conn.executemany(insert, rows)


class _Postgres(Dialect):
    serial = "BIGSERIAL PRIMARY KEY"
    begin = "BEGIN"
    # Two processes creating the tables at once would otherwise race on the catalog.
    schema_lock = "SELECT pg_advisory_xact_lock(7302114)"
    temp_schema, clear = "pg_temp", "TRUNCATE {table}"

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
            detail = first_line(exc).replace(url, masked_url)
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
                f"{first_line(exc)}. Check the server is running and that RECASSIST_DATABASE_URL "
                "names the right host, port, user, password and database."
            ) from None

    def stage(self, conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple], in_transaction: bool = False) -> None:
        with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def sql(self, sql: str) -> str:
        return sql.replace("?", "%s")  # our SQL never holds a literal ? or %

    def is_broken(self, conn: Any) -> bool:
        return conn.closed or conn.broken


def dialect_for(url: str) -> Dialect:
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
