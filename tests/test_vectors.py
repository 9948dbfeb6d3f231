"""VectorIndex over an embedded Chroma (PersistentClient in a temp dir) with the hashing embedder."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import StoreError
from retrieval.request import Request, item_metadata
from retrieval.embeddings import ChromaEmbeddingFunction, HashingEmbedder
from retrieval.records import Item
from retrieval.vectors import VectorIndex, open_chroma
from tests.servers import free_port


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting the texts it was asked to embed."""

    def __init__(self):
        super().__init__(dim=64)
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts += list(texts)
        return super().__call__(texts)


TEXTS = {
    "space": "rocket astronaut galaxy planet orbit",
    "love": "wedding romance heart marriage kiss",
    "crime": "detective murder police clue suspect",
}


@pytest.fixture
def client(tmp_path):
    return open_chroma("persistent", path=str(tmp_path / "chroma"))


@pytest.fixture
def index(client):
    embedder = CountingEmbedder()
    index = VectorIndex(client, "content-test", embedder)
    index.upsert(list(TEXTS), embedder(list(TEXTS.values())))
    embedder.texts.clear()
    return index


def test_query_returns_nearest_with_cosine_similarity(index):
    vector = index.embedder(["rocket astronaut galaxy planet orbit"])[0]
    hits = index.query(vector, k=3)
    assert [i for i, _ in hits][0] == "space"
    assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert hits[0][1] > hits[1][1] >= hits[2][1]
    assert index.query_many([vector, vector], k=1) == [hits[:1], hits[:1]]


def test_get_delete_count_and_all_ids(index):
    assert index.count() == 3
    assert sorted(index.all_ids()) == sorted(TEXTS)
    got = index.get_vectors(["love", "love", "missing"])
    assert list(got) == ["love"]  # repeated ids once, unknown ids absent
    assert np.allclose(got["love"], index.embedder([TEXTS["love"]])[0], atol=1e-5)
    index.delete(["love"])
    assert index.count() == 2 and "love" not in index.get_vectors(["love"])


def test_documents_are_embedded_by_our_embedder_not_chromas(index):
    assert isinstance(index.collection._embedding_function, ChromaEmbeddingFunction)
    index.upsert(["cook"], documents=["recipe kitchen chef"])
    assert index.embedder.texts == ["recipe kitchen chef"]
    assert index.query(index.embedder(["recipe kitchen chef"])[0], 1)[0][0] == "cook"


def test_precomputed_collection_without_embedder(client):
    index = VectorIndex(client, "collab", None)
    index.upsert(["a", "b"], np.eye(2, 4, dtype=np.float32))
    assert index.query(np.array([1, 0, 0, 0], dtype=np.float32), 1)[0][0] == "a"
    with pytest.raises(StoreError, match="needs vectors"):
        index.upsert(["c"], documents=["no embedder here"])


def test_upsert_is_batched_under_the_max_batch_size(client):
    index = VectorIndex(client, "batched", HashingEmbedder(dim=16))
    index._batch = 3  # force several batches
    ids = [f"i{n}" for n in range(10)]
    index.upsert(ids, index.embedder([f"word{n} other{n}" for n in range(10)]))
    assert index.count() == 10
    assert len(index.get_vectors(ids)) == 10
    index.delete(ids[:7])
    assert sorted(index.all_ids()) == ids[7:]


def test_many_vectors_come_as_one_matrix_in_the_order_asked_over_several_batches(client):
    index = VectorIndex(client, "matrix", HashingEmbedder(dim=16))
    index._batch = 3
    ids = [f"i{n}" for n in range(10)]
    index.upsert(ids, index.embedder([f"word{n} other{n}" for n in range(10)]))
    asked = ["i9", "nope", "i0", "i4", "i4x", "i7", "i1", "i2", "i3"]
    positions, matrix = index.get_matrix(asked)
    assert positions == [0, 2, 3, 5, 6, 7, 8]
    stored = index.get_vectors(ids)
    assert matrix.dtype == np.float32 and matrix.shape == (7, 16)
    assert all((matrix[n] == stored[asked[p]]).all() for n, p in enumerate(positions))
    assert index.get_matrix(["none", "at all"])[0] == []


def test_upsert_replaces_an_existing_vector(index):
    index.upsert(["space"], index.embedder(["wedding romance heart"]))
    assert index.count() == 3
    assert index.query(index.embedder(["wedding romance heart"])[0], 1)[0][0] in {"space", "love"}
    assert index.get_vectors(["space"])["space"] @ index.embedder(["wedding romance heart"])[0] > 0.99


@pytest.mark.parametrize(
    "request_, expected",
    [
        (Request(categories=["SCIENCE FICTION"]), {"a"}),
        (Request(exclude_categories=["romance"]), {"a", "c"}),
        (Request(creators=["ann lee"]), {"a", "b"}),
        (Request(exclude_creators=["Ann Lee"]), {"c"}),
        (Request(year_min=1990), {"b", "c"}),
        (Request(year_max=1990), {"a", "b"}),
        (Request(year_min=1985, year_max=1995), {"b"}),
        (Request(extra_filters={"language": "fr"}), {"b"}),
        (Request(categories=["Romance", "Crime"], year_min=1995), {"c"}),
    ],
)
def test_request_filters_run_inside_chroma(client, request_, expected):
    items = [
        Item("a", "A", categories=["Science Fiction"], creator="Ann Lee", year=1980, extra={"language": "en"}),
        Item("b", "B", categories=["Romance"], creator="Ann Lee", year=1990, extra={"language": "fr"}),
        Item("c", "C", categories=["Crime"], year=2000),
    ]
    index = VectorIndex(client, "filtered", HashingEmbedder(dim=16))
    index.upsert([i.id for i in items], index.embedder(["x y", "x z", "x w"]), metadatas=[item_metadata(i) for i in items])
    found = {i for i, _ in index.query(index.embedder(["x"])[0], 10, where=request_.where())}
    assert found == expected
    assert {i.id for i in items if request_.accepts(i)} == expected  # the post-filter agrees


def test_metadata_without_optional_fields_is_accepted(client):
    index = VectorIndex(client, "sparse-meta", None)
    index.upsert(["x"], np.ones((1, 4), dtype=np.float32), metadatas=[item_metadata(Item("x", "Untitled"))])
    assert index.count() == 1


def test_a_vector_of_another_size_is_a_clear_error(index):
    with pytest.raises(StoreError, match="content-test"):
        index.upsert(["odd"], np.ones((1, 7), dtype=np.float32))
    assert index.count() == 3  # the index still works afterwards


def test_reset_empties_the_collection(index):
    index.reset()
    assert index.count() == 0
    assert index.query(np.ones(64, dtype=np.float32), 5) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "cloud"}, "RECASSIST_CHROMA_MODE"),
        ({"mode": "persistent"}, "needs a path"),
        ({"mode": "http", "host": "127.0.0.1"}, r"not reachable.*start it with `chroma run --path DIR"),
    ],
)
def test_open_chroma_errors_say_how_to_fix(kwargs, message):
    if kwargs["mode"] == "http":
        kwargs["port"] = free_port()  # nothing listens there
    with pytest.raises(StoreError, match=message):
        open_chroma(**kwargs)


def test_search_breadth_is_set_on_new_collections_and_updated_on_old_ones(client):
    VectorIndex(client, "breadth", hnsw={"ef_search": 100}).count()
    assert client.get_collection("breadth").configuration["hnsw"]["ef_search"] == 100
    reopened = VectorIndex(client, "breadth", hnsw={"ef_search": 321})
    reopened.count()
    assert client.get_collection("breadth").configuration["hnsw"]["ef_search"] == 321
    assert client.get_collection("breadth").configuration["hnsw"]["space"] == "cosine"


def test_engine_passes_its_search_breadth(make_engine):
    engine = make_engine(demo=False, hnsw_ef_search=250)
    content = engine.retriever.content
    assert content.collection.configuration["hnsw"]["ef_search"] == 250
