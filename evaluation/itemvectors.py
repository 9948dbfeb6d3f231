"""Content vectors for the evaluated catalog, embedded once and cached in the work directory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.records import Item

BATCH = 256


def content_vectors(items: Sequence[Item], embedder, cache_dir: Path | None, progress: bool = False) -> np.ndarray:
    """(items, dim) L2-normalised embeddings of Item.document(), the text the product embeds."""
    documents = [item.document() for item in items]
    digest = hashlib.sha1("\x1e".join([embedder.name, *documents]).encode("utf-8")).hexdigest()[:16]
    cache = Path(cache_dir) / f"vectors-{digest}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        vectors = np.load(cache)
        if vectors.shape[0] == len(items):
            return vectors
    from evaluation.protocols import progress_bar

    bar = progress_bar(len(documents), "embedding the catalog", progress, unit="item")
    chunks = []
    for start in range(0, len(documents), BATCH):
        chunks.append(np.asarray(embedder(documents[start : start + BATCH]), dtype=np.float32))
        bar.update(len(chunks[-1]))
    bar.close()
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), dtype=np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return vectors
