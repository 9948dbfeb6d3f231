"""Greedy generations remembered by their exact prompt.

A local model decoding greedily writes the same text for the same prompt, so what it wrote once
can be served again without running it: the embedded model's reason hook for an item ("a crew
hunted by a deadly creature") depends on the item alone, and a platform shows its popular items
to many users. Under load that is the difference between a model-written reason and none: a
remembered hook costs no model time, so a turn that the busy model turns away still gets it.

Only the text is remembered; every use checks it again against the turn it is shown in. Only
models that say `greedy_repeats` (the local llama.cpp backends) are remembered: a hosted server
may sample, and a cache would hide a changed deployment.

With a `path` the texts are also kept in a SQLite file (`remembered.sqlite` in the data dir):
they outlive a restart, and the workers of one data dir share them, so what one worker's turns
(or the hook writer, assistant/prewrite.py) had the model write serves every worker's next turn.
Only generations whose prompt holds nothing of a user go to the file (the embedded model's
hooks: the item's description); a prompt with the user's words or history stays in memory, so a
deleted user leaves nothing on disk. Deleting the file only makes the model write them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

KEPT_PER_LIMIT = 8  # the file keeps up to this many times the in-memory limit (the newest)
PRUNE_EVERY = 256  # writes between two prunes of the file


class Remembered:
    """A bounded, thread-safe map from (model, prompt, limits) to the text a greedy generation wrote."""

    def __init__(self, limit: int = 4096, path: Path | str | None = None):
        self.limit = limit
        self._texts: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._db: sqlite3.Connection | None = None  # opened when a model that may be remembered binds
        self._path = Path(path) if path is not None and limit > 0 else None
        self._writes = 0

    def bind(self, llm) -> "RememberedFor | None":
        """This cache as seen by one model; None when nothing may be remembered for it."""
        if llm is None or self.limit <= 0 or not getattr(llm, "greedy_repeats", False):
            return None
        if self._path is not None:
            with self._lock:
                if self._path is not None:
                    self._db, self._path = _open(self._path), None
        return RememberedFor(self, (getattr(llm, "backend", ""), str(getattr(llm, "model", ""))))

    def get(self, key: tuple) -> str | None:
        with self._lock:
            text = self._texts.get(key)
            if text is None and self._db is not None:
                text = self._read(key)
                if text is not None:
                    self._keep(key, text)
            if text is None:
                self.misses += 1
                return None
            self._texts.move_to_end(key)
            self.hits += 1
            return text

    def has(self, key: tuple) -> bool:
        """Whether a text is remembered for `key` (counts neither a hit nor a miss)."""
        with self._lock:
            return key in self._texts or (self._db is not None and self._read(key) is not None)

    def put(self, key: tuple, text: str, keep_in_file: bool = True) -> None:
        """Remember `text`; `keep_in_file` False keeps it in this process only (a prompt with the
        user's words or history in it: deleting the user must leave none of it on disk)."""
        with self._lock:
            self._keep(key, text)
            if self._db is not None and keep_in_file:
                self._write(key, text)

    def _keep(self, key: tuple, text: str) -> None:
        self._texts[key] = text
        self._texts.move_to_end(key)
        while len(self._texts) > self.limit:
            self._texts.popitem(last=False)

    def _read(self, key: tuple) -> str | None:
        try:
            row = self._db.execute("SELECT text FROM remembered WHERE key = ?", (_digest(key),)).fetchone()
        except sqlite3.Error as exc:
            self._lose_file(exc)
            return None
        return row[0] if row else None

    def _write(self, key: tuple, text: str) -> None:
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO remembered (key, text, written) VALUES (?, ?, ?)",
                                 (_digest(key), text, time.time()))
                self._writes += 1
                if self._writes % PRUNE_EVERY == 0:
                    self._db.execute(
                        "DELETE FROM remembered WHERE key NOT IN (SELECT key FROM remembered ORDER BY written DESC LIMIT ?)",
                        (self.limit * KEPT_PER_LIMIT,))
        except sqlite3.Error as exc:
            self._lose_file(exc)

    def _lose_file(self, exc: Exception) -> None:
        """A file that cannot be read or written: remember in memory only (what is there still serves)."""
        log.warning("the remembered reasons file failed (%s); remembering in memory only", exc)
        self._db = None

    def __len__(self) -> int:
        return len(self._texts)

    def stats(self) -> dict:
        """In memory, the bound, hits and misses here; `stored`: in the shared file (None without one)."""
        stored = None
        with self._lock:
            if self._db is not None:
                try:
                    stored = self._db.execute("SELECT COUNT(*) FROM remembered").fetchone()[0]
                except sqlite3.Error:
                    stored = None
        return {"entries": len(self), "limit": self.limit, "hits": self.hits, "misses": self.misses, "stored": stored}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _digest(key: tuple) -> str:
    return hashlib.sha256(json.dumps(key, ensure_ascii=False, default=list).encode("utf-8")).hexdigest()


def _open(path: Path) -> sqlite3.Connection | None:
    """The shared file, created if missing; None (memory only, with a warning) when it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # no fsync per write: a lost text is written again, and turns wait on none
        db.execute("CREATE TABLE IF NOT EXISTS remembered (key TEXT PRIMARY KEY, text TEXT NOT NULL, written REAL NOT NULL)")
        db.isolation_level = ""  # `with db:` below is one transaction
        return db
    except (sqlite3.Error, OSError) as exc:
        log.warning("cannot keep remembered reasons in %s (%s); remembering in memory only", path, exc)
        return None


class RememberedFor:
    """The cache for one model and one kind of generation (max_tokens, stops)."""

    def __init__(self, cache: Remembered, model: tuple):
        self.cache = cache
        self.model = model

    def _key(self, prompt, max_tokens: int, stops: Sequence[str]) -> tuple:
        text = prompt if isinstance(prompt, str) else tuple((m.get("role"), m.get("content")) for m in prompt)
        return (*self.model, text, max_tokens, tuple(stops))

    def get(self, prompt, max_tokens: int, stops: Sequence[str]) -> str | None:
        return self.cache.get(self._key(prompt, max_tokens, stops))

    def put(self, prompt, max_tokens: int, stops: Sequence[str], text: str, keep_in_file: bool = True) -> None:
        self.cache.put(self._key(prompt, max_tokens, stops), text, keep_in_file)

    def has(self, prompt, max_tokens: int, stops: Sequence[str]) -> bool:
        return self.cache.has(self._key(prompt, max_tokens, stops))
