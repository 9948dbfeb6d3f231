"""The API over real HTTP: `recassist serve` on loopback, driven by httpx and the `openai` SDK."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.servers import free_port, running_server, serve_command, server_env

pytestmark = pytest.mark.integration

httpx = pytest.importorskip("httpx")
ADMIN, ANA = "admin-key-0123456789", "ana-key-0123456789"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("http-open")) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory):
    keys = f"{ADMIN}=admin,{ANA}=user:ana"
    with running_server(tmp_path_factory.mktemp("http-keyed"), RECASSIST_API_KEYS=keys) as url:
        yield url


def test_health_openapi_and_ui(base_url):
    assert httpx.get(base_url + "/health").json()["status"] == "ok"
    assert "/v1/chat" in httpx.get(base_url + "/openapi.json").json()["paths"]
    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_chat_json(base_url):
    r = httpx.post(base_url + "/v1/chat", json={"user_id": "ana", "message": "a witty romance"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["items"] and r.json()["summary"]


def test_chat_streams_events_as_they_happen(base_url):
    names = []
    with httpx.stream(
        "POST", base_url + "/v1/chat", json={"user_id": "ben", "message": "a sea voyage", "stream": True}, timeout=60
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[len("event: ") :])
            elif line.startswith("data: ") and names:
                assert json.loads(line[len("data: ") :])["type"] == names[-1]
    assert names[0] == "cards" and names[-1] == "done"


def test_openai_sdk_non_streaming_and_streaming(base_url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused-on-an-open-server")
    assert [m.id for m in client.models.list()] == ["recassist"]
    answer = client.chat.completions.create(
        model="recassist", user="ana", messages=[{"role": "user", "content": "a witty romance"}]
    )
    text = answer.choices[0].message.content
    assert text.startswith("1. **") and "2. **" in text
    pieces = []
    stream = client.chat.completions.create(
        model="recassist",
        messages=[{"role": "user", "content": "a sea voyage"}],
        stream=True,
        extra_headers={"X-Recassist-User": "ben"},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 1, "the answer arrives in several chunks"
    assert "".join(pieces).startswith("1. **")


def test_openai_sdk_with_keys(keyed_url):
    openai = pytest.importorskip("openai")
    ask = dict(model="recassist", messages=[{"role": "user", "content": "a witty romance"}])
    ana = openai.OpenAI(base_url=keyed_url + "/v1", api_key=ANA, max_retries=0)
    assert ana.chat.completions.create(**ask).choices[0].message.content  # the key names the user
    with pytest.raises(openai.PermissionDeniedError):
        ana.chat.completions.create(user="ben", **ask)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed_url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(**ask)
    admin = openai.OpenAI(base_url=keyed_url + "/v1", api_key=ADMIN, max_retries=0)
    assert admin.chat.completions.create(user="ben", **ask).choices[0].message.content


def test_keyed_server_protects_the_ui(keyed_url):
    # The UI signs in with a user id and an API key; without a session its config is not served.
    assert httpx.get(keyed_url + "/config").status_code in (401, 403)
    r = httpx.post(keyed_url + "/login", data={"username": "ana", "password": ANA})
    assert r.status_code == 200, r.text
    assert httpx.post(keyed_url + "/login", data={"username": "ben", "password": ANA}).status_code >= 400


def test_refuses_to_serve_off_loopback_without_keys(tmp_path):
    command = serve_command(free_port())
    command[command.index("127.0.0.1")] = "0.0.0.0"
    done = subprocess.run(command, env=server_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "RECASSIST_API_KEYS" in done.stderr
