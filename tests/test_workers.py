"""Several workers, one truth: `recassist serve --workers 2` over PostgreSQL and a Chroma server,
on loopback. Both workers serve the published signals; a delete-my-data sent to one reaches the
next answer of every worker (not only the next refit)."""

from __future__ import annotations

import json
import time

import pytest

from test_postgres import postgres_server, postgres_url  # noqa: F401  (fixtures: a throwaway server, a fresh schema)

pytestmark = pytest.mark.integration

REQUESTS_PER_CHECK = 40  # fresh connections; enough that both workers answer (each reply names its worker)


def _obscure_item() -> str:
    from conftest import REPO

    books = [json.loads(line) for line in (REPO / "assistant/demo_data/books.jsonl").read_text().splitlines() if line.strip()]
    return min(books, key=lambda b: b.get("popularity", 0.0))["id"]


def _cold_answers(base: str) -> dict[str, list[list[str]]]:
    """A cold user's five recommendations (popular and trending items), asked on fresh connections, per worker pid."""
    import httpx

    seen: dict[str, list[list[str]]] = {}
    for _ in range(REQUESTS_PER_CHECK):
        with httpx.Client(timeout=60) as client:  # a new connection each time, so the kernel spreads them
            r = client.post(base + "/v1/recommendations", json={"user_id": "stranger", "k": 5})
        assert r.status_code == 200, r.text
        seen.setdefault(r.headers["x-recassist-worker"], []).append([item["item_id"] for item in r.json()["items"]])
        if len(seen) == 2 and all(len(v) >= 3 for v in seen.values()):
            break
    return seen


def test_a_deletion_reaches_every_workers_next_answer(tmp_path, postgres_url):  # noqa: F811
    import httpx

    from servers import server_process, wait_for_workers
    from test_chroma_server import CLI, ChromaServer

    if CLI is None:
        pytest.skip("the `chroma` CLI is missing (it comes with `pip install chromadb` in the same environment)")
    from servers import free_port

    chroma = ChromaServer(tmp_path / "chroma", free_port())
    chroma.start()
    env = {"RECASSIST_DATABASE_URL": postgres_url, "RECASSIST_CHROMA_MODE": "http",
           "RECASSIST_CHROMA_PORT": str(chroma.port)}
    obscure = _obscure_item()
    try:
        with server_process(tmp_path / "served", args=("--workers", "2"), **env) as (_, base):
            wait_for_workers(base, 2)
            before = _cold_answers(base)
            assert len(before) == 2, f"only one worker answered {REQUESTS_PER_CHECK} fresh connections"
            assert not any(obscure in ids for answers in before.values() for ids in answers)

            # One fan likes the least popular book 300 times this very minute: it trends. The worker that
            # takes the events fits in the background, and both follow what it publishes.
            now = int(time.time())
            fan = [{"user_id": "fan", "type": "like", "item_id": obscure, "timestamp": now - 300 + i} for i in range(300)]
            r = httpx.post(base + "/v1/events", json=fan, timeout=60)
            assert r.status_code == 200 and r.json()["new"] == 300, r.text
            deadline = time.monotonic() + 60
            while True:
                answers = _cold_answers(base)
                if len(answers) == 2 and all(obscure in ids[-1] for ids in answers.values()):
                    break
                assert time.monotonic() < deadline, f"the fan's likes never reached both workers: {answers}"
                time.sleep(0.5)

            r = httpx.delete(base + "/v1/users/fan", timeout=120)
            assert r.status_code == 200 and r.json()["deleted"]["events"] == 300, r.text
            after = _cold_answers(base)  # no waiting: every answer from now on is without the fan
            assert len(after) == 2, f"only one worker answered {REQUESTS_PER_CHECK} fresh connections"
            assert not any(obscure in ids for answers in after.values() for ids in answers), after
    finally:
        chroma.stop()
