"""Embedding functions: the deterministic fake, and the real shipped MiniLM model (offline)."""

import numpy as np
import pytest

from retrieval.embeddings import ChromaEmbeddingFunction, HashingEmbedder, create_embedder


def test_hashing_embedder_is_deterministic_normalised_and_word_sensitive():
    e = HashingEmbedder()
    a, b, c = e(["a ghost story at sea", "a ghost story at sea", "tea party in a garden"])
    assert np.allclose(a, b) and np.isclose(np.linalg.norm(a), 1.0)
    assert a @ b > a @ c


def test_chroma_adapter_uses_our_embedder():
    function = ChromaEmbeddingFunction(HashingEmbedder(dim=8))
    vectors = function(["x", "y"])
    assert len(vectors) == 2 and len(vectors[0]) == 8
    assert function.name().startswith("recassist-")


@pytest.mark.integration
def test_real_minilm_loads_offline_and_embeds_meaning(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = create_embedder("minilm")
    query, near, far = embedder(["a voyage on a whaling ship", "sailors hunt a great whale at sea", "a ballroom romance in Bath"])
    assert embedder.dim == 384 and query.shape == (384,)
    assert np.isclose(np.linalg.norm(query), 1.0, atol=1e-4)
    assert query @ near > query @ far + 0.1


@pytest.mark.integration
def test_demo_answers_offline_with_the_embedded_models(make_engine, embedded_model_path, monkeypatch):
    """The default stack end to end: MiniLM + Chroma + the real Gemma 3 270M, no network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = make_engine(llm_backend="llama", embedding_backend="minilm", llm_model_path=embedded_model_path)
    result = engine.agent.recommend("ben", query="a sea adventure", k=3)
    assert engine.llm is not None and engine.llm.backend == "llama"
    assert len(result["items"]) == 3 and all(item["reason"] for item in result["items"])
    assert result["summary"]
    ben_seen = {e.item_id for e in engine.store.events_for_user("ben")}
    assert not ben_seen & {item["item_id"] for item in result["items"]}
    assert "Adventure" in {c for item in result["items"] for c in item["categories"]}


def test_chroma_adapter_meets_chromas_embedding_function_protocol(tmp_path):
    from chromadb.api.types import EmbeddingFunction

    from retrieval.vectors import open_chroma

    function = ChromaEmbeddingFunction(HashingEmbedder())
    assert isinstance(function, EmbeddingFunction)
    assert function.default_space() in function.supported_spaces()
    collection = open_chroma("persistent", path=str(tmp_path)).create_collection(
        "protocol", embedding_function=function, configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=["sea", "tea"], documents=["a ghost story at sea", "tea party in a garden"])
    # Chroma embeds query texts through embed_query: it must land in the documents' space.
    assert collection.query(query_texts=["ghost ship at sea"], n_results=1)["ids"] == [["sea"]]
    assert np.allclose(function.embed_query(["x y z"]), function(["x y z"]))
