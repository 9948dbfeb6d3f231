"""Security: PII redaction before hosted LLM calls (end to end through a real loopback server),
API keys kept out of every log, sandboxed prompt templates."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assistant.engine import Engine
from assistant.llm.fake import FakeLLM
from assistant.llm.redact import RedactingLLM, redact
from assistant.settings import Settings

PHONES = [
    "+44 20 7946 0958",
    "+1 (202) 555-0143",
    "+33 1 23 45 67 89",
    "+49 (0)30 1234567",
    "+86 138 0013 8000",
    "+91-98765-43210",
    "0044 20 7946 0958",
    "(555) 123-4567",
    "555-123-4567",
    "555.123.4567",
    "020 7946 0958",
    "030/1234567",
    "13800138000",
]
EMAILS = ["jo.smith+books@example.co.uk", "wang.li@example.cn", "a_b-c@sub.example-mail.org", "X.Y@EXAMPLE.COM"]
# Numbers that prompts carry and must keep: years, ranges, dates, ratings, decimals, ISBNs, ids.
KEPT = [
    "1999",
    "2001: A Space Odyssey",
    "1999-2001",
    "1990 - 2005",
    "4.5 stars",
    "rated 4.5/5 by 1,234 readers",
    "2024-01-15",
    "15.01.2024",
    "01/15/2024",
    "3.14159265",
    "in 1813 432 copies",
    "published 1813, 432 pages",
    "ISBN 978-0-14-143951-8",
    "9780141439518",
    "0-14-143951-3",
    "0-8044-2957-X",
    "isbn-0141439513",
    "bk-001",
    "tt0111161",
    "12:30",
]


@pytest.mark.parametrize("phone", PHONES)
def test_phone_numbers_are_masked_in_every_format(phone):
    assert redact(f"call {phone} after 6") == "call [phone] after 6"


@pytest.mark.parametrize("email", EMAILS)
def test_email_addresses_are_masked(email):
    assert redact(f"write to {email}, thanks") == "write to [email], thanks"


@pytest.mark.parametrize("text", KEPT)
def test_numbers_that_are_not_contacts_survive(text):
    assert redact(text) == text


@pytest.mark.parametrize(
    "text,expected",
    [
        ("我的电话是13800138000，邮箱是wang.li@example.cn。", "我的电话是[phone]，邮箱是[email]。"),
        ("555-123-4567 555-765-4321", "[phone]"),  # two run together: both go
        ("card 4111 1111 1111 1111", "card [phone]"),  # longer than a phone number, private all the same
        ("no pii here", "no pii here"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", ["a" * 5000, "1" * 5000 + "a", "1 " * 2500 + "a", "a@" * 2500, "(1)-" * 1250 + "x"])
def test_redaction_takes_linear_time_on_hostile_input(text):
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 1.0  # a backtracking pattern would take minutes here


def test_wrapper_redacts_prompts_and_keeps_capabilities():
    inner = FakeLLM(["ok"], prompt_style="chat")
    llm = RedactingLLM(inner)
    assert llm.prompt_style == "chat" and llm.supports_logprobs
    list(llm.stream([{"role": "user", "content": "I am ann@example.com"}], max_tokens=5))
    assert inner.prompts[0][0]["content"] == "I am [email]"


def test_engine_wraps_only_hosted_backends(tmp_path, monkeypatch):
    import assistant.llm.factory as factory

    hosted = FakeLLM(remote=True)  # prompts leave the machine: the capability, not the backend's name
    monkeypatch.setattr(factory, "create_llm", lambda settings: hosted)
    engine = Engine(Settings.load(env={}, data_dir=tmp_path, llm_backend="openai"))
    assert isinstance(engine.llm, RedactingLLM)
    engine = Engine(Settings.load(env={}, data_dir=tmp_path, llm_backend="openai", redact_pii=False))
    assert engine.llm is hosted


def test_prompt_templates_are_sandboxed():
    from core.errors import PromptError
    from prompts import parse_template

    evil = """name: rank
description: tries to escape
style: completion
variables:
  - name: request
    type: str
    description: x
    example: hi
output:
  type: text
  description: x
template: "{{ request.__class__.__mro__[1].__subclasses__() }}"
"""
    template = parse_template(evil, "<test>")
    with pytest.raises(PromptError, match="unsafe"):
        template.render(request="hi")


# --- end to end: PII never reaches a hosted LLM ---------------------------------------------------


class OpenAIStub:
    """A tiny OpenAI-compatible chat server on loopback that records every request body."""

    def __init__(self):
        self.bodies: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, "application/json", b'{"error": {"message": "chat only"}}')
                if body.get("stream"):
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "delta": {"content": "A fine pick."}, "finish_reason": None}]}
                    data = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                    return self._send(200, "text/event-stream", data)
                top = [{"token": label, "logprob": -1.0 - i, "bytes": None} for i, label in enumerate("ABCDEFGH")]
                answer = {"id": "c2", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "A"},
                                       "logprobs": {"content": [{"token": "A", "logprob": -1.0, "bytes": None, "top_logprobs": top}]}}]}
                self._send(200, "application/json", json.dumps(answer).encode())

            def _send(self, status, content_type, data):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> str:
        """Everything that was sent to the model, as one text."""
        return "\n".join(str(m.get("content", "")) for b in self.bodies for m in b.get("messages", [])) + "\n".join(
            str(b.get("prompt", "")) for b in self.bodies
        )

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def openai_stub():
    stub = OpenAIStub()
    yield stub
    stub.close()


CONTACT_ITEM = {
    "id": "pii-item-1",
    "title": "The Lighthouse Almanac",
    "text": "Tides, storms and lamp oil, 1999 edition (ISBN 978-0-14-143951-8), rated 4.5 stars. "
    "Orders: almanac-orders@lighthouse-press.example or +1 (202) 555-0143.",
    "categories": ["Adventure"],
    "tags": ["sea", "lighthouse"],
    "year": 1999,
}
MESSAGE_PII = ("pia.k@example.org", "+44 20 7946 0958", "+33 1 23 45 67 89")
ITEM_PII = ("almanac-orders@lighthouse-press.example", "+1 (202) 555-0143")
EVENT_PII = ("pia.private@example.net", "+86 138 0013 8000", "555-123-4567")


@pytest.mark.parametrize("redact_pii", [True, False], ids=["redacted", "redaction off"])
def test_pii_in_messages_items_and_events_never_reaches_a_hosted_llm(make_engine, openai_stub, redact_pii):
    """Through the HTTP API to a real (loopback) OpenAI-compatible server, every door a turn has."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    engine = make_engine(
        llm_backend="openai", openai_base_url=openai_stub.url, openai_model="stub", redact_pii=redact_pii, llm_timeout_s=10
    )
    client = TestClient(create_app(engine, mount_ui=False), raise_server_exceptions=False)
    assert client.put("/v1/items", json=[CONTACT_ITEM]).json()["upserted"] == 1
    events = [
        {"user_id": "pia", "type": "search", "timestamp": 1_800_000_000, "text": f"lighthouses, mail me at {EVENT_PII[0]}"},
        {"user_id": "pia", "type": "rate", "item_id": "bk-001", "value": 4.5, "timestamp": 1_800_000_100,
         "text": f"loved it, call {EVENT_PII[1]} or {EVENT_PII[2]}"},
    ]
    assert client.post("/v1/events", json=events).json()["new"] == 2
    message = (f"I'm {MESSAGE_PII[0]}, text me on {MESSAGE_PII[1]}: a sea voyage like 2001: A Space Odyssey, "
               "from 1999, 4.5 stars or better")
    turns = [
        ("/v1/chat", {"user_id": "pia", "message": message, "context": {"mood": f"cosy, ring {MESSAGE_PII[2]}"}}),
        ("/v1/chat", {"user_id": "pia", "message": "tell me about The Lighthouse Almanac", "stream": True}),
        ("/v1/chat/completions", {"user": "pia", "messages": [{"role": "user", "content": message}]}),
    ]
    for path, body in turns:
        r = client.post(path, json=body)
        assert r.status_code == 200, r.text
    sent = openai_stub.texts()
    assert len(openai_stub.bodies) >= 6, "rank, reasons, summary and the item summary went to the server"
    for text in MESSAGE_PII + ITEM_PII:
        assert (text in sent) is not redact_pii, text
    assert ("[email]" in sent and "[phone]" in sent) is redact_pii
    for kept in ("2001: A Space Odyssey", "1999", "4.5 stars", "978-0-14-143951-8"):
        assert kept in sent, kept  # redaction does not eat years, ratings or ISBNs
    # Event text never goes into a prompt at all, redaction or not.
    assert not any(text in sent for text in EVENT_PII) and "mail me at" not in sent


# --- API keys stay out of every log ---------------------------------------------------------------


@pytest.mark.parametrize("raw", ["s3cret-key-1=root", "s3cret-key-1", "ok-key=admin,s3cret-key-1=user"])
def test_a_malformed_key_entry_is_reported_without_the_key(raw):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="KEY=admin") as caught:
        Settings.load(env={"RECASSIST_API_KEYS": raw})
    assert "s3cret" not in str(caught.value)


def test_settings_repr_hides_secrets():
    settings = Settings.load(env={}, api_keys={"s3cret-key-1": "admin"}, openai_api_key="sk-s3cret")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


@pytest.mark.parametrize(
    "query, line, expected",
    [
        (True, "/v1/models?api_key=K-123456&x=1", "/v1/models?api_key=***&x=***"),
        (True, "/v1/users/K-123456/profile", "/v1/users/***/profile"),
        (True, "/v1/chat", "/v1/chat"),
        (False, "token K-123456 rejected? a=b", "token *** rejected? a=b"),
    ],
)
def test_the_log_filter_masks_keys_and_query_values(query, line, expected):
    import logging

    from server.middleware import HideSecrets

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s"', ("127.0.0.1:1", "GET", line), None)
    HideSecrets(["K-123456"], query=query).filter(record)
    assert record.getMessage() == f'127.0.0.1:1 - "GET {expected}"'


@pytest.mark.integration
def test_api_keys_never_appear_in_the_server_log(tmp_path):
    """A real `recassist serve` with keys: valid, wrong and misplaced keys, UI sign-in; then grep its log."""
    httpx = pytest.importorskip("httpx")
    from servers import running_server

    admin, ana, wrong = "admin-secret-5a1b2c3d4e", "ana-secret-6f7a8b9c0d", "wrong-secret-1e2d3c4b5a"
    data_dir = tmp_path / "keys"
    with running_server(data_dir, demo=False, RECASSIST_API_KEYS=f"{admin}=admin,{ana}=user:ana") as base:
        bearer = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
        responses = [
            httpx.get(base + "/v1/models", headers=bearer(admin)),
            httpx.get(base + "/v1/models", headers=bearer(ana)),
            httpx.get(base + "/v1/models", headers=bearer(wrong)),
            httpx.get(base + "/v1/users/ana/profile", headers=bearer(ana)),
            httpx.get(base + "/v1/users/ben/profile", headers=bearer(ana)),
            httpx.get(base + "/v1/info", headers={"Authorization": admin}),
            httpx.get(base + "/v1/info", headers={"Authorization": "Basic " + base64.b64encode(f"admin:{admin}".encode()).decode()}),
            httpx.post(base + "/v1/chat", json={"user_id": "ana", "k": 99}, headers=bearer(ana)),
            httpx.post(base + "/v1/chat", content=b"{oops", headers={**bearer(admin), "Content-Type": "application/json"}),
            httpx.post(base + "/v1/chat", json={"user_id": "ana", "message": "hi"}, headers=bearer(ana)),
        ]
        # Keys put where they do not belong: the query string, the path.
        for param in ("api_key", "key", "token"):
            responses.append(httpx.get(f"{base}/v1/models?{param}={admin}&x=1"))
        responses.append(httpx.get(f"{base}/v1/users/{ana}/profile", headers=bearer(wrong)))
        responses.append(httpx.get(f"{base}/?__theme=dark&token={ana}"))
        # The UI's sign-in form: the right key and a wrong one.
        for password in (ana, wrong):
            responses.append(httpx.post(base + "/login", data={"username": "ana", "password": password}))
        statuses = [r.status_code for r in responses]
        assert statuses[:3] == [200, 200, 401] and statuses[4] == 403 and 401 in statuses[5:7]
        for r in responses:
            assert not any(key in r.text for key in (admin, ana, wrong)), r.text
    log = (data_dir / "server.log").read_text(errors="replace")
    assert "GET /v1/models" in log and "POST /login" in log, "the access log is on (else this checks nothing)"
    for key in (admin, ana, wrong):
        assert key not in log, f"a key leaked into the server log:\n{log[-3000:]}"
