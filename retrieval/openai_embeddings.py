"""Any OpenAI-compatible /v1/embeddings server: OpenAI itself, vLLM, llama.cpp's server, Ollama, TEI..."""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlparse

import numpy as np

from core.errors import ConfigError, StoreError

PROBE = "dimension probe"  # embedded once when the dimension is asked for before any text


class OpenAIEmbedder:
    """Texts sent in batches to `base_url`/embeddings; vectors L2-normalised here (not every server does)."""

    def __init__(self, base_url: str, model: str, api_key: str = "", *, batch_size: int = 64,
                 timeout_s: float = 60.0, max_retries: int = 1, client=None):
        if not base_url:
            raise ConfigError("the openai embedder needs RECASSIST_EMBEDDING_BASE_URL (e.g. http://127.0.0.1:8080/v1)")
        if not model:
            raise ConfigError("the openai embedder needs RECASSIST_EMBEDDING_MODEL: the model name the server knows")
        if batch_size < 1:
            raise ConfigError(f"the openai embedder's batch size must be 1 or more, not {batch_size}")
        host = urlparse(base_url).hostname or ""
        if not host:
            raise ConfigError(f"RECASSIST_EMBEDDING_BASE_URL={base_url!r} is no URL; write it as http://HOST:PORT/v1")
        if not api_key and host.endswith("openai.com"):
            raise ConfigError(f"{base_url} needs an API key; set RECASSIST_EMBEDDING_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        # The model, not the URL: replicas of one model behind several URLs share one collection.
        self.name = model
        self.batch_size = batch_size
        self._dim: int | None = None
        if client is None:
            import openai

            # Local servers accept any key, but the SDK refuses an empty one.
            client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", timeout=timeout_s,
                                   max_retries=max_retries)
        self._client = client

    @property
    def dim(self) -> int:
        if self._dim is None:
            self(PROBE)
        return self._dim

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        chunks = [self._embed(texts[start : start + self.batch_size]) for start in range(0, len(texts), self.batch_size)]
        vectors = np.concatenate(chunks)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (vectors / norms).astype(np.float32)

    def _embed(self, batch: list[str]) -> np.ndarray:
        import openai

        # Servers refuse an empty string; a lone space embeds as "nothing in particular".
        batch = [text if text.strip() else " " for text in batch]
        try:
            response = self._client.embeddings.create(model=self.model_name, input=batch, encoding_format="float")
        except openai.APIConnectionError as exc:  # refused, unreachable, timed out
            raise StoreError(
                f"the embedding server at {self.base_url} is not reachable ({type(exc).__name__}: {exc}); start it, "
                "or fix RECASSIST_EMBEDDING_BASE_URL"
            ) from None
        except openai.APIStatusError as exc:
            raise StoreError(
                f"the embedding server at {self.base_url} answered {exc.status_code} for model {self.model_name!r}: "
                f"{_message(exc)}; check RECASSIST_EMBEDDING_MODEL, RECASSIST_EMBEDDING_API_KEY and that the URL "
                "ends where /embeddings is served (usually /v1)"
            ) from None
        rows = sorted(response.data, key=lambda item: item.index)
        if len(rows) != len(batch):
            raise StoreError(f"the embedding server at {self.base_url} returned {len(rows)} vectors for {len(batch)} texts")
        if any(row.embedding and isinstance(row.embedding[0], list) for row in rows):
            raise StoreError(
                f"the embedding server at {self.base_url} returned one vector per token, not one per text: its model "
                "pools nothing. Serve a model made for embeddings, or pool on the server (llama.cpp: "
                "`llama-server --embeddings --pooling mean`)"
            )
        sizes = {len(row.embedding) for row in rows}
        if len(sizes) != 1 or 0 in sizes:
            raise StoreError(f"the embedding server at {self.base_url} returned vectors of sizes {sorted(sizes)} in one batch")
        (size,) = sizes
        if self._dim is not None and size != self._dim:
            raise StoreError(
                f"the embedding server at {self.base_url} returned {size}-dimensional vectors for model "
                f"{self.model_name!r}, {self._dim} before: the model behind it changed. Vectors of two models "
                "cannot share a collection; restart recassist to embed the catalog again with the new model"
            )
        self._dim = size
        return np.asarray([row.embedding for row in rows], dtype=np.float32)


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return str(getattr(exc, "message", exc))
