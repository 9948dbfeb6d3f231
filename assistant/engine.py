"""The composition root: builds the store, vectors, retriever, LLM and agent from one Settings."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from functools import cached_property
from pathlib import Path

from assistant import __version__
from core.errors import ConfigError, RecassistError
from assistant.settings import Settings

log = logging.getLogger(__name__)

FIT_AT_START_EVENTS = 100_000  # a stale or missing publication of a log this small is fitted at start (~1 s)


class Engine:
    """Owns the long-lived components; everything is built lazily and can be injected for tests."""

    def __init__(self, settings: Settings, *, llm=None, embedder=None, store=None, demo: str | None = None):
        from assistant.demos import get_demo

        # The shipped demo this engine serves (None: whichever the store holds, see loaded_demo).
        self.demo = get_demo(demo) if demo else None
        if self.demo and self.demo.embedding and settings.embedding_backend == "minilm":
            settings = settings.model_copy(update={"embedding_backend": self.demo.embedding})  # MiniLM reads English only
        if self.demo and self.demo.own_data and (settings.database_url or settings.chroma_mode == "http"):
            raise ConfigError(
                f"the {self.demo.name!r} demo keeps its own SQLite store and on-disk vectors in {settings.data_dir / ('demo-' + self.demo.name)}, "
                "apart from your catalog; unset RECASSIST_DATABASE_URL and RECASSIST_CHROMA_MODE to run it"
            )
        self.settings = settings
        self._llm = llm
        self._llm_loaded = llm is not None
        self._llm_error: str | None = None
        self._lock = threading.RLock()
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if store is not None:
            self.__dict__["store"] = store

    # Components ---------------------------------------------------------------------------

    @cached_property
    def store(self):
        from retrieval.store import Store

        self.data_dir.mkdir(parents=True, exist_ok=True)
        return Store.open(self.database_url)

    @cached_property
    def memory(self):
        """Conversations and profiles, in the store's database."""
        from assistant.memory_store import MemoryStore

        return MemoryStore(self.store.database)

    @property
    def data_dir(self) -> Path:
        """Where this engine's store and vectors live: the data dir, or a demo's own folder in it."""
        own = self.demo is not None and self.demo.own_data
        return self.settings.data_dir / f"demo-{self.demo.name}" if own else self.settings.data_dir

    @property
    def database_url(self) -> str:
        if self.data_dir == self.settings.data_dir:
            return self.settings.resolved_database_url
        return f"sqlite:///{self.data_dir / 'recassist.db'}"

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @cached_property
    def embedder(self):
        from retrieval.embedders import create_embedder

        return create_embedder(self.settings.embedding_backend, self.settings.embedder_config)

    @cached_property
    def chroma(self):
        from retrieval.vectors import open_chroma

        s = self.settings
        return open_chroma(s.chroma_mode, path=str(self.chroma_path), host=s.chroma_host, port=s.chroma_port)

    @cached_property
    def retriever(self):
        from retrieval.candidates import Retriever
        from retrieval.freshness import Freshness
        from retrieval.live import LiveCounters
        from retrieval.sequential import SequentialModel
        from retrieval.vectors import VectorIndex, content_collection_name

        hnsw = {"ef_search": self.settings.hnsw_ef_search}
        content = VectorIndex(self.chroma, content_collection_name(self.embedder), self.embedder, hnsw=hnsw)
        collab = VectorIndex(self.chroma, "collab", None, hnsw=hnsw)
        retriever = Retriever(self.store, self.embedder, content, collab, SequentialModel())
        LiveCounters(self.store, poll_s=self.settings.live_poll_s).attach(retriever)
        if self.settings.freshness_half_life_hours > 0:
            retriever.freshness = Freshness(self.store, self.settings.freshness_half_life_hours)
        self._sync_vectors(retriever)
        self.signals.serve(retriever)
        return retriever

    # Global signals: fitted by a job, published, served (assistant/fitted.py) -----------------

    @property
    def signals_dir(self) -> Path:
        """Where fitted signals are published (retrieval.signals): every worker of this data dir reads them
        (the `signals_dir` setting: one shared folder for workers on several hosts)."""
        return self.settings.resolved_signals_dir

    @cached_property
    def signals(self):
        from assistant.fitted import PublishedSignals

        return PublishedSignals(self.store, self.signals_dir, fit_at_start=FIT_AT_START_EVENTS)

    def fit(self, *, wait: bool = True, forgets: bool = False) -> dict | None:
        """Fit popularity, trending, sequential and collaborative signals from every event, publish
        them for every worker of this data dir, and serve them here. Returns the manifest, or None
        when `wait` is False and another process of the data dir is fitting now."""
        if "retriever" not in self.__dict__:
            self.signals.fitted_at_start = None
            self.retriever  # building it serves the published signals, or fits when they are stale
            if self.signals.fitted_at_start is not None and not forgets:
                return self.signals.fitted_at_start
        return self.signals.fit(self.retriever, wait=wait, forgets=forgets)

    def serving_retriever(self):
        """The retriever for an answer, after following what was published (a `stat` when nothing was)."""
        retriever = self.retriever
        self.signals.follow(retriever)
        return retriever

    def signals_stale(self) -> bool:
        """True when events were written or deleted since the published signals were fitted."""
        return self.signals.stale()

    def reload_signals(self) -> bool:
        """Serve the signals another process published since (a `recassist fit`, another worker)."""
        return "retriever" in self.__dict__ and self.signals.reload(self.retriever)

    def forget_fitted(self) -> None:
        """After a user's events were deleted: fit again and keep only that version, so nothing
        published from their events survives (the artifact holds item-level aggregates only)."""
        self.fit(forgets=True)  # waits for a fit in progress, which may have read their events
        self.signals.keep_only_current()

    def _sync_vectors(self, retriever) -> None:
        """Embed catalog items missing from the vector store (new model, or a fresh Chroma server)."""
        if retriever.content.count() >= self.store.item_count():
            return
        present = set(retriever.content.all_ids())
        missing = [item for item in self.store.iter_items() if item.id not in present]
        if missing:
            log.info("embedding %d catalog items missing from %s", len(missing), retriever.content.name)
            retriever.index_items(missing)

    @property
    def llm(self):
        """The configured LLM, loaded on first use; None when disabled or it failed to load."""
        with self._lock:
            if not self._llm_loaded:
                self._llm_loaded = True
                from assistant.llm.factory import create_llm

                try:
                    self._llm = create_llm(self.settings)
                    if self._llm is not None and self._llm.remote and self.settings.redact_pii:
                        from assistant.llm.redact import RedactingLLM

                        self._llm = RedactingLLM(self._llm)
                except RecassistError as exc:
                    self._llm_error = str(exc)
                    log.warning("LLM unavailable, answering from retrieval alone: %s", exc)
            return self._llm

    def warm_up(self) -> str:
        """Before serving: build the retriever, then run dry-run turns (nothing stored), so the first
        user's turn finds everything loaded. Returns what happened, for the log."""
        try:
            self.retriever  # the embedder loaded and the signals fitted now, not in the first user's turn
        except RecassistError as exc:  # e.g. a Chroma server not up yet: each request retries and says so
            return f"warning: retrieval is not ready yet ({exc}); requests will try again"
        started = time.monotonic()
        self.agent.warm_up_turns()
        return f"Warmed up with two dry-run turns in {time.monotonic() - started:.1f}s."

    def write_ahead(self):
        """Start writing reason hooks ahead in the model's idle time (assistant/prewrite.py): the
        writer, or None when `llm_write_ahead` is 0 or the loaded model's reasons cannot be."""
        if self.settings.llm_write_ahead <= 0 or self.agent.write_ahead_setup() is None:
            return None
        from assistant.prewrite import HookWriter

        self._writer = HookWriter(self.agent, lambda: self.retriever, items=self.settings.llm_write_ahead,
                                  lock_path=self.data_dir / ".write-ahead.lock")
        self._writer.start()
        return self._writer

    @property
    def llm_error(self) -> str | None:
        return self._llm_error

    @cached_property
    def agent(self):
        from assistant.agent import Agent
        from assistant.turn import Parts

        return Agent(Parts(
            settings=self.settings,
            store=self.store,
            memory=self.memory,
            retriever=self.serving_retriever,
            llm=lambda: self.llm,
            llm_error=lambda: self.llm_error,
            forget_fitted=self.forget_fitted,
        ))

    # Data in ------------------------------------------------------------------------------

    def ingest_catalog_file(self, path, mapping=None, progress=True):
        """Read, validate, store and embed a catalog file; returns the ingest report."""
        from retrieval.ingest import ingest_catalog

        return ingest_catalog(
            Path(path), self.store, mapping=mapping, index=self.retriever.index_items, progress=progress
        )

    def ingest_events_file(self, path, mapping=None, progress=True):
        """Read, validate and store a behaviour file, then refresh the collaborative signals."""
        from retrieval.ingest import ingest_events

        report = ingest_events(Path(path), self.store, mapping=mapping, progress=progress)
        self.fit()
        return report

    def ingest_dialogs_file(self, path, user_prefix: str = "dialog:", base_time: float | None = None) -> dict:
        """Load a ReDial-format dialog log as behaviour (retrieval.dialog_log), then refit the signals."""
        import os

        from core.errors import ConfigError
        from retrieval.dialog_log import load_redial
        from retrieval.writes import write_events

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: give a ReDial-format .jsonl (one dialog a line)")
        if self.store.item_count() == 0:
            raise ConfigError("the catalog is empty: load it first with `recassist ingest-catalog FILE`, then the dialogs")
        vocab = self.agent.vocabulary()  # the catalog's titles, as chat links them (built once, shared)
        # The file's time: loading the same file again gives the same event ids (nothing stored twice).
        base = os.path.getmtime(path) if base_time is None else base_time
        loaded = load_redial(path, set(vocab.title_of), vocab.title_index, base, user_prefix)
        stored = write_events(self.store, loaded.events)
        if loaded.events:
            self.fit()
        kinds = dict(Counter(event.type for event in loaded.events))
        return {"dialogs": loaded.dialogs, "events": len(loaded.events), "stored": stored, "by_type": kinds,
                "linked_by_title": loaded.linked_by_title, "works_not_in_catalog": loaded.not_in_catalog,
                "rejected": loaded.rejects}

    def upsert_items(self, rows: list[dict]) -> dict:
        """Validate and upsert items given as dicts (the HTTP API); new/changed ones are embedded at once."""
        from retrieval.ingest import items_from_dicts
        from retrieval.writes import write_items

        items, rejects = items_from_dicts(rows)
        # The retriever is built only when something needs embedding (an all-unchanged batch loads nothing).
        written = write_items(self.store, lambda pending: self.retriever.index_items(pending), items)
        return {
            "upserted": written.upserted,
            "unchanged": len(written.unchanged),
            "rejected": [r.to_dict() for r in rejects],
        }

    def add_events(self, rows: list[dict]) -> dict:
        """Validate and store events given as dicts; duplicates (same event id) are stored once."""
        from retrieval.ingest import event_item_ids, events_from_dicts
        from retrieval.writes import write_events

        named = event_item_ids(rows)
        known = set(self.store.get_items(named)) if named else set()  # events on unknown items are rejected
        events, rejects = events_from_dicts(rows, known)
        stored = write_events(self.store, events)
        if stored and "retriever" in self.__dict__ and self.retriever.live is not None:
            self.retriever.live.poll()  # this worker counts them at once; the others within their poll
        return {"accepted": len(events), "stored": stored, "rejected": [r.to_dict() for r in rejects]}

    def demo_paths(self) -> tuple[Path, Path]:
        """The catalog and events files `load_demo` reads: this engine's demo, else the English one."""
        from assistant.demos import DEMOS

        return (self.demo or DEMOS["en"]).files()

    def demo_users(self) -> list[dict]:
        """The readers to offer: of this engine's demo, else of the demo its store holds, else English."""
        from assistant.demos import DEMOS

        return (self.demo or self.loaded_demo() or DEMOS["en"]).users()

    def loaded_demo(self):
        """The shipped demo whose catalog is in the store (its first item, same title), or None."""
        from assistant.demos import DEMOS

        for demo in [self.demo] if self.demo else DEMOS.values():
            item_id, title = demo.first_item()
            item = self.store.get_item(item_id)
            if item is not None and item.title == title:
                return demo
        return None

    def load_demo(self, progress=True) -> None:
        """Ingest the shipped demo catalog and users once (idempotent: re-runs change nothing)."""
        books, events = self.demo_paths()
        self.ingest_catalog_file(books, progress=progress)
        self.ingest_events_file(events, progress=progress)

    # Status -------------------------------------------------------------------------------

    def info(self, load_llm: bool = False) -> dict:
        """What is in use: version, data dir, catalog size, users, LLM backend and model, embeddings."""
        from assistant.llm.registry import backend as llm_backend

        from assistant.demos import DEMOS

        s = self.settings
        llm = self.llm if load_llm else self._llm
        demo = self.loaded_demo()
        # Demos kept in folders of their own are another store: say where, so `info` finds them.
        elsewhere = [
            f"{d.name} in {s.data_dir / ('demo-' + d.name)} (recassist info --demo {d.name})"
            for d in DEMOS.values() if d.own_data and d is not self.demo and (s.data_dir / f"demo-{d.name}").is_dir()
        ]
        if llm is not None:
            backend, model = llm.backend, llm.model
        else:
            spec = llm_backend(s.llm_backend)
            backend, model = s.llm_backend, spec.describe(s) if spec.describe else "-"
        try:
            embedder = self.embedder  # cheap: models load on first use
            name, dim = embedder.name, embedder.dim  # a size not declared loads the model (or asks its server) now
        except RecassistError as exc:
            name, dim = s.embedding_model or s.embedding_backend, f"unknown ({exc})"
        return {
            "version": __version__,
            "data_dir": str(self.data_dir),
            "database": _mask(self.database_url),
            "vector_store": f"chroma {s.chroma_mode}"
            + (f" {s.chroma_host}:{s.chroma_port}" if s.chroma_mode == "http" else f" {self.chroma_path}"),
            "demo": f"{demo.name} ({demo.description})" if demo else None,
            "other_demos": "; ".join(elsewhere) or None,
            "catalog_items": self.store.item_count(),
            "users": self.store.user_count(),
            "events": self.store.event_count(),
            "llm_backend": backend,
            "llm_model": model,
            "llm_error": self._llm_error,
            "llm_process": _process_text(llm),
            "rank_blend": _blend_text(s),
            "llm_summary": _summary_text(s),
            "llm_reasons_remembered": self._remembered_text(),
            "signals": self._signals_text(),
            "embedding_backend": s.embedding_backend,
            "embedding_model": name,
            "embedding_dim": dim,
        }

    def _remembered_text(self) -> str | None:
        """What the model's remembered reasons hold, and what this process wrote ahead (None: not in use)."""
        if "agent" not in self.__dict__ or self._llm is None:  # `recassist info` loads no model for this
            return None
        st = self.agent.remembered_stats()
        if st is None:
            return None
        kept = f"{st['stored']} kept in the store" if st["stored"] is not None else f"{st['entries']} in memory"
        writer = getattr(self, "_writer", None)
        ahead = f"; {writer.written} written ahead here" if writer is not None else ""
        shared = f", {st['shared']} shared by concurrent turns" if st.get("shared") else ""
        return f"{kept}; {st['hits']} served, {st['misses']} missed{shared}{ahead}"

    def _signals_text(self) -> str:
        """The published version a worker serves: when, from how much, and what it carries."""
        from retrieval.signals import read_manifest

        try:
            m = read_manifest(self.signals_dir)
        except RecassistError as exc:
            return f"unreadable: {exc}"
        if m is None:
            return "none published yet (`recassist fit`)"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(m.get("created_at", 0)))
        c = m.get("content")
        carries = (f"; content vectors of {c['vectors']:,} items and searches of the {c['searched'] + c['lent']:,} most popular"
                   if c else "; no content vectors (fitted by an older version: `recassist fit` adds them)")
        return f"{m['version']} fitted {when} on {m.get('events', 0):,} events{carries}"

    def close(self) -> None:
        if getattr(self, "_writer", None) is not None:
            self._writer.stop()
        if "store" in self.__dict__:
            self.store.close()
        if self._llm is not None and hasattr(self._llm, "supervisor"):
            self._llm.close()  # stops the model process this engine started


def _process_text(llm) -> str | None:
    """Where a local model runs, and how it fares (None for other backends)."""
    supervisor = getattr(llm, "supervisor", None)
    if supervisor is not None:
        st = supervisor.status()
        text = f"own process, {st['state']} (pid {st['pid']}, {st['restarts']} restarts"
        return text + (f"; last one {st['last_exit']})" if st["last_exit"] else ")")
    if getattr(llm, "socket_path", None):
        return f"shared process at {llm.socket_path}"
    if getattr(llm, "one_call_at_a_time", False) and not getattr(llm, "remote", True):
        return "inline (in this process: a crash in llama.cpp ends it)"
    return None


def _blend_text(s) -> str:
    """The LLM ranking weight in use, and where it comes from."""
    blend = s.effective_rank_blend
    if s.rank_blend != "auto":
        return f"{blend:g} (set)"
    if not s.has_llm:
        return "- (no LLM)"
    if s.uses_embedded_model:
        return f"{blend:g} (auto: the evaluation's choice for the embedded model; the LLM does not rank)"
    return f"{blend:g} (auto: unmeasured for this model; `recassist eval --backend {s.llm_backend}` measures it)"


def _summary_text(s) -> str:
    """Whether the LLM writes the list summary, and where that comes from."""
    if not s.has_llm:
        return "- (no LLM)"
    on = "on" if s.effective_llm_summary else "off"
    if s.llm_summary != "auto":
        return f"{on} (set)"
    if s.uses_embedded_model:
        return (f"{on} (auto: the embedded model's summaries failed the check in the evaluation; the list summary "
                "is built from the cards, and an item is described by its own description)")
    return f"{on} (auto)"


def _mask(url: str) -> str:
    """Hide a password in a database URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
