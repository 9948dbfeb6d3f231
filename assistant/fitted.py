"""The global signals as a serving process sees them: start from the published version, fit and
publish when asked (one fit at a time in this process), follow what other processes publish."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class PublishedSignals:
    def __init__(self, store, root: Path, fit_at_start: int):
        self.store, self.root, self.fit_at_start = store, root, fit_at_start
        self.fitted_at_start: dict | None = None  # the manifest, when building the retriever fitted
        self._lock = threading.Lock()

    def serve(self, retriever) -> None:
        """Start from the last published signals: a worker never reads the whole log to start. A
        log of at most `fit_at_start` events published stale (events written since) or never
        published is fitted now (about a second)."""
        from retrieval.signals import load_signals

        signals = load_signals(self.root)
        events = self.store.event_count()
        if signals is not None and (signals.manifest.get("events") == events or events > self.fit_at_start):
            retriever.adopt(signals)
            if signals.manifest.get("events") != events:
                log.warning("serving signals fitted on %s events; the log now has %s: `recassist fit` refreshes them "
                            "(serve does on its schedule)", signals.manifest.get("events"), events)
            return
        self.fitted_at_start = self.fit(retriever)

    def fit(self, retriever) -> dict:
        """Fit from every event, publish, serve here; returns the manifest (its version included)."""
        from retrieval.signals import publish

        with self._lock:
            signals = retriever.refit(self.store, publish=lambda fitted: publish(fitted, self.root))
        return dict(signals.manifest)

    def stale(self) -> bool:
        from retrieval.signals import read_manifest

        manifest = read_manifest(self.root)
        return manifest is None or manifest.get("events") != self.store.event_count()

    def reload(self, retriever) -> bool:
        """Adopt a version published since the one `retriever` serves; False when there is none."""
        from retrieval.signals import load_signals, read_manifest

        manifest = read_manifest(self.root)
        if manifest is None or manifest.get("version") == retriever.signals_version:
            return False
        signals = load_signals(self.root)
        if signals is None:
            return False
        retriever.adopt(signals)
        return True

    def keep_only_current(self) -> None:
        from retrieval.signals import prune

        prune(self.root, keep=1)
