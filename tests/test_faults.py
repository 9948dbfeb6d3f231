"""Faults, end to end through the HTTP API: an LLM server that is down, slow or talks nonsense, a
Chroma server that goes away and comes back, a catalog ingest killed halfway, broken prompt files.

Each one ends in an answer (degraded, with a notice, within a time budget) or in a clear error that
names what failed and how to fix it; never a 500, a traceback or a hang.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from assistant.api import create_app  # noqa: E402
from assistant.engine import Engine  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from servers import REPO, free_port, server_env, serve_command, stop, wait_until_ready  # noqa: E402

LLM_TIMEOUT_S = 2.0
# A turn may wait for the model once (one timeout), plus the pipeline itself on a busy machine. The
# SDK's retry, or every stage waiting again, would take 2-8 timeouts.
BUDGET_S = LLM_TIMEOUT_S + 4.0


# --- a misbehaving OpenAI-compatible server --------------------------------------------------

NONSENSE = "zxq blorp ⟁⟁ 42 🙃 qwv"


class FakeOpenAI(ThreadingHTTPServer):
    """Answers /v1/chat/completions and /v1/completions the way `mode` says, on a loopback port.

    slow: answers only after `delay_s`; trickle: streams a piece every 0.3 s and never finishes;
    http-500: a server error; not-json and wrong-shape: bodies that are not the OpenAI API's;
    no-choices: valid JSON with nothing in it; nonsense: well-formed answers that mean nothing.
    """

    daemon_threads = True

    def __init__(self, mode: str, delay_s: float = 60.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.delay_s = mode, delay_s
        self.calls: list[dict] = []
        self.release = threading.Event()  # set on close: sleeping handlers return at once
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeOpenAI

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        self.server.calls.append(body)
        mode, stream = self.server.mode, bool(body.get("stream"))
        try:
            if mode == "slow" or (mode == "trickle" and not stream):
                if self.server.release.wait(self.server.delay_s):
                    return
            if mode == "trickle":
                return self._trickle()
            if mode == "http-500":
                return self._send(500, b'{"error": {"message": "model crashed", "type": "server_error"}}')
            if mode == "not-json":
                if stream:
                    return self._send(200, b"data: {this is not json\n\n", "text/event-stream")
                return self._send(200, b"<html>502 Bad Gateway</html>", "application/json")
            if mode == "wrong-shape":
                if stream:
                    return self._send(200, b'data: {"status": "ok"}\n\ndata: [DONE]\n\n', "text/event-stream")
                return self._send(200, b'{"status": "ok"}')
            choices = [] if mode == "no-choices" else [self._choice(body, stream)]
            chunk = {"id": "x", "created": 0, "model": "fake", "choices": choices}
            if stream:
                chunk["object"] = "chat.completion.chunk" if "messages" in body else "text_completion"
                return self._send(200, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream")
            chunk["object"] = "chat.completion" if "messages" in body else "text_completion"
            return self._send(200, json.dumps(chunk).encode())
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up on us, as it should

    def _choice(self, body: dict, stream: bool) -> dict:
        if "messages" not in body:
            return {"index": 0, "text": NONSENSE, "finish_reason": "stop", "logprobs": None}
        if stream:
            return {"index": 0, "delta": {"content": NONSENSE}, "finish_reason": None}
        top = [{"token": t, "logprob": -0.1 * n, "bytes": None} for n, t in enumerate(["zx", "blorp", "⟁"])]
        logprobs = {"content": [{"token": "zx", "logprob": -0.1, "bytes": None, "top_logprobs": top}]}
        message = {"role": "assistant", "content": NONSENSE}
        return {"index": 0, "message": message, "finish_reason": "stop", "logprobs": logprobs}

    def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # no length: the stream ends when the connection closes
        piece = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                 "choices": [{"index": 0, "delta": {"content": "la "}, "finish_reason": None}]}
        while not self.server.release.wait(0.3):
            self.wfile.write(f"data: {json.dumps(piece)}\n\n".encode())
            self.wfile.flush()


# --- engines whose LLM is an OpenAI-compatible server at a given URL --------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo catalog and users once; each test gets its own engine (and LLM) over the same data."""
    settings = Settings.load(env={}, data_dir=tmp_path_factory.mktemp("faults"), llm_backend="none", embedding_backend="hash")
    engine = Engine(settings)
    engine.load_demo(progress=False)
    yield engine
    engine.close()


@pytest.fixture
def client_for(demo):
    """A TestClient over a fresh engine whose LLM is the OpenAI-compatible server at `url`."""

    def build(url: str) -> TestClient:
        settings = demo.settings.model_copy(
            update={"llm_backend": "openai", "openai_base_url": url, "llm_timeout_s": LLM_TIMEOUT_S}
        )
        engine = Engine(settings, store=demo.store, embedder=demo.embedder)
        engine.retriever  # built before the clock starts, as `recassist serve` does
        engine.llm.count_tokens("warm up")  # the SDK import and the tokenizer load once per process
        return TestClient(create_app(engine, mount_ui=False), raise_server_exceptions=False)

    return build


@pytest.fixture(params=["slow", "trickle", "http-500", "not-json", "wrong-shape", "no-choices", "nonsense"])
def bad_server(request):
    server = FakeOpenAI(request.param)
    yield server
    server.close()


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body."""
    out = []
    for block in text.strip().split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
        out.append((name, "\n".join(data)))
    return out


def ask(client: TestClient, door: str, message: str = "a witty romance", user: str = "ana") -> dict:
    """One turn through one door, read back as {status, items, notices, text, seconds}.

    Items carry (item_id, reason, reason_source); notices are the turn's notices as the door shows them.
    """
    started = time.monotonic()
    if door in ("chat", "chat-sse"):
        r = client.post("/v1/chat", json={"user_id": user, "message": message, "k": 3, "stream": door == "chat-sse"})
    else:
        r = client.post(
            "/v1/chat/completions",
            json={"user": user, "messages": [{"role": "user", "content": message}], "stream": door == "facade-sse"},
        )
    seconds = time.monotonic() - started
    out = {"status": r.status_code, "seconds": seconds, "body": r.text}
    if r.status_code != 200:
        return out
    if door == "chat":
        body = r.json()
        out.update(
            items=[(i["item_id"], i["reason"], i["reason_source"]) for i in body["items"]],
            notices=body["notices"], text=body["summary"],
        )
    elif door == "chat-sse":
        events = sse_events(r.text)
        names = [name for name, _ in events]
        assert names[-1] == "done" and "error" not in names, names
        data = [json.loads(d) for _, d in events]
        cards = [d["cards"] for d in data if d["type"] == "cards"][-1]
        reasons = {d["item_id"]: (d["text"], d["source"]) for d in data if d["type"] == "reason"}
        out.update(
            items=[(c["item_id"], *reasons.get(c["item_id"], ("", ""))) for c in cards],
            notices=[d["text"] for d in data if d["type"] == "notice"],
            text=" ".join(d["text"] for d in data if d["type"] == "message"),
        )
    elif door == "facade":
        body = r.json()
        content = body["choices"][0]["message"]["content"]
        out.update(
            items=[(i["item_id"], i["reason"], i["reason_source"]) for i in body["recassist"]["items"]],
            notices=_markdown_notices(content), text=content,
        )
    else:
        events = sse_events(r.text)
        assert events[-1][1] == "[DONE]", events[-3:]
        chunks = [json.loads(d) for _, d in events[:-1]]
        assert not [c for c in chunks if "error" in c], chunks
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        out.update(items=_markdown_items(content), notices=_markdown_notices(content), text=content)
    return out


def _markdown_notices(content: str) -> list[str]:
    return [line.strip("_") for line in content.split("\n") if line.startswith("_") and line.endswith("_")]


def _markdown_items(content: str) -> list[tuple[str, str, str]]:
    """(title, reason, '') per '1. **Title** (...) — reason' line: the facade's stream has no ids."""
    items = []
    for line in content.split("\n"):
        if line[:1].isdigit() and ". **" in line:
            title = line.split("**")[1]
            items.append((title, line.partition(" — ")[2], ""))
    return items


def assert_degraded(answer: dict, door: str) -> None:
    """200, cards with reasons taken from the evidence, a notice, a summary, within the budget."""
    assert answer["status"] == 200, answer["body"][:500]
    assert answer["items"], "the answer still has cards"
    for item_id, reason, source in answer["items"]:
        assert reason.strip(), f"{item_id} has no reason"
        assert source in ("evidence", ""), f"{item_id}: a reason from a broken model got through: {reason!r}"
        assert "zxq" not in reason and "blorp" not in reason
    assert answer["notices"], "the user is told the answer is degraded"
    assert answer["text"].strip()
    assert answer["seconds"] < BUDGET_S, f"{door} took {answer['seconds']:.1f}s (budget {BUDGET_S:.0f}s)"


# --- the LLM down, slow, or talking nonsense ---------------------------------------------------

DOORS = ["chat", "chat-sse", "facade", "facade-sse"]


@pytest.mark.parametrize("door", DOORS)
def test_llm_down_gives_a_degraded_answer_through_every_door(client_for, door):
    client = client_for(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    answer = ask(client, door)
    assert_degraded(answer, door)
    assert any("cannot reach" in n and "RECASSIST_OPENAI_BASE_URL" in n for n in answer["notices"]), answer["notices"]


@pytest.mark.parametrize("door", DOORS)
def test_llm_slow_gives_a_degraded_answer_within_the_budget_through_every_door(client_for, door):
    server = FakeOpenAI("slow")
    try:
        answer = ask(client_for(server.url), door)
    finally:
        server.close()
    assert_degraded(answer, door)
    assert any(f"did not answer within {LLM_TIMEOUT_S:.0f}s" in n for n in answer["notices"]), answer["notices"]
    # One wait for the whole turn: the first timeout makes every later call of the turn skip the server.
    assert len(server.calls) == 1, f"{len(server.calls)} calls reached the slow server"


def test_every_kind_of_broken_llm_gives_a_degraded_answer(client_for, bad_server):
    answer = ask(client_for(bad_server.url), "chat")
    assert_degraded(answer, "chat")
    assert bad_server.calls, "the model was asked"


@pytest.mark.parametrize("door", DOORS)
def test_a_nonsense_talking_llm_never_reaches_the_user_through_any_door(client_for, door):
    server = FakeOpenAI("nonsense")
    try:
        answer = ask(client_for(server.url), door)
    finally:
        server.close()
    assert_degraded(answer, door)
    assert "zxq" not in answer["text"] and "blorp" not in answer["text"]


def test_the_model_is_asked_again_after_the_pause(demo):
    """A failed server is skipped for a while, then tried again: it recovers without a restart."""
    from assistant.errors import LLMError
    from assistant.llm.openai_compat import OpenAICompatLLM

    server = FakeOpenAI("http-500")
    try:
        llm = OpenAICompatLLM(server.url, model="m", timeout=LLM_TIMEOUT_S, retry_after_s=0.5)
        chat = [{"role": "user", "content": "hi"}]
        with pytest.raises(LLMError, match="HTTP 500: model crashed"):
            "".join(llm.stream(chat, max_tokens=5))
        with pytest.raises(LLMError, match="not retried for another"):
            "".join(llm.stream(chat, max_tokens=5))
        assert len(server.calls) == 1
        server.mode = "nonsense"
        time.sleep(LLM_TIMEOUT_S + 0.1)  # the pause is at least one timeout
        assert "".join(llm.stream(chat, max_tokens=5)) == NONSENSE
        assert len(server.calls) == 2
    finally:
        server.close()
