"""Chroma collections behind one small class, embedded on disk or behind a `chroma run` server."""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from typing import Sequence

import numpy as np

from core.errors import StoreError
from retrieval.embeddings import ChromaEmbeddingFunction, Embedder

log = logging.getLogger(__name__)

# ef_search 200 (Chroma's own is 100). 400 took recall@50 against exact search at 100k items from
# 0.959 to 0.978, but what a user is shown did not move: at 200k items and 10M events the 20
# candidates of 300 users, and of 200 with a request, were the same set with 200 and 400 (498 of 500
# in the same order), MovieLens-small Recall@10 was the same, and a request's CPU went from 6.8-8.0
# ms to 5.9-6.3 (the profile search is the one Chroma call a request makes).
DEFAULT_HNSW = {"ef_search": 200}
FALLBACK_BATCH = 4000  # used when the client cannot tell its max batch size (5461 in Chroma 1.5)
PAGE = 10_000  # ids per page when listing a whole collection


def open_chroma(mode: str, path: str | None = None, host: str | None = None, port: int | None = None):
    """A Chroma client: `PersistentClient(path)` or `HttpClient(host, port)`, telemetry off."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if mode == "persistent":
        if not path:
            raise StoreError("Chroma persistent mode needs a path (set RECASSIST_DATA_DIR)")
        try:
            return chromadb.PersistentClient(path=str(path), settings=settings)
        except Exception as exc:
            raise StoreError(f"cannot open the Chroma store in {path}: {type(exc).__name__}: {exc}") from None
    if mode == "http":
        host, port = host or "127.0.0.1", int(port or 8000)
        try:
            client = chromadb.HttpClient(host=host, port=port, settings=settings)
            client.heartbeat()
        except Exception as exc:
            raise StoreError(unreachable_message(host, port, exc)) from None
        return client
    raise StoreError(f"unknown Chroma mode {mode!r}; set RECASSIST_CHROMA_MODE to 'persistent' or 'http'")


def content_collection_name(embedder: Embedder) -> str:
    """One content collection per embedding model: its name and dimension, so switching models
    (or a server whose model changed size) never mixes vector spaces; it then embeds the catalog anew.

    A short hash of the whole name tells apart names that read alike once shortened (two folders
    holding models); the readable part keeps the name's end, where model names and folders differ.
    """
    name = embedder.name
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", name).lower().strip("-")[-32:].strip("-")  # Chroma: no "-" at the ends
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"content-{slug}-{int(embedder.dim)}-{digest}"


def unreachable_message(host, port, exc: BaseException | None = None) -> str:
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return (
        f"Chroma server at {host}:{port} is not reachable{why}; start it with "
        f"`chroma run --path DIR --host {host} --port {port}` or set RECASSIST_CHROMA_MODE=persistent"
    )


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import httpx
    except ImportError:  # pragma: no cover - chromadb depends on httpx
        return False
    # Chroma raises httpx errors from calls, and a ValueError("Could not connect ...") when opening.
    return isinstance(exc, (httpx.TransportError, ConnectionError)) or "could not connect" in str(exc).lower()


class VectorIndex:
    """One Chroma collection of item vectors (cosine space), keyed by item id.

    The collection handle is opened lazily and dropped after any failure, so a Chroma server
    that went away and came back is picked up again by the next call.
    """

    def __init__(self, client, name: str, embedder: Embedder | None = None, hnsw: dict | None = None):
        self.client = client
        self.name = name
        self.embedder = embedder
        # HNSW knobs (Chroma's names: ef_search, ef_construction, max_neighbors); see DEFAULT_HNSW.
        self.hnsw = {**DEFAULT_HNSW, **(hnsw or {})}
        self._collection = None
        self._batch: int | None = None
        self.version = 0  # counts writes through this object (upsert, delete, reset): caches compare it

    def __repr__(self) -> str:
        return f"VectorIndex({self.name!r})"

    @property
    def collection(self):
        if self._collection is None:
            # Our embedding function (or none for precomputed-only collections): Chroma's default
            # would download a model at run time and fail offline.
            function = ChromaEmbeddingFunction(self.embedder) if self.embedder is not None else None
            with warnings.catch_warnings():
                # Chroma stores our function as a "legacy" config (nothing to rebuild it from on
                # the server side), which is what we want: every caller passes it again.
                warnings.filterwarnings("ignore", "legacy embedding function config", DeprecationWarning)
                collection = self._guard(
                    "open",
                    lambda: self.client.get_or_create_collection(
                        self.name, embedding_function=function, configuration={"hnsw": {"space": "cosine", **self.hnsw}}
                    ),
                )
            self._align_search_breadth(collection)
            self._collection = collection
        return self._collection

    def _align_search_breadth(self, collection) -> None:
        """A collection made earlier keeps its own ef_search: update it (read on the next open)."""
        wanted = self.hnsw.get("ef_search")
        try:
            current = (collection.configuration or {}).get("hnsw", {}).get("ef_search")
            if wanted and current and current != wanted:
                collection.modify(configuration={"hnsw": {"ef_search": wanted}})
        except Exception as exc:  # an older server without configuration support: keep its setting
            log.info("could not set ef_search=%s on %s: %s", wanted, self.name, exc)

    def _guard(self, what: str, call):
        try:
            return call()
        except StoreError:
            raise
        except Exception as exc:
            self._collection = None
            raise StoreError(self._explain(what, exc)) from None

    def _explain(self, what: str, exc: BaseException) -> str:
        settings = getattr(self.client, "get_settings", lambda: None)()
        host = getattr(settings, "chroma_server_host", None)
        if host and _is_connection_error(exc):
            return unreachable_message(host, settings.chroma_server_http_port, exc)
        text = str(exc)
        hint = ""
        if "dimension" in text.lower():
            hint = (
                f"; the collection {self.name!r} holds vectors of another size (a different embedding "
                "model?): use a collection named after the model, or delete this one and re-index"
            )
        return f"Chroma {what} on collection {self.name!r} failed: {type(exc).__name__}: {text}{hint}"

    def _call(self, method: str, **kwargs):
        collection = self.collection
        return self._guard(method, lambda: getattr(collection, method)(**kwargs))

    @property
    def batch_size(self) -> int:
        if self._batch is None:
            try:
                self._batch = max(1, min(int(self.client.get_max_batch_size()), 50_000))
            except Exception:  # an old server without the endpoint
                self._batch = FALLBACK_BATCH
        return self._batch

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray | None = None,
        metadatas: list[dict] | None = None,
        documents: list[str] | None = None,
    ) -> None:
        """Insert or replace vectors (embedded from `documents` by our embedder when not given)."""
        ids = list(ids)
        if not ids:
            return
        if vectors is None:
            if documents is None or self.embedder is None:
                raise StoreError(f"upsert into {self.name!r} needs vectors, or documents and an embedder")
            vectors = self.embedder(documents)
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(vectors) != len(ids):
            raise StoreError(f"upsert into {self.name!r}: {len(ids)} ids but {len(vectors)} vectors")
        step = self.batch_size
        try:
            for start in range(0, len(ids), step):
                end = start + step
                kwargs = {"ids": ids[start:end], "embeddings": vectors[start:end]}
                if metadatas is not None:
                    kwargs["metadatas"] = [_clean_metadata(m) for m in metadatas[start:end]]
                if documents is not None:
                    kwargs["documents"] = list(documents[start:end])
                self._call("upsert", **kwargs)
        finally:
            self.version += 1  # after the write: a query that overlapped it sees the change

    def query(self, vector: np.ndarray, k: int, where: dict | None = None) -> list[tuple[str, float]]:
        """The k nearest ids with their cosine similarity, best first."""
        return self.query_many([vector], k, where)[0]

    def query_many(self, vectors: Sequence[np.ndarray], k: int, where: dict | None = None) -> list[list[tuple[str, float]]]:
        """`query` for several vectors in one round trip."""
        if k <= 0 or not len(vectors):
            return [[] for _ in vectors]
        kwargs = {
            "query_embeddings": np.asarray(vectors, dtype=np.float32),
            "n_results": int(k),
            "include": ["distances"],
        }
        if where:
            kwargs["where"] = where
        result = self._call("query", **kwargs)
        return [
            [(i, 1.0 - float(d)) for i, d in zip(ids, distances)]
            for ids, distances in zip(result["ids"], result["distances"])
        ]

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by id; unknown ids are simply absent."""
        ids = list(dict.fromkeys(ids))  # Chroma rejects a repeated id in one get
        out: dict[str, np.ndarray] = {}
        step = self.batch_size
        for start in range(0, len(ids), step):
            result = self._call("get", ids=ids[start : start + step], include=["embeddings"])
            vectors = np.asarray(result["embeddings"], dtype=np.float32)
            out.update(zip(result["ids"], vectors))
        return out

    def get_matrix(self, ids: Sequence[str]) -> tuple[list[int], np.ndarray]:
        """Stored vectors of many ids as one float32 matrix, filled in place (no dict of rows, no
        list of parts): the positions in `ids` that have a vector, and their vectors in that order."""
        ids = list(ids)
        where = {item_id: n for n, item_id in enumerate(ids)}
        out: np.ndarray | None = None
        have = np.zeros(len(ids), dtype=bool)
        step = self.batch_size
        for start in range(0, len(ids), step):
            result = self._call("get", ids=list(dict.fromkeys(ids[start : start + step])), include=["embeddings"])
            if not len(result["ids"]):
                continue
            vectors = np.asarray(result["embeddings"], dtype=np.float32)
            if out is None:
                out = np.zeros((len(ids), vectors.shape[1]), np.float32)
            rows = [where[i] for i in result["ids"]]
            out[rows] = vectors
            have[rows] = True
        if out is None:
            return [], np.zeros((0, 0), np.float32)
        found = np.flatnonzero(have)
        return found.tolist(), (out if len(found) == len(ids) else out[found])

    def get_ids(self, where: dict, limit: int) -> list[str]:
        """Ids of up to `limit` items whose metadata matches `where` (in no particular order)."""
        if limit <= 0:
            return []
        return list(self._call("get", where=where, limit=int(limit), include=[])["ids"])

    def delete(self, ids: Sequence[str]) -> None:
        ids = list(ids)
        step = self.batch_size
        try:
            for start in range(0, len(ids), step):
                self._call("delete", ids=ids[start : start + step])
        finally:
            self.version += 1

    def count(self) -> int:
        return int(self._call("count"))

    def all_ids(self) -> list[str]:
        """Every id in the collection, fetched a page at a time."""
        out: list[str] = []
        while True:
            page = self._call("get", include=[], limit=PAGE, offset=len(out))["ids"]
            out.extend(page)
            if len(page) < PAGE:
                return out

    def reset(self) -> None:
        """Drop the whole collection; the next call recreates it empty."""
        try:
            self.client.delete_collection(self.name)
        except Exception as exc:
            if _is_connection_error(exc):
                raise StoreError(self._explain("delete_collection", exc)) from None
            # Otherwise it did not exist: nothing to drop.
        finally:
            self.version += 1
        self._collection = None


def _clean_metadata(meta: dict | None) -> dict | None:
    """Chroma takes scalars and non-empty lists only: drop None values and empty lists."""
    if not meta:
        return None
    clean = {k: v for k, v in meta.items() if v is not None and not (isinstance(v, list) and not v)}
    return clean or None
