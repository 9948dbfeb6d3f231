"""recassist's embedder as LangChain `Embeddings`, and its Chroma content collection as a LangChain vector store."""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
from langchain_core.embeddings import Embeddings

from retrieval.embeddings import Embedder, embed_queries


class RecassistEmbeddings(Embeddings):
    """The embedder recassist indexes its catalog with: same model, same vector space, offline.

    Queries go through the embedder's query side where it has one (E5's "query: " prefix).
    """

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return np.asarray(self.embedder(list(texts)), dtype=np.float32).tolist()

    def embed_query(self, text: str) -> list[float]:
        return np.asarray(embed_queries(self.embedder, [text]), dtype=np.float32)[0].tolist()


def content_vectorstore(engine):
    """recassist's content collection, opened by `langchain_chroma.Chroma` with the engine's own Chroma client.

    Search results carry the item's metadata (title, categories, year, creator...) and its id.
    recassist stores each item's text beside its vector; LangChain's Chroma skips rows without
    text, so a collection written by an earlier version needs `write_item_texts(engine)` once.
    """
    from integrations.langchain import require

    langchain_chroma = require("langchain_chroma", "content_vectorstore")
    index = engine.retriever.content  # building the retriever embeds any item missing from the collection
    with warnings.catch_warnings():
        # recassist's embedding function is stored as a "legacy" config (see retrieval/vectors.py); LangChain embeds itself.
        warnings.filterwarnings("ignore", "legacy embedding function config", DeprecationWarning)
        return langchain_chroma.Chroma(
            client=engine.chroma,
            collection_name=index.name,
            embedding_function=RecassistEmbeddings(engine.embedder),
            create_collection_if_not_exists=False,  # a wrong name is an error, never a new empty collection
        )


def write_item_texts(engine, ids: Iterable[str] | None = None) -> int:
    """Store each item's text (the text its vector was embedded from) beside its vector; returns how many.

    Idempotent: run it again after a catalog change so the texts follow the items. The vectors and
    metadata recassist wrote are left as they are.
    """
    index = engine.retriever.content
    wanted = list(dict.fromkeys(ids)) if ids is not None else [item.id for item in engine.store.iter_items()]
    written = 0
    for start in range(0, len(wanted), index.batch_size):
        batch = wanted[start : start + index.batch_size]
        items = engine.store.get_items(batch)
        vectors = index.get_vectors([i for i in batch if i in items])
        present = [i for i in batch if i in vectors]
        if not present:
            continue
        # Chroma re-embeds texts given without vectors; passing the stored ones keeps them exactly.
        index.collection.update(
            ids=present,
            embeddings=np.stack([vectors[i] for i in present]),
            documents=[items[i].document() for i in present],
        )
        written += len(present)
    return written
