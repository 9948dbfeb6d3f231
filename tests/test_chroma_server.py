"""The same vector checks through a real `chroma run` server on loopback: stop it, get a clear
StoreError; start it again, and the same VectorIndex/Retriever objects recover."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.errors import StoreError
from retrieval.candidates import Retriever
from retrieval.request import Request
from retrieval.embeddings import HashingEmbedder
from retrieval.records import Event, Item
from retrieval.sequential import SequentialModel
from retrieval.store import Store
from retrieval.vectors import VectorIndex, open_chroma
from tests.servers import chroma_cli, free_port, stop, wait_until_ready

pytestmark = pytest.mark.integration

CLI = chroma_cli()


class ChromaServer:
    """`chroma run` in a subprocess; start() waits for /api/v2/heartbeat."""

    def __init__(self, path: Path, port: int):
        self.path, self.port, self.proc = path, port, None

    def start(self, timeout_s: float = 60.0) -> None:
        log_path = self.path.parent / f"chroma-{self.port}.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [CLI, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until_ready(self.proc, f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout_s, log_path, "`chroma run`")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc, timeout_s=15)


@pytest.fixture
def server(tmp_path):
    if CLI is None:
        pytest.skip("the `chroma` CLI is missing (it comes with `pip install chromadb` in the same environment)")
    server = ChromaServer(tmp_path / "chroma", free_port())
    server.start()
    yield server
    server.stop()


ITEMS = [
    Item("s1", "Star Run", text="rocket astronaut galaxy planet orbit", categories=["Science Fiction"], year=1990),
    Item("s2", "Moon Drift", text="rocket astronaut galaxy moon orbit", categories=["Science Fiction"], year=2000),
    Item("s3", "Orbit Home", text="astronaut galaxy planet orbit crew", categories=["Science Fiction"], year=2010),
    Item("r1", "Paris Letters", text="wedding romance heart marriage kiss", categories=["Romance"], year=1995),
    Item("r2", "June Bride", text="wedding romance bride marriage love", categories=["Romance"], year=2005),
]


def test_vector_index_and_retriever_through_a_server_then_outage_and_recovery(server, tmp_path):
    client = open_chroma("http", host="127.0.0.1", port=server.port)
    embedder = HashingEmbedder()
    content = VectorIndex(client, "content-hash", embedder)

    # The VectorIndex contract, over HTTP.
    content.upsert(["x", "y"], embedder(["rocket galaxy", "wedding kiss"]))
    assert content.query(embedder(["rocket galaxy"])[0], 1)[0][0] == "x"
    assert set(content.get_vectors(["x", "y", "nope"])) == {"x", "y"}
    content.delete(["x", "y"])
    assert content.count() == 0

    # The Retriever, over HTTP.
    with Store.open(f"sqlite:///{tmp_path}/store.db") as store:
        store.upsert_items(ITEMS)
        likes = {"ana": ["s1", "s2"], "ben": ["s1", "s2", "s3"], "cy": ["r1", "r2"]}
        store.add_events([Event(u, "like", 1_700_000_000.0 + n, i) for u, ids in likes.items() for n, i in enumerate(ids)])
        retriever = Retriever(store, embedder, content, VectorIndex(client, "collab"), SequentialModel())
        retriever.index_items(ITEMS)
        retriever.refit(store)
        assert [c.item.id for c in retriever.candidates("ana", Request(), k=1)] == ["s3"]
        assert [c.item.id for c in retriever.candidates("ana", Request(categories=["Romance"], year_min=2000), k=5)] == ["r2"]
        assert retriever.collab.count() == 5  # every liked item has a collaborative vector in Chroma

        # Outage: a clear error that says where and how to fix it, from the index and the retriever.
        server.stop()
        with pytest.raises(StoreError, match=rf"127\.0\.0\.1:{server.port} is not reachable.*chroma run --path"):
            content.count()
        with pytest.raises(StoreError, match="not reachable"):
            retriever.candidates("ana", Request(query="wedding"), k=2)
        with pytest.raises(StoreError, match="RECASSIST_CHROMA_MODE=persistent"):
            open_chroma("http", host="127.0.0.1", port=server.port)

        # Recovery: the same objects work again once the server is back (data kept on disk).
        server.start()
        assert content.count() == len(ITEMS)
        assert [c.item.id for c in retriever.candidates("ana", Request(), k=1)] == ["s3"]
        fresh = Item("s4", "Comet Tail", text="comet rocket astronaut telescope", categories=["Science Fiction"])
        store.upsert_items([fresh])
        retriever.index_items([fresh])
        assert [c.item.id for c in retriever.candidates("ana", Request(query="comet telescope"), k=1)] == ["s4"]
