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
