"""The global signals as a serving process sees them: start from the published version, fit and
publish when asked (one fit at a time across every process of the data dir), follow what other
processes publish.

Following is cheap enough for every request: one `stat` of the CURRENT pointer. A version
published after a user's data was deleted carries a higher `forgets` count in its manifest;
a worker that sees one adopts it before it answers (every worker's next answer is without the
deleted user's events), while an ordinary refresh is adopted in the background.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


class PublishedSignals:
    def __init__(self, store, root: Path, fit_at_start: int):
        self.store, self.root, self.fit_at_start = store, root, fit_at_start
        self.fitted_at_start: dict | None = None  # the manifest, when building the retriever fitted
        self._lock = threading.Lock()  # one fit or adoption at a time in this process
        self._follow = threading.Lock()
        self._seen: tuple | None = None  # the CURRENT pointer's (inode, mtime, size) last looked at
        self._forgets = 0  # deletions reflected in the version served here
        self._background: threading.Thread | None = None

    def serve(self, retriever) -> None:
        """Start from the last published signals: a worker never reads the whole log to start. A
        log of at most `fit_at_start` events published stale (events written since) or never
        published is fitted now (about a second)."""
        from retrieval.signals import load_signals

        self._seen = self._pointer()
        signals = load_signals(self.root)
        events = self.store.event_count()
        if signals is not None and (signals.manifest.get("events") == events or events > self.fit_at_start):
            self._adopt(retriever, signals)
            if signals.manifest.get("events") != events:
                log.warning("serving signals fitted on %s events; the log now has %s: `recassist fit` refreshes them "
                            "(serve does on its schedule)", signals.manifest.get("events"), events)
            return
        self.fitted_at_start = self.fit(retriever)

    def fit(self, retriever, *, wait: bool = True, forgets: bool = False) -> dict | None:
        """Fit from every event, publish, serve here; returns the manifest (its version included).

        Fits are serialised across the processes of the data dir (a file lock): with `wait`
        False this returns None at once when another process is fitting. `forgets` marks a fit
        made because a user's data was deleted, which every worker adopts before its next answer.
        """
        from retrieval.signals import publish, read_manifest

        with fit_lock(self.root, wait=wait) as mine:
            if not mine:
                return None
            with self._lock:
                before = read_manifest(self.root) or {}
                count = int(before.get("forgets", 0)) + (1 if forgets else 0)

                def publish_marked(fitted):
                    fitted.manifest["forgets"] = count
                    return publish(fitted, self.root)

                signals = retriever.refit(self.store, publish=publish_marked)
                self._forgets = count
                self._seen = self._pointer()
        return dict(signals.manifest)

    def stale(self) -> bool:
        from retrieval.signals import read_manifest

        manifest = read_manifest(self.root)
        return manifest is None or manifest.get("events") != self.store.event_count()

    def reload(self, retriever) -> bool:
        """Adopt a version published since the one `retriever` serves; False when there is none."""
        from retrieval.signals import load_signals, read_manifest

        with self._lock:
            manifest = read_manifest(self.root)
            if manifest is None or manifest.get("version") == retriever.signals_version:
                return False
            signals = load_signals(self.root)
            if signals is None:
                return False
            self._adopt(retriever, signals)
            return True

    def follow(self, retriever) -> None:
        """Before an answer: adopt now a version published after a deletion, start adopting any
        other new version in the background; nothing but a `stat` when nothing was published."""
        from retrieval.signals import read_manifest

        pointer = self._pointer()
        if pointer == self._seen:
            return
        with self._follow:  # concurrent requests wait here while a deletion's version loads
            if pointer == self._seen:
                return
            manifest = read_manifest(self.root)
            if manifest is None or manifest.get("version") == retriever.signals_version:
                self._seen = pointer
                return
            if int(manifest.get("forgets", 0)) > self._forgets:
                self.reload(retriever)
                self._seen = pointer
                return
            self._seen = pointer
            if self._background is None or not self._background.is_alive():
                self._background = threading.Thread(
                    target=self._reload_quietly, args=(retriever,), name="recassist-signals-follow", daemon=True)
                self._background.start()

    def keep_only_current(self) -> None:
        from retrieval.signals import prune

        prune(self.root, keep=1)

    def _adopt(self, retriever, signals) -> None:
        retriever.adopt(signals)
        self._forgets = int(signals.manifest.get("forgets", 0))

    def _reload_quietly(self, retriever) -> None:
        try:
            self.reload(retriever)
        except Exception as exc:  # a damaged version: keep serving the one we have; the next publication retries
            log.warning("adopting the newly published signals failed: %s", exc)

    def _pointer(self) -> tuple | None:
        try:
            st = os.stat(self.root / "CURRENT")
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size


def fit_lock(root: Path, wait: bool = True):
    """Holds the one fit of a data dir's signals (a file lock beside them): yields True when this
    caller holds it, False at once when another holds it and `wait` is False."""
    return file_lock(root / ".fit.lock", wait=wait)


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on `path` among the processes (and threads) of a machine: yields True
    when this caller holds it, False at once when another holds it and `wait` is False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
