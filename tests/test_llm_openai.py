"""The OpenAI-compatible backend: request options, logprob mapping, errors, and a real llama.cpp server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace as NS

import pytest

from core.errors import LLMError
from assistant.llm.openai_compat import OpenAICompatLLM, map_top_logprobs


class RecordingClient:
    """Stands in for openai.OpenAI: records each request, answers with canned objects."""

    def __init__(self, chat=None, completion=None):
        self.requests: list[dict] = []
        self.chat = NS(completions=NS(create=self._record(chat)))
        self.completions = NS(create=self._record(completion))

    def _record(self, answer):
        def create(**kwargs):
            self.requests.append(kwargs)
            return answer(kwargs) if callable(answer) else answer

        return create


def chat_chunks(*texts):
    return iter([NS(choices=[NS(delta=NS(content=t))]) for t in texts] + [NS(choices=[])])


@pytest.mark.parametrize(
    "model, expected, absent",
    [
        ("gpt-4o-mini", {"max_tokens": 7, "temperature": 0.0}, "max_completion_tokens"),
        ("gemma-3-270m", {"max_tokens": 7, "temperature": 0.0}, "max_completion_tokens"),
        ("o3-mini", {"max_completion_tokens": 7}, "max_tokens"),
    ],
)
def test_max_tokens_is_sent_the_way_the_server_reads_it(model, expected, absent):
    # llama.cpp's server ignores max_completion_tokens (langchain's default), so it must be max_tokens.
    client = RecordingClient(chat=lambda kw: chat_chunks("Hel", "lo"))
    llm = OpenAICompatLLM("http://x/v1", model=model, client=client)
    assert "".join(llm.stream([{"role": "user", "content": "hi"}], max_tokens=7, stop=list("abcde"))) == "Hello"
    request = client.requests[0]
    assert expected.items() <= request.items() and absent not in request
    assert request["stream"] is True and request["stop"] == list("abcd")  # OpenAI takes at most four


def test_text_prompts_use_the_completions_endpoint():
    client = RecordingClient(completion=iter([NS(choices=[NS(text="Par")]), NS(choices=[NS(text="is")])]))
    llm = OpenAICompatLLM("http://x/v1", model="m", client=client, prompt_style="completion")
    assert "".join(llm.stream("The capital of France:", max_tokens=3)) == "Paris"
    assert client.requests[0]["prompt"] == "The capital of France:"


def test_json_schema_uses_structured_outputs():
    client = RecordingClient(chat=lambda kw: chat_chunks('{"a": 1}'))
    llm = OpenAICompatLLM("http://x/v1", model="m", client=client)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
    assert json.loads("".join(llm.stream([{"role": "user", "content": "?"}], max_tokens=9, json_schema=schema))) == {"a": 1}
    assert client.requests[0]["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def test_chat_label_logprobs_read_the_first_tokens_top_logprobs():
    top = [NS(token=" B", logprob=-0.2), NS(token="A", logprob=-1.9), NS(token="Hello", logprob=-3.0)]
    response = NS(choices=[NS(logprobs=NS(content=[NS(token=" B", logprob=-0.2, top_logprobs=top)]))])
    client = RecordingClient(chat=response)
    llm = OpenAICompatLLM("http://x/v1", model="m", client=client)
    assert llm.label_logprobs([{"role": "user", "content": "?"}], ["A", "B", "C"]) == {"A": -1.9, "B": -0.2, "C": -4.0}
    request = client.requests[0]
    assert (request["logprobs"], request["top_logprobs"], request["max_tokens"]) == (True, 20, 1)


def test_a_server_without_logprobs_is_an_llm_error():
    client = RecordingClient(chat=NS(choices=[NS(logprobs=None)]))
    with pytest.raises(LLMError, match="no logprobs"):
        OpenAICompatLLM("http://x/v1", model="m", client=client).label_logprobs([{"role": "user", "content": "?"}], ["A"])


@pytest.mark.parametrize(
    "pairs, expected",
    [
        ([("A", -0.5), (" B", -1.0)], {"A": -0.5, "B": -1.0, "C": -2.0}),  # absent: floor 1 below the lowest
        ([("A", -2.0), (" A", -0.5), ("x", -3.0)], {"A": -0.5, "B": -4.0, "C": -4.0}),  # best spelling wins
        ([("\nA", -1.0)], {"A": -1.0, "B": -2.0, "C": -2.0}),
    ],
)
def test_map_top_logprobs(pairs, expected):
    assert map_top_logprobs(pairs, ["A", "B", "C"]) == expected


@pytest.mark.parametrize(
    "base_url, message",
    [
        ("http://127.0.0.1:9/v1", "cannot reach http://127.0.0.1:9/v1"),
        ("https://api.openai.com/v1", "RECASSIST_OPENAI_API_KEY"),
    ],
)
def test_errors_name_the_url_and_the_fix(base_url, message):
    with pytest.raises(LLMError, match=message):
        llm = OpenAICompatLLM(base_url, model="m", timeout=2)
        "".join(llm.stream("hi", max_tokens=1))


# A real OpenAI-compatible server: llama-cpp-python's, with the embedded model ----------------------


@pytest.fixture(scope="module")
def llama_server(embedded_model_path, tmp_path_factory):
    """`python -m llama_cpp.server` on a free loopback port; yields its /v1 URL."""
    pytest.importorskip("llama_cpp.server.app", reason="pip install 'llama-cpp-python[server]'")
    from servers import free_port, stop, wait_until_ready

    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--chat_format", "gemma",
    ]
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = open(log_path, "wb")  # a pipe nobody reads would fill up and stall the server
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(proc, base + "/models", 120, log_path, "llama_cpp.server")
        yield base
    finally:
        stop(proc)
        log.close()


@pytest.mark.integration
@pytest.mark.parametrize("style", ["completion", "chat"])
def test_streaming_through_the_server(llama_server, style):
    llm = OpenAICompatLLM(llama_server, model="gemma", timeout=120, prompt_style=style)
    prompt = "The capital of France is" if style == "completion" else [{"role": "user", "content": "Say hello."}]
    pieces = list(llm.stream(prompt, max_tokens=8, stop=["\n"]))
    assert len(pieces) >= 2 and "".join(pieces).strip()


@pytest.mark.integration
@pytest.mark.parametrize("style", ["completion", "chat"])
def test_label_logprobs_through_the_server(llama_server, style):
    llm = OpenAICompatLLM(llama_server, model="gemma", timeout=120, prompt_style=style)
    question = "Which letter comes first in the alphabet, A or B? Answer with the letter."
    prompt = f"Question: {question}\nAnswer:" if style == "completion" else [{"role": "user", "content": question}]
    logprobs = llm.label_logprobs(prompt, ["A", "B"])
    assert set(logprobs) == {"A", "B"} and all(-50 < v <= 0 for v in logprobs.values())
    assert logprobs["A"] > logprobs["B"]


@pytest.mark.integration
def test_json_schema_through_the_server(llama_server):
    llm = OpenAICompatLLM(llama_server, model="gemma", timeout=120)
    schema = {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": ["A", "B", "C"]}}},
        "required": ["ranking"],
        "additionalProperties": False,
    }
    text = "".join(llm.stream([{"role": "user", "content": "Rank A, B and C as JSON."}], max_tokens=40, json_schema=schema))
    assert set(json.loads(text)["ranking"]) <= {"A", "B", "C"}


@pytest.mark.integration
def test_ranking_end_to_end_through_the_server(llama_server):
    from assistant.ranking import rank
    from prompts import Prompts
    from retrieval.records import Candidate, Item

    llm = OpenAICompatLLM(llama_server, model="gemma", timeout=120, prompt_style="completion", context_window=2048)
    titles = ["Toy Story", "Goodfellas", "Notting Hill", "Casino", "Finding Nemo", "Heat"]
    cands = [Candidate(Item(f"c{i}", t, year=1990 + i), 1.0 - i / 10) for i, t in enumerate(titles)]
    result = rank(llm, Prompts.for_llm(llm), [Item("h", "The Godfather", categories=["Crime"])], cands, request="crime")
    assert result.method == "logprobs" and result.fallback is None and result.passes == 2
    assert sorted(c.item.id for c in result.candidates) == sorted(c.item.id for c in cands)
    assert sum(result.llm_scores.values()) == pytest.approx(1.0)
