"""Conversations (sessions and their messages) and users' profiles: the agent's memory on disk.
Also what a local model wrote from prompts about an item alone (assistant/llm/memo.py): no
user's data, so that every worker, on any host, and the next start find it.

Kept in the same database as the catalog and the events (one `retrieval.sql.Database`, so one
file or one PostgreSQL server), in tables of its own; retrieval never reads them.
"""

from __future__ import annotations

import json
import time

from retrieval.sql import Database

_SCHEMA = """
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
);
CREATE TABLE IF NOT EXISTS remembered (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    written DOUBLE PRECISION NOT NULL
)
"""


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class MemoryStore:
    """Sessions, messages and profiles of every user."""

    def __init__(self, database: Database):
        self.database = database
        database.create(_SCHEMA)

    def append_message(self, user_id: str, session_id: str, role: str, content: str, payload: dict | None = None) -> None:
        """Append one message to a user's session (created on first message)."""
        now = time.time()
        is_turn = 1 if role == "user" else 0
        title = content[:80] if role == "user" else None
        with self.database.write() as db:
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
        with self.database.read() as db:
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
        with self.database.read() as db:
            rows = db.all(
                "SELECT session_id, started_at, last_at, turns, title FROM sessions"
                " WHERE user_id = ? ORDER BY last_at DESC, session_id",
                (user_id,),
            )
        keys = ("session_id", "started_at", "last_at", "turns", "title")
        return [dict(zip(keys, row)) for row in rows]

    def get_profile(self, user_id: str) -> dict | None:
        with self.database.read() as db:
            rows = db.all("SELECT profile FROM profiles WHERE user_id = ?", (user_id,))
        return json.loads(rows[0][0]) if rows else None

    def save_profile(self, user_id: str, profile: dict) -> None:
        with self.database.write() as db:
            db.execute(
                "INSERT INTO profiles (user_id, profile, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at",
                (user_id, _dumps(profile), time.time()),
            )

    def remembered_text(self, key: str) -> str | None:
        """What the model wrote for the prompt hashed as `key` (llm/memo.py), or None."""
        with self.database.read() as db:
            rows = db.all("SELECT text FROM remembered WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def remember_text(self, key: str, text: str, keep: int | None = None) -> None:
        """Keep what the model wrote for `key`; with `keep`, then only the `keep` newest texts."""
        with self.database.write() as db:
            db.execute(
                "INSERT INTO remembered (key, text, written) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET text = excluded.text, written = excluded.written",
                (key, text, time.time()),
            )
            if keep is not None:
                db.execute("DELETE FROM remembered WHERE key NOT IN (SELECT key FROM remembered ORDER BY written DESC LIMIT ?)",
                           (keep,))

    def remembered_count(self) -> int:
        with self.database.read() as db:
            return int(db.all("SELECT COUNT(*) FROM remembered")[0][0])

    def delete_user(self, user_id: str) -> dict:
        """Forget a user's messages, sessions and profile. Returns rows removed per table."""
        tables = {"messages": "messages", "sessions": "sessions", "profile": "profiles"}
        with self.database.write() as db:
            return {name: db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,)).rowcount for name, table in tables.items()}
