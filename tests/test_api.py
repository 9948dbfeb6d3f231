"""The HTTP API as a specification: every endpoint, auth, limits and error shapes (FakeLLM, hashing embeddings)."""

from __future__ import annotations

import json

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from assistant.events import TurnState, collect  # noqa: E402
from server.app import create_app  # noqa: E402
from server.auth import match_key, ui_login  # noqa: E402
from server.openai_facade import markdown_pieces  # noqa: E402
from assistant.engine import Engine  # noqa: E402
from core.errors import ConfigError  # noqa: E402
from assistant.events import (  # noqa: E402
    Card,
    CardsEvent,
    DoneEvent,
    MessageEvent,
    NoticeEvent,
    ReasonDelta,
    ReasonEvent,
    TextDelta,
)
from assistant.llm.fake import FakeLLM  # noqa: E402
from assistant.settings import Settings  # noqa: E402

ADMIN, ANA = "admin-key-0123456789", "ana-key-0123456789"
KEYS = {ADMIN: "admin", ANA: "user:ana"}


def _demo_engine(data_dir, **overrides) -> Engine:
    settings = Settings.load(env={}, data_dir=data_dir, llm_backend="fake", embedding_backend="hash", **overrides)
    engine = Engine(settings, llm=FakeLLM())
    engine.load_demo(progress=False)
    return engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """One demo engine for the tests that leave users' data as they found it (building one takes seconds)."""
    engine = _demo_engine(tmp_path_factory.mktemp("shared"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine, mount_ui=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def fresh(demo_engine):
    """A client on its own engine, for tests that change or delete a demo user's data."""
    with TestClient(create_app(demo_engine, mount_ui=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A client for a server with an admin key and a key bound to user ana (the auth table reads only statuses)."""
    engine = _demo_engine(tmp_path_factory.mktemp("keyed"), api_keys=KEYS)
    with TestClient(create_app(engine, mount_ui=False), raise_server_exceptions=False) as c:
        yield c
    engine.close()


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body."""
    out = []
    for block in text.strip().split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        out.append((name, "\n".join(data)))
    return out


# --- chat ----------------------------------------------------------------------------------


def test_chat_answers_with_items_reasons_and_summary(client):
    r = client.post("/v1/chat", json={"user_id": "ana", "message": "a witty romance", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session_id"]
    assert 1 <= len(body["items"]) <= 3
    for item in body["items"]:
        assert {"item_id", "title", "score", "reason", "evidence", "year", "creator", "categories"} <= item.keys()
        assert item["reason"], "every item carries a reason"
    assert body["summary"]
    assert "retrieve" in body["timings"]


def test_chat_continues_a_session(client):
    first = client.post("/v1/chat", json={"user_id": "ana", "message": "a witty romance"}).json()
    second = client.post(
        "/v1/chat", json={"user_id": "ana", "message": "something else", "session_id": first["session_id"]}
    ).json()
    assert second["session_id"] == first["session_id"]


def test_chat_stream_is_server_sent_events_one_per_turn_event(client):
    r = client.post("/v1/chat", json={"user_id": "ana", "message": "a witty romance", "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names[0] == "cards" and names[-1] == "done"
    for name, data in events:
        assert json.loads(data)["type"] == name
    stages = [json.loads(d)["stage"] for n, d in events if n == "cards"]
    assert stages == ["retrieved", "ranked"]
    assert json.loads(events[-1][1])["session_id"]


def test_bad_input_fails_before_the_stream_starts(client):
    r = client.post("/v1/chat", json={"user_id": "ana", "message": "   ", "stream": True})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request"


# --- recommendations, feedback, events, items --------------------------------------------


def test_recommendations_honour_filters(client):
    r = client.post(
        "/v1/recommendations",
        json={"user_id": "ana", "query": "love story", "k": 4, "filters": {"categories": ["Romance"]}},
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items and all("Romance" in i["categories"] for i in items)
    excluded = items[0]["item_id"]
    again = client.post(
        "/v1/recommendations",
        json={
            "user_id": "ana",
            "query": "love story",
            "k": 4,
            "filters": {"categories": ["Romance"], "exclude_ids": [excluded]},
        },
    ).json()["items"]
    assert excluded not in [i["item_id"] for i in again]


def test_feedback_changes_the_next_answer(fresh):
    ask = {"user_id": "ben", "query": "a sea voyage", "k": 3}
    top = fresh.post("/v1/recommendations", json=ask).json()["items"][0]["item_id"]
    r = fresh.post("/v1/feedback", json={"user_id": "ben", "item_id": top, "kind": "not_interested"})
    assert r.status_code == 200 and r.json()["recorded"] is True
    after = [i["item_id"] for i in fresh.post("/v1/recommendations", json=ask).json()["items"]]
    assert top not in after


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"user_id": "ana", "item_id": "no-such-item", "kind": "like"}, 404, None),
        ({"user_id": "ana", "item_id": "bk-001", "kind": "love"}, 422, "kind"),
        ({"user_id": "ana", "kind": "like"}, 422, "item_id"),
    ],
)
def test_feedback_errors(client, body, status, field):
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == status
    error = r.json()["error"]
    if field:
        assert field in error["message"] and field in [f["field"] for f in error["fields"]]


def test_events_accepts_one_object_or_a_list_and_reports_rejects(fresh):
    one = {"user_id": "zoe", "item_id": "bk-001", "type": "like", "timestamp": 1767225600}
    r = fresh.post("/v1/events", json=one)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "new": 1, "rejected": []}
    batch = [one, {"user_id": "zoe", "item_id": "no-such-item", "type": "view"}, {"item_id": "bk-002", "type": "view"}]
    body = fresh.post("/v1/events", json=batch).json()
    assert body["accepted"] == 1 and body["new"] == 0  # the same event again is not duplicated
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert all(r["reason"] for r in body["rejected"])
    assert fresh.get("/v1/users/zoe/profile").json()["events"] == 1


def test_items_upsert_reports_new_unchanged_and_rejected(client, engine):
    item = {
        "id": "new-1",
        "title": "The Lighthouse Keeper's Almanac",
        "text": "tides, storms and lamp oil",
        "categories": ["Fiction"],
    }
    r = client.put("/v1/items", json=[item, {"id": "bad-1"}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["upserted"], body["unchanged"]) == (1, 0)
    assert [x["index"] for x in body["rejected"]] == [1]
    assert engine.store.get_item("new-1").title == item["title"]
    again = client.put("/v1/items", json=[item]).json()
    assert (again["upserted"], again["unchanged"]) == (0, 1)
    found = client.post(
        "/v1/recommendations", json={"user_id": "ana", "query": "lighthouse tides storms lamp oil", "k": 5}
    ).json()
    assert "new-1" in [i["item_id"] for i in found["items"]]


def test_items_upsert_marks_what_it_embeds_and_embeds_what_an_earlier_write_left(client, engine):
    from retrieval.ingest import items_from_dicts

    rows = [{"id": f"mark-{n}", "title": f"Harbour Log {n}", "text": f"gulls and ropes, entry {n}"} for n in range(3)]
    # mark-2 is stored but never embedded, as a write stopped between upsert and embedding leaves it.
    engine.store.upsert_items(items_from_dicts(rows[2:])[0])
    assert [i.id for i in engine.store.items_needing_embedding(["mark-2"])] == ["mark-2"]

    body = client.put("/v1/items", json=rows).json()
    assert (body["upserted"], body["unchanged"]) == (2, 1)
    assert engine.store.items_needing_embedding([r["id"] for r in rows]) == []
    assert set(engine.retriever.content.get_vectors(["mark-0", "mark-1", "mark-2"])) == {"mark-0", "mark-1", "mark-2"}

    changed = {**rows[0], "text": "a new log entry about fog"}
    assert client.put("/v1/items", json=[changed]).json()["upserted"] == 1
    assert engine.store.items_needing_embedding(["mark-0"]) == []


# --- users -----------------------------------------------------------------------------------


def test_profile_read_patch_and_delete(fresh):
    profile = fresh.get("/v1/users/ana/profile").json()
    assert profile["user_id"] == "ana" and profile["interests"] and profile["events"] > 0
    patched = fresh.patch("/v1/users/ana/profile", json={"summary": "Reads Austen on trains.", "dislikes": ["Horror"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["summary"] == "Reads Austen on trains."
    assert "Horror" in patched.json()["dislikes"]
    deleted = fresh.delete("/v1/users/ana")
    assert deleted.status_code == 200
    assert deleted.json()["deleted"]["events"] > 0
    assert fresh.get("/v1/users/ana/profile").json()["events"] == 0


def test_profile_patch_rejects_unknown_fields(client):
    r = client.patch("/v1/users/ana/profile", json={"favourite_colour": "blue"})
    assert r.status_code == 422
    assert "favourite_colour" in r.json()["error"]["message"]


# --- the OpenAI-compatible facade -----------------------------------------------------------


def test_models_lists_the_assistant(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == "recassist"


def test_chat_completions_answers_a_markdown_list(client):
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "anything",
            "user": "ana",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a witty romance"}],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "anything"
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("1. **")
    assert "2. **" in content
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["recassist"]["items"]


def test_chat_completions_stream_ends_with_done(client):
    r = client.post(
        "/v1/chat/completions",
        headers={"X-Recassist-User": "ana"},
        json={"messages": [{"role": "user", "content": "a witty romance"}], "stream": True},
    )
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.startswith("1. **")


def test_chat_completions_keeps_one_session_per_conversation(client):
    def ask(messages):
        return client.post("/v1/chat/completions", json={"user": "ana", "messages": messages}).json()["recassist"][
            "session_id"
        ]

    first = ask([{"role": "user", "content": "a witty romance"}])
    follow = ask(
        [
            {"role": "user", "content": "a witty romance"},
            {"role": "assistant", "content": "..."},
            {"role": "user", "content": "older ones"},
        ]
    )
    other = ask([{"role": "user", "content": "a sea voyage"}])
    assert first == follow != other


@pytest.mark.parametrize(
    "body, status",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, 400),  # no user named (open server, no bound key)
        ({"user": "ana", "messages": [{"role": "system", "content": "hi"}]}, 422),
        ({"user": "ana", "messages": []}, 422),
    ],
)
def test_chat_completions_errors(client, body, status):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    assert r.json()["error"]["message"]


# --- auth --------------------------------------------------------------------------------------

CHAT_ANA = ("POST", "/v1/chat", {"user_id": "ana", "message": "a witty romance"})
CHAT_BEN = ("POST", "/v1/chat", {"user_id": "ben", "message": "a sea voyage"})


@pytest.mark.parametrize(
    "request_, key, status",
    [
        (("GET", "/health", None), None, 200),
        (CHAT_ANA, None, 401),
        (CHAT_ANA, "wrong-key", 401),
        (CHAT_ANA, ANA, 200),
        (CHAT_BEN, ANA, 403),
        (CHAT_BEN, ADMIN, 200),
        (("POST", "/v1/recommendations", {"user_id": "ben"}), ANA, 403),
        (("POST", "/v1/feedback", {"user_id": "ben", "item_id": "bk-001", "kind": "like"}), ANA, 403),
        (("POST", "/v1/feedback", {"user_id": "ana", "item_id": "bk-001", "kind": "like"}), ANA, 200),
        (("POST", "/v1/events", {"user_id": "ben", "item_id": "bk-001", "type": "view"}), ANA, 403),
        (("POST", "/v1/events", [{"user_id": "ana", "item_id": "bk-001", "type": "view"}]), ANA, 200),
        (("PUT", "/v1/items", [{"id": "x1", "title": "X"}]), ANA, 403),
        (("PUT", "/v1/items", [{"id": "x1", "title": "X"}]), ADMIN, 200),
        (("GET", "/v1/users/ben/profile", None), ANA, 403),
        (("GET", "/v1/users/ana/profile", None), ANA, 200),
        (("PATCH", "/v1/users/ben/profile", {"summary": "x"}), ANA, 403),
        (("DELETE", "/v1/users/ben", None), ANA, 403),
        (("DELETE", "/v1/users/ben", None), ADMIN, 200),
        (("GET", "/v1/info", None), ANA, 403),
        (("GET", "/v1/info", None), ADMIN, 200),
        (("GET", "/v1/models", None), None, 401),
        (("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}), ANA, 200),
        (("POST", "/v1/chat/completions", {"user": "ben", "messages": [{"role": "user", "content": "hi"}]}), ANA, 403),
        (
            ("POST", "/v1/chat/completions", {"user": "ben", "messages": [{"role": "user", "content": "hi"}]}),
            ADMIN,
            200,
        ),
        (("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}), None, 401),
    ],
)
def test_auth(keyed, request_, key, status):
    method, path, body = request_
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = keyed.request(method, path, json=body, headers=headers)
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.json()["error"]["type"] in ("unauthorized", "forbidden")
        assert key is None or key not in r.text  # keys are never echoed
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


def test_facade_user_header_cannot_escape_a_bound_key(keyed):
    r = keyed.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {ANA}", "X-Recassist-User": "ben"},
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    "host, keys, refuses",
    [
        ("127.0.0.1", {}, False),
        ("localhost", {}, False),
        ("::1", {}, False),
        ("0.0.0.0", {}, True),
        ("192.168.1.20", {}, True),
        ("0.0.0.0", KEYS, False),
    ],
)
def test_keys_are_required_off_loopback(make_engine, host, keys, refuses):
    engine = make_engine(demo=False, api_keys=keys)
    if refuses:
        with pytest.raises(ConfigError, match="RECASSIST_API_KEYS"):
            create_app(engine, host=host, mount_ui=False)
    else:
        assert create_app(engine, host=host, mount_ui=False)


@pytest.mark.parametrize(
    "presented, role",
    [(ADMIN, "admin"), (ANA, "user:ana"), ("", None), (ANA[:-1], None), (ANA + "x", None)],
)
def test_match_key(presented, role):
    assert match_key(KEYS, presented) == role


@pytest.mark.parametrize(
    "username, password, ok",
    [
        ("admin", ADMIN, True),
        ("ana", ANA, True),
        ("ben", ANA, False),  # a user key signs in only as its own user
        ("admin", ANA, False),
        ("ana", ADMIN, False),  # admins sign in as 'admin'
        ("ana", "nope", False),
    ],
)
def test_ui_login(username, password, ok):
    assert ui_login(KEYS)(username, password) is ok


# --- limits and error shapes -------------------------------------------------------------------


def test_oversized_body_is_413(client):
    big = [{"user_id": "ana", "item_id": "bk-001", "type": "view", "text": "x" * 1000}] * 1100
    r = client.post("/v1/events", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "payload_too_large"


def test_oversized_chunked_body_is_413(client):
    chunks = (b"[" + b" " * 100_000 for _ in range(12))  # no Content-Length: counted as it arrives
    r = client.post("/v1/events", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, {"user_id", "message"}),
        ({"user_id": "ana", "message": "hi", "k": 0}, {"k"}),
        ({"user_id": "ana", "message": "hi", "colour": "red"}, {"colour"}),
        ({"user_id": "a b/c", "message": "hi"}, {"user_id"}),
    ],
)
def test_validation_errors_name_the_fields(client, body, fields):
    r = client.post("/v1/chat", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "validation_error"
    assert fields <= {f["field"] for f in error["fields"]}


def test_malformed_json_is_422(client):
    r = client.post("/v1/chat", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_unknown_route_is_json_404(client):
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


def test_unexpected_errors_hide_details(client, engine, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engine.agent, "recommend", boom)
    r = client.post("/v1/recommendations", json={"user_id": "ana"})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "internal_error"
    assert "secret" not in r.text and "Traceback" not in r.text


def test_openapi_documents_typed_models(client):
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/chat",
        "/v1/recommendations",
        "/v1/events",
        "/v1/items",
        "/v1/users/{user_id}/profile",
        "/v1/feedback",
        "/v1/chat/completions",
    ):
        assert path in spec["paths"]
    assert {"ChatRequest", "ChatResponse", "ItemOut", "Filters", "EventsResponse", "ErrorResponse"} <= spec[
        "components"
    ]["schemas"].keys()


def test_ui_is_mounted_at_root_next_to_the_api(engine):
    with TestClient(create_app(engine)) as c:
        assert "<html" in c.get("/").text.lower()
        assert c.get("/health").json()["status"] == "ok"
        assert c.post("/v1/recommendations", json={"user_id": "ana", "k": 2}).status_code == 200


# --- folding events (shared with the UI) -------------------------------------------------------


def _card(item_id, title, reason=""):
    return Card(item_id=item_id, title=title, score=1.0, year=1900, creator="A. Writer", reason=reason)


TURN = [
    NoticeEvent("The model is slow today."),
    CardsEvent([_card("a", "Alpha", "evidence a"), _card("b", "Beta", "evidence b")], "retrieved"),
    CardsEvent([_card("b", "Beta", "evidence b"), _card("a", "Alpha", "evidence a")], "ranked"),
    ReasonDelta("b", "Like "),
    ReasonDelta("b", "Gamma."),
    ReasonEvent("b", "Like Gamma, which you liked.", "llm"),
    ReasonEvent("a", "Shares Delta.", "evidence"),
    TextDelta("Two "),
    TextDelta("picks."),
    MessageEvent("Two picks for you.", "summary"),
    DoneEvent("s1", "recommend", {"retrieve": 1.0}, {"prompt": 10}),
]


def test_turn_state_folds_a_turn():
    state = collect(TURN)
    assert [c["item_id"] for c in state.items()] == ["b", "a"]
    assert [c["reason"] for c in state.items()] == ["Like Gamma, which you liked.", "Shares Delta."]
    assert [c["reason_source"] for c in state.items()] == ["llm", "evidence"], "who wrote each final reason"
    assert state.text == "Two picks for you."
    assert state.notices == ["The model is slow today."]
    assert state.done.session_id == "s1"


def test_turn_state_streams_a_reason_over_the_provisional_one():
    state = TurnState()
    for event in TURN[:4]:
        state.apply(event)
    assert state.items()[0]["reason"] == "Like "
    assert state.writing == {"b"}


LISTED = (
    "_The model is slow today._\n\n"
    "1. **Beta** (1900, A. Writer) — Like Gamma, which you liked.\n"
    "2. **Alpha** (1900, A. Writer) — Shares Delta.\n"
)


@pytest.mark.parametrize(
    "stream, ending",
    [(True, "\nTwo picks."), (False, "\nTwo picks for you.")],  # a stream cannot take back what it sent
)
def test_markdown_lists_items_then_summary(stream, ending):
    assert "".join(markdown_pieces(TURN, stream=stream)) == LISTED + ending


def test_markdown_a_greeting_before_the_list_is_its_own_paragraph():
    """"Hi! How are you?" gets a greeting and then picks: the list starts on a line of its own."""
    turn = [MessageEvent("Hi again! Here are a few picks.", "smalltalk"), *TURN[1:]]
    text = "".join(markdown_pieces(turn, stream=False))
    assert text.startswith("Hi again! Here are a few picks.\n\n1. **Beta**")


@pytest.mark.integration
def test_generated_requests_never_get_a_server_error(engine):
    """Schemathesis generates requests from our own OpenAPI document; none may answer 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(engine, mount_ui=False))
    operations = [result.ok() for result in schema.get_all_operations()]
    failures = []

    @given(st.one_of([op.as_strategy() for op in operations]))
    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case):
        response = case.call()
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code}")

    call()
    assert not failures, failures[:5]


class _CountingRetriever:
    def __init__(self, error=None):
        self.refits, self.error = 0, error

    def refit(self, store):
        self.refits += 1
        if self.error:
            raise self.error


class _EngineStub:
    """What the Refresher uses of an Engine: fit (here counted by the retriever), reload, the signals folder."""

    def __init__(self, retriever):
        import tempfile
        from pathlib import Path

        self.retriever, self.store = retriever, None
        self.signals_dir = Path(tempfile.mkdtemp()) / "signals"
        self.reloads = 0

    def fit(self, *, wait=True, forgets=False):
        from assistant.fitted import fit_lock

        with fit_lock(self.signals_dir, wait=wait) as mine:  # the Engine's lock, as PublishedSignals takes it
            if not mine:
                return None
            self.retriever.refit(self.store)
            return {}

    def reload_signals(self):
        self.reloads += 1
        return False


def _wait_for(condition, timeout_s=5.0):
    import time

    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_new_events_refit_in_the_background_at_most_once_per_interval():
    import time

    from server.jobs import Refresher

    retriever = _CountingRetriever()
    refresher = Refresher(_EngineStub(retriever), interval_s=0.3)
    for _ in range(5):
        refresher.request()
    assert _wait_for(lambda: retriever.refits == 1)
    refresher.request()  # within the interval: waits for it
    time.sleep(0.1)
    assert retriever.refits == 1
    assert _wait_for(lambda: retriever.refits == 2)


def test_while_another_worker_fits_this_one_serves_what_it_publishes():
    import fcntl

    from server.jobs import Refresher

    retriever = _CountingRetriever()
    engine = _EngineStub(retriever)
    engine.signals_dir.mkdir(parents=True)
    with open(engine.signals_dir / ".fit.lock", "a+") as other:  # another process holds the fit lock
        fcntl.flock(other, fcntl.LOCK_EX)
        Refresher(engine, interval_s=0).request()
        assert _wait_for(lambda: engine.reloads == 1)
    assert retriever.refits == 0


def test_a_failed_refit_is_logged_not_raised(caplog):
    from server.jobs import Refresher
    from core.errors import StoreError

    retriever = _CountingRetriever(StoreError("chroma is down"))
    Refresher(_EngineStub(retriever), interval_s=0).request()
    assert _wait_for(lambda: "chroma is down" in caplog.text)


def test_docs_page_works_offline(client):
    """/docs is rendered here from the OpenAPI document: no script, no CDN, every operation listed."""
    response = client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script" not in page and "cdn" not in page.lower() and "http://" not in page and "https://" not in page
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method in operations:
            assert f"<span class=m>{method.upper()}</span> <code>{path}</code>" in page
    assert "user_id" in page and "required" in page and "available_minutes" in page
    assert client.get("/redoc").status_code == 404


def test_events_written_in_chat_are_fitted_in_the_background(make_engine):
    """A like said in chat (or any event this process writes outside /v1/events) reaches the
    global signals at the watcher's next look, as events posted to /v1/events do."""
    from server.jobs import Refresher

    from retrieval.signals import read_manifest

    engine = make_engine(llm_backend="none")
    before = engine.fit()
    assert not engine.signals_stale()
    Refresher(engine, interval_s=0.2).watch()
    likes = len([e for e in engine.store.events_for_user("ana") if e.type == "like"])
    session = list(engine.agent.respond("ana", "recommend me something", k=3))[-1].session_id
    list(engine.agent.respond("ana", "I loved the first one", k=3, session_id=session))
    assert len([e for e in engine.store.events_for_user("ana") if e.type == "like"]) == likes + 1

    def fitted_anew() -> bool:
        manifest = read_manifest(engine.signals.root)
        return manifest["version"] != before["version"] and not engine.signals_stale()
    assert _wait_for(fitted_anew, timeout_s=30.0)


def test_a_server_told_not_to_fit_only_follows_what_is_published():
    from server.jobs import Refresher

    retriever = _CountingRetriever()
    engine = _EngineStub(retriever)
    refresher = Refresher(engine, interval_s=0.05, enabled=False)
    refresher.watch()
    refresher.request()
    assert _wait_for(lambda: engine.reloads >= 2)  # it still reads what `recassist fit` publishes
    assert retriever.refits == 0


def test_the_fit_interval_is_a_setting(make_engine):
    from server.app import create_app

    engine = make_engine(demo=False, llm_backend="none", fit_interval_s=120)
    assert create_app(engine, mount_ui=False).state.refresher.interval_s == 120
    engine = make_engine(demo=False, llm_backend="none", fit_interval_s=0)
    assert create_app(engine, mount_ui=False).state.refresher.enabled is False


def test_a_long_fit_is_followed_by_twice_its_length_without_one():
    """A fit of t seconds: the next waits at least 2t after it ended, whatever the interval, so a
    stream of events on a large log never keeps a core fitting."""
    import time

    from server.jobs import Refresher

    import threading

    fitting = threading.Event()

    class _SlowRetriever(_CountingRetriever):
        def refit(self, store):
            fitting.set()
            time.sleep(0.3)
            super().refit(store)
            fitting.clear()

    retriever = _SlowRetriever()
    refresher = Refresher(_EngineStub(retriever), interval_s=0.01)
    refresher.request()
    assert _wait_for(lambda: retriever.refits == 1)
    ended = time.monotonic()
    assert refresher.last_fit_s >= 0.3 and refresher.gap_s() >= 0.6
    refresher.request()
    assert _wait_for(lambda: retriever.refits == 2, timeout_s=5.0)
    assert time.monotonic() - ended >= 0.55  # not 0.01 after

    # Asked for while a fit runs: the next still rests twice that fit's length after it ends.
    refresher.request()
    assert fitting.wait(timeout=5.0)
    refresher.request()
    assert _wait_for(lambda: retriever.refits == 3, timeout_s=5.0)
    ended = time.monotonic()
    assert _wait_for(lambda: retriever.refits == 4, timeout_s=5.0)
    assert time.monotonic() - ended >= 0.85  # a rest of 0.6 after the end, then a 0.3 fit (not 0.6 after its start)
