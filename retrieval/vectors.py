"""Chroma collections behind one small class: embedded on disk or a `chroma run` server."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from assistant.errors import StoreError
from retrieval.embeddings import ChromaEmbeddingFunction, Embedder

_BATCH = 4000  # under Chroma's max batch size


def open_chroma(mode: str, path: str | None = None, host: str | None = None, port: int | None = None):
    """A Chroma client: PersistentClient(path) or HttpClient(host, port), telemetry off."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if mode == "persistent":
        return chromadb.PersistentClient(path=str(path), settings=settings)
    if mode == "http":
        try:
            client = chromadb.HttpClient(host=host, port=int(port), settings=settings)
            client.heartbeat()
        except Exception as exc:
            raise StoreError(_unreachable(host, port, exc)) from None
        return client
    raise StoreError(f"unknown Chroma mode {mode!r}; use 'persistent' or 'http' (RECASSIST_CHROMA_MODE)")


def _unreachable(host, port, exc) -> str:
    return (
        f"Chroma server at {host}:{port} is not reachable ({type(exc).__name__}); start it with "
        f"`chroma run --path DIR --host {host} --port {port}` or set RECASSIST_CHROMA_MODE=persistent"
    )


class _PrecomputedOnly:
    """Embedding function for collections we always fill with vectors (Chroma's default downloads)."""

    def __call__(self, input):  # noqa: A002
        raise StoreError("this collection stores precomputed vectors; pass embeddings explicitly")

    def name(self) -> str:
        return "recassist-precomputed"

    def is_legacy(self) -> bool:
        return False

    def get_config(self) -> dict:
        return {}

    @staticmethod
    def build_from_config(config):
        return _PrecomputedOnly()


class VectorIndex:
    """One Chroma collection (cosine space) of item vectors keyed by item id."""

    def __init__(self, client, name: str, embedder: Embedder | None = None):
        self.client = client
        self.name = name
        self.embedder = embedder
        self._collection = None

    @property
    def collection(self):
        # Opened lazily and re-opened after a failure, so a restarted server is picked up again.
        if self._collection is None:
            function = ChromaEmbeddingFunction(self.embedder) if self.embedder is not None else _PrecomputedOnly()
            try:
                self._collection = self.client.get_or_create_collection(
                    self.name, embedding_function=function, metadata={"hnsw:space": "cosine"}
                )
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot open Chroma collection {self.name!r}: {exc}") from None
        return self._collection

    def _call(self, method: str, **kwargs):
        try:
            return getattr(self.collection, method)(**kwargs)
        except StoreError:
            raise
        except Exception as exc:
            self._collection = None
            raise StoreError(f"Chroma {method} on {self.name!r} failed: {type(exc).__name__}: {exc}") from None

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadatas: list[dict] | None = None, documents: list[str] | None = None) -> None:
        for start in range(0, len(ids), _BATCH):
            end = start + _BATCH
            kwargs = {"ids": list(ids[start:end]), "embeddings": np.asarray(vectors[start:end], dtype=np.float32)}
            if metadatas is not None:
                kwargs["metadatas"] = metadatas[start:end]
            if documents is not None:
                kwargs["documents"] = documents[start:end]
            self._call("upsert", **kwargs)

    def query(self, vector: np.ndarray, k: int, where: dict | None = None) -> list[tuple[str, float]]:
        """Nearest ids with cosine similarity, best first."""
        count = self.count()
        if count == 0 or k <= 0:
            return []
        kwargs = {"query_embeddings": [np.asarray(vector, dtype=np.float32)], "n_results": min(k, count), "include": ["distances"]}
        if where:
            kwargs["where"] = where
        result = self._call("query", **kwargs)
        return [(i, 1.0 - float(d)) for i, d in zip(result["ids"][0], result["distances"][0])]

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        ids = list(dict.fromkeys(ids))  # Chroma rejects duplicate ids in one get
        if not ids:
            return {}
        result = self._call("get", ids=ids, include=["embeddings"])
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(result["ids"], result["embeddings"])}

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._call("delete", ids=list(ids))

    def count(self) -> int:
        return int(self._call("count"))

    def all_ids(self) -> list[str]:
        return list(self._call("get", include=[])["ids"])

    def reset(self) -> None:
        """Drop every vector (used before a collaborative refit)."""
        try:
            self.client.delete_collection(self.name)
        except Exception:  # absent already: nothing to drop
            pass
        self._collection = None
