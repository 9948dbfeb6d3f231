"""Fitting is a job, serving only reads: engines start from the published signals, `recassist fit`
publishes, a delete-my-data publishes anew and drops the older versions."""

from __future__ import annotations

import pytest

from assistant.engine import Engine
from assistant.settings import Settings
from retrieval.records import Event
from retrieval.signals import read_manifest


def _settings(data_dir, **extra):
    return Settings.load(env={}, data_dir=data_dir, llm_backend="none", embedding_backend="hash", **extra)


@pytest.fixture
def published(tmp_path):
    """A demo data dir whose signals were fitted and published by loading the demo."""
    engine = Engine(_settings(tmp_path / "data"), demo="en")
    engine.load_demo(progress=False)
    engine.close()
    return engine.data_dir


def _no_event_reads(monkeypatch):
    from retrieval.store import Store

    def refuse(*args, **kwargs):
        raise AssertionError("a worker read the event log to start")

    monkeypatch.setattr(Store, "iter_events", refuse)
    monkeypatch.setattr(Store, "iter_event_columns", refuse)


def test_a_new_worker_serves_the_published_signals_without_reading_the_log(published, tmp_path, monkeypatch):
    manifest = read_manifest(published / "signals")
    assert manifest["events"] > 0
    _no_event_reads(monkeypatch)
    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        assert engine.retriever.signals_version == manifest["version"]
        assert engine.retriever.behaviour_confidence == pytest.approx(manifest["confidence"])
        assert engine.agent.recommend("ben", k=3)["items"]
        assert not engine.signals_stale()
    finally:
        engine.close()


def test_a_large_log_that_moved_on_is_served_stale_and_fitted_by_the_job(published, tmp_path, monkeypatch, caplog):
    import assistant.engine as engine_module

    first = Engine(_settings(tmp_path / "data"), demo="en")
    first.store.add_events([Event("newcomer", "like", 1.0, "bk-001")])  # written by another worker
    first.close()
    monkeypatch.setattr(engine_module, "FIT_AT_START_EVENTS", 10)  # this log counts as large
    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        version = read_manifest(published / "signals")["version"]
        assert engine.retriever.signals_version == version  # served as published, not refitted here
        assert "`recassist fit` refreshes them" in caplog.text and engine.signals_stale()
        manifest = engine.fit()
        assert manifest["version"] != version and not engine.signals_stale()
        assert engine.retriever.signals_version == manifest["version"]
    finally:
        engine.close()


def test_another_process_publishing_reaches_a_running_engine(published, tmp_path):
    serving = Engine(_settings(tmp_path / "data"), demo="en")
    job = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        before = serving.retriever.signals_version
        assert serving.reload_signals() is False  # nothing new yet
        job.store.add_events([Event("newcomer", "like", 1.0, "bk-002")])
        newer = job.fit()["version"]
        assert serving.reload_signals() is True and serving.retriever.signals_version == newer != before
    finally:
        job.close()
        serving.close()


def test_the_fit_command_publishes_and_says_what_it_did(published, tmp_path, capsys):
    from server.cli import main

    before = read_manifest(published / "signals")["version"]
    assert main(["fit", "--quiet", "--data-dir", str(tmp_path / "data"), "--llm-backend", "none", "--embedding-backend", "hash"]) == 0
    out = capsys.readouterr().out
    after = read_manifest(published / "signals")
    assert after is not None and after["version"] in out and f"{after['events']:,} events" in out
    assert before != after["version"]


def test_deleting_a_user_publishes_anew_and_keeps_no_older_version(published, tmp_path):
    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        events_before = read_manifest(published / "signals")["events"]
        removed = engine.agent.delete_user("ben")
        assert removed["events"] > 0
        versions = [p for p in (published / "signals").iterdir() if p.name.startswith("v")]
        assert len(versions) == 1  # older ones were fitted on ben's events too
        assert read_manifest(published / "signals")["events"] == events_before - removed["events"]
    finally:
        engine.close()


def test_a_deletion_in_another_worker_reaches_this_workers_next_answer(published, tmp_path):
    serving = Engine(_settings(tmp_path / "data"), demo="en")
    other = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        before = serving.retriever.signals_version
        assert other.agent.delete_user("ben")["events"] > 0
        after = read_manifest(published / "signals")
        assert after["forgets"] == 1 and after["version"] != before
        serving.agent.recommend("ana", k=3)  # no waiting: adopted before this answer was made
        assert serving.retriever.signals_version == after["version"]
    finally:
        other.close()
        serving.close()


def test_an_ordinary_publication_is_followed_in_the_background(published, tmp_path):
    import time

    serving = Engine(_settings(tmp_path / "data"), demo="en")
    job = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        serving.retriever
        job.store.add_events([Event("newcomer", "like", 1.0, "bk-002")])
        newer = job.fit()
        assert newer["forgets"] == 0  # not a deletion: nobody has to wait for it
        serving.agent.recommend("ana", k=3)
        deadline = time.monotonic() + 10
        while serving.retriever.signals_version != newer["version"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert serving.retriever.signals_version == newer["version"]
    finally:
        job.close()
        serving.close()


def test_a_deletion_waits_for_a_fit_in_progress_and_fits_after_it(published, tmp_path):
    import threading
    import time

    from assistant.fitted import fit_lock

    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        engine.retriever
        done = threading.Event()
        with fit_lock(published / "signals"):  # another process is fitting (and may have read ben's events)
            worker = threading.Thread(target=lambda: (engine.agent.delete_user("ben"), done.set()))
            worker.start()
            time.sleep(0.5)
            assert not done.is_set()  # the events are gone, but the fit waits its turn
            assert read_manifest(published / "signals").get("forgets", 0) == 0
        worker.join(30)
        assert done.is_set() and read_manifest(published / "signals")["forgets"] == 1
        # A later ordinary fit keeps the count, so workers that missed the deletion's version still wait for it.
        assert engine.fit()["forgets"] == 1
    finally:
        engine.close()


def test_signals_go_where_the_signals_dir_setting_says(tmp_path, monkeypatch):
    shared = tmp_path / "shared-volume" / "signals"
    monkeypatch.setenv("RECASSIST_SIGNALS_DIR", str(shared))
    settings = Settings.load(data_dir=tmp_path / "host-a", llm_backend="none", embedding_backend="hash")
    engine = Engine(settings, demo="en")
    try:
        engine.load_demo(progress=False)
        manifest = engine.fit()
        assert read_manifest(shared)["version"] == manifest["version"]
        assert not (tmp_path / "host-a" / "signals").exists()
    finally:
        engine.close()


def test_the_published_version_carries_the_content_vectors_and_a_worker_asks_chroma_for_none(published, tmp_path, monkeypatch):
    """A worker reads a history's and a list's vectors from the published version (memory-mapped),
    not from Chroma; the answers are the ones Chroma's vectors give."""
    import numpy as np

    from retrieval.request import Request
    from retrieval.vectors import VectorIndex

    import retrieval.candidates as candidates

    # Profiles searched by Chroma in both runs: without the table they cannot be searched among
    # their items' neighbours (tests/test_content_cache.py covers that path).
    monkeypatch.setattr(candidates, "PROFILE_FROM_NEIGHBOURS", 1.01)
    manifest = read_manifest(published / "signals")
    assert "content_vectors.npy" in manifest["files"] and manifest["content_collection"]
    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        retriever = engine.retriever
        assert len(retriever._content_table) == engine.store.item_count()
        users = ["ana", "ben", "eli"]
        with_table = [[(c.item.id, round(c.score, 9), c.evidence.near_history) for c in retriever.candidates(u, Request(), k=8)]
                      for u in users]
        asked = []
        real_get = VectorIndex.get_vectors
        monkeypatch.setattr(VectorIndex, "get_vectors", lambda self, ids: asked.append(list(ids)) or real_get(self, ids))
        retriever.candidates("dara", Request(query="a sea voyage"), k=8)
        assert asked == []
        # The same requests with Chroma's vectors alone give the same lists and evidence.
        table = retriever._content_table
        retriever._content_table = type(table)()
        retriever._vector_cache.clear()
        retriever.neighbours._entries.clear()
        retriever.neighbours._by_vector.clear()
        without = [[(c.item.id, round(c.score, 9), c.evidence.near_history) for c in retriever.candidates(u, Request(), k=8)]
                   for u in users]
        assert asked and without == with_table
        some = table.ids[0]
        assert np.array_equal(table.get([some])[some], real_get(retriever.content, [some])[some])
    finally:
        engine.close()


def test_an_item_indexed_after_the_fit_is_read_from_chroma_not_from_the_older_version(published, tmp_path):
    from retrieval.records import Item

    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        retriever = engine.retriever
        item_id = retriever._content_table.ids[0]
        old = retriever._content_vectors([item_id])[item_id].copy()
        item = engine.store.get_items([item_id])[item_id]
        changed = Item(**{**item.__dict__, "text": "a completely different description about deep sea submarines"})
        engine.upsert_items([changed.__dict__])
        new = retriever._content_vectors([item_id])[item_id]
        assert not (new == old).all()
        assert (new == retriever.content.get_vectors([item_id])[item_id]).all()
    finally:
        engine.close()


def test_a_version_fitted_over_another_embedding_model_lends_no_vectors(published, tmp_path):
    import json

    from retrieval.signals import current_version

    folder = current_version(published / "signals")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["content_collection"] = "content-some-other-model-384"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        assert len(engine.retriever._content_table) == 0
        assert engine.agent.recommend("ben", k=3)["items"]
    finally:
        engine.close()


def test_a_fit_over_an_unchanged_catalog_links_the_content_vectors_instead_of_copying_them(published, tmp_path):
    import os

    from retrieval.signals import current_version

    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        first = current_version(published / "signals") / "content_vectors.npy"
        engine.add_events([{"user_id": "ben", "type": "view", "item_id": engine.retriever._content_table.ids[3]}])
        engine.fit()
        second = current_version(published / "signals") / "content_vectors.npy"
        assert second != first and os.stat(second).st_ino == os.stat(first).st_ino
        item = engine.store.get_items([engine.retriever._content_table.ids[0]])
        changed = {**next(iter(item.values())).__dict__, "text": "now about lighthouses and storms at sea"}
        engine.upsert_items([changed])
        engine.fit()
        third = current_version(published / "signals") / "content_vectors.npy"
        assert os.stat(third).st_ino != os.stat(second).st_ino
    finally:
        engine.close()


def test_the_process_that_fitted_serves_the_published_files_not_a_private_copy(published, tmp_path):
    import numpy as np

    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        engine.fit()
        adopted = engine.retriever._adopted
        assert isinstance(adopted.content_vectors, np.memmap) and isinstance(adopted.answer_hits, np.memmap)
        assert len(engine.retriever._content_table) == engine.store.item_count()
    finally:
        engine.close()


def test_info_says_which_version_is_served_and_what_it_carries(published, tmp_path):
    engine = Engine(_settings(tmp_path / "data"), demo="en")
    try:
        manifest = read_manifest(published / "signals")
        text = engine.info()["signals"]
        assert text.startswith(manifest["version"]) and f"on {manifest['events']:,} events" in text
        assert f"content vectors of {engine.store.item_count():,} items" in text
    finally:
        engine.close()
    empty = Engine(_settings(tmp_path / "empty"))
    try:
        assert empty.info()["signals"].startswith("none published yet")
    finally:
        empty.close()
