"""The composition root: builds the store, vectors, retriever, LLM and agent from one Settings."""

from __future__ import annotations

import logging
import re
import threading
import time
from functools import cached_property
from importlib.resources import files
from pathlib import Path

from assistant import __version__
from assistant.errors import RecassistError
from assistant.settings import Settings

log = logging.getLogger(__name__)


class Engine:
    """Owns the long-lived components; everything is built lazily and can be injected for tests."""

    def __init__(self, settings: Settings, *, llm=None, embedder=None, store=None):
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

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return Store.open(self.settings.resolved_database_url)

    @cached_property
    def embedder(self):
        from retrieval.embeddings import create_embedder

        return create_embedder(self.settings.embedding_backend, self.settings.embedding_device)

    @cached_property
    def chroma(self):
        from retrieval.vectors import open_chroma

        s = self.settings
        return open_chroma(s.chroma_mode, path=str(s.chroma_path), host=s.chroma_host, port=s.chroma_port)

    @cached_property
    def retriever(self):
        from retrieval.candidates import Retriever
        from retrieval.sequential import SequentialModel
        from retrieval.vectors import VectorIndex

        # One content collection per embedding model: switching models never mixes vector spaces.
        slug = re.sub(r"[^a-zA-Z0-9]+", "-", self.embedder.name).lower()[:40].strip("-")  # Chroma: no trailing "-"
        hnsw = {"ef_search": self.settings.hnsw_ef_search}
        content = VectorIndex(self.chroma, f"content-{slug}", self.embedder, hnsw=hnsw)
        collab = VectorIndex(self.chroma, "collab", None, hnsw=hnsw)
        retriever = Retriever(self.store, self.embedder, content, collab, SequentialModel())
        self._sync_vectors(retriever)
        retriever.refit(self.store)
        return retriever

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
                    if self._llm is not None and self._llm.backend == "openai" and self.settings.redact_pii:
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

    @property
    def llm_error(self) -> str | None:
        return self._llm_error

    @cached_property
    def agent(self):
        from assistant.agent import Agent

        return Agent(self)

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
        self.retriever.refit(self.store)
        return report

    def upsert_items(self, rows: list[dict]) -> dict:
        """Validate and upsert items given as dicts (the HTTP API); new/changed ones are embedded at once."""
        from retrieval.ingest import items_from_dicts

        items, rejects = items_from_dicts(rows)
        result = self.store.upsert_items(items)
        pending = self.store.items_needing_embedding([item.id for item in items])
        if pending:
            self.retriever.index_items(pending)
            self.store.mark_embedded(pending)
        return {
            "upserted": len(result.inserted) + len(result.updated),
            "unchanged": len(result.unchanged),
            "rejected": [r.to_dict() for r in rejects],
        }

    def add_events(self, rows: list[dict]) -> dict:
        """Validate and store events given as dicts; duplicates (same event id) are stored once."""
        from retrieval.ingest import events_from_dicts

        events, rejects = events_from_dicts(rows, self.store.item_ids())
        stored = self.store.add_events(events)
        return {"accepted": len(events), "stored": stored, "rejected": [r.to_dict() for r in rejects]}

    def demo_paths(self) -> tuple[Path, Path]:
        base = Path(str(files("assistant.demo_data")))
        return base / "books.jsonl", base / "events.jsonl"

    def demo_users(self) -> list[dict]:
        import json

        base = Path(str(files("assistant.demo_data")))
        return json.loads((base / "users.json").read_text(encoding="utf-8"))

    def load_demo(self, progress=True) -> None:
        """Ingest the shipped demo catalog and users once (idempotent: re-runs change nothing)."""
        books, events = self.demo_paths()
        self.ingest_catalog_file(books, progress=progress)
        self.ingest_events_file(events, progress=progress)

    # Status -------------------------------------------------------------------------------

    def info(self, load_llm: bool = False) -> dict:
        """What is in use: version, data dir, catalog size, users, LLM backend and model, embeddings."""
        from retrieval.embeddings import EMBEDDERS

        s = self.settings
        llm = self.llm if load_llm else self._llm
        if llm is not None:
            backend, model = llm.backend, llm.model
        else:
            backend = s.llm_backend
            model = {
                "llama": str(s.llm_model_path or "gemma-3-270m (embedded, Q4_K_M)"),
                "openai": f"{s.openai_model} at {s.openai_base_url}",
                "fake": "scripted answers (for tests)",
            }.get(s.llm_backend, "-")
        return {
            "version": __version__,
            "data_dir": str(s.data_dir),
            "database": _mask(s.resolved_database_url),
            "vector_store": f"chroma {s.chroma_mode}"
            + (f" {s.chroma_host}:{s.chroma_port}" if s.chroma_mode == "http" else f" {s.chroma_path}"),
            "catalog_items": self.store.item_count(),
            "users": self.store.user_count(),
            "events": self.store.event_count(),
            "llm_backend": backend,
            "llm_model": model,
            "llm_error": self._llm_error,
            "llm_process": _process_text(llm),
            "rank_blend": _blend_text(s),
            "llm_summary": _summary_text(s),
            "embedding_model": getattr(self.embedder, "name", s.embedding_backend)
            if "embedder" in self.__dict__
            else EMBEDDERS[s.embedding_backend],
        }

    def close(self) -> None:
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
    if getattr(llm, "backend", None) == "llama":
        return "inline (in this process: a crash in llama.cpp ends it)"
    return None


def _blend_text(s) -> str:
    """The LLM ranking weight in use, and where it comes from."""
    blend = s.effective_rank_blend
    if s.rank_blend != "auto":
        return f"{blend:g} (set)"
    if s.llm_backend == "none":
        return "- (no LLM)"
    if s.uses_embedded_model:
        return f"{blend:g} (auto: the evaluation's choice for the embedded model; the LLM does not rank)"
    return f"{blend:g} (auto: unmeasured for this model; `recassist eval --backend {s.llm_backend}` measures it)"


def _summary_text(s) -> str:
    """Whether the LLM writes the list summary, and where that comes from."""
    if s.llm_backend == "none":
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
