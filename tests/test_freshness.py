"""Publication times and a time-sensitive catalog as a specification: `published_at` is read like
other fields (a bad value names file, line and field; the good rows land), stored and migrated;
with freshness on, a recent item outranks an old one of equal relevance; timeliness is measured."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import numpy as np
import pytest

from assistant.engine import Engine
from assistant.settings import Settings
from evaluation.synthetic import Platform, generate
from evaluation.timeliness import list_ages, timeliness
from retrieval.ingest import ingest_catalog, read_catalog
from retrieval.records import Item
from retrieval.request import Request
from retrieval.store import Store

MAY_1 = 1714564800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize("value, expected", [
    ("2024-05-01T12:00:00Z", MAY_1),
    ("2024-05-01T14:00:00+02:00", MAY_1),
    ("2024-05-01", MAY_1 - 12 * 3600),  # a date without a zone: midnight UTC
    (MAY_1, MAY_1),
    (str(int(MAY_1)), MAY_1),
    (MAY_1 * 1000, MAY_1),  # epoch milliseconds
    (None, None),
])
def test_published_at_is_read_as_a_time(tmp_path, value, expected):
    path = tmp_path / "catalog.jsonl"
    path.write_text(json.dumps({"id": "a", "title": "A", "published_at": value}) + "\n", encoding="utf-8")
    result = read_catalog(path)
    assert not result.rejects
    assert result.records[0].published_at == expected


def test_a_bad_published_at_names_file_line_and_field_and_the_other_rows_land(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("id,title,pubDate\na,Alpha,2024-05-01T12:00:00Z\nb,Beta,yesterday\nc,Gamma,\n", encoding="utf-8")
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        report = ingest_catalog(path, store, mapping={"published_at": "pubDate"}, progress=False)
        assert [str(r) for r in report.rejects] == [
            "news.csv:3: published_at: 'yesterday' is not a time "
            "(use epoch seconds, epoch milliseconds or ISO 8601 like 2024-05-01T12:00:00Z)"]
        assert store.get_item("a").published_at == MAY_1 and store.get_item("c").published_at is None
        assert store.get_item("b") is None


def test_an_undated_item_keeps_the_fingerprint_it_had_before_the_field():
    item = Item("a", "Alpha", "text", ["News"], popularity=0.5)
    before = {k: v for k, v in item.__dict__.items() if k != "published_at"}
    expected = hashlib.sha1(json.dumps(before, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()
    assert item.fingerprint() == expected  # stored catalogs are not re-embedded by an upgrade
    assert Item("a", "Alpha", "text", ["News"], popularity=0.5, published_at=MAY_1).fingerprint() != expected


def test_a_store_from_before_publication_times_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the items table as recassist created it before published_at
        conn.execute("CREATE TABLE items (id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, categories TEXT NOT NULL,"
                     " tags TEXT NOT NULL, year INTEGER, creator TEXT, popularity DOUBLE PRECISION, extra TEXT NOT NULL,"
                     " fingerprint TEXT NOT NULL, embedded_fingerprint TEXT, updated_at DOUBLE PRECISION NOT NULL)")
        conn.execute("INSERT INTO items VALUES ('old', 'Old', '', '[]', '[]', NULL, NULL, NULL, '{}', 'x', NULL, 1.0)")
    with Store.open(f"sqlite:///{path}") as store:
        assert store.get_item("old").published_at is None
        store.upsert_items([Item("new", "New", published_at=MAY_1)])
        assert store.get_item("new").published_at == MAY_1
    with Store.open(f"sqlite:///{path}") as store:  # opening again changes nothing
        assert store.get_item("new").published_at == MAY_1


def _news_engine(tmp_path, half_life_hours: float) -> Engine:
    settings = Settings.load(env={}, data_dir=tmp_path / f"data-{half_life_hours}", llm_backend="none",
                             embedding_backend="hash", freshness_half_life_hours=half_life_hours)
    engine = Engine(settings)
    now = time.time()
    engine.upsert_items([
        {"id": "old", "title": "Harbour storm report", "text": "storm over the harbour", "popularity": 0.50,
         "published_at": now - 10 * 86400},
        {"id": "new", "title": "Harbour storm update", "text": "storm over the harbour", "popularity": 0.45,
         "published_at": now - 3600},
        {"id": "evergreen", "title": "How tides work", "text": "tides and the moon", "popularity": 0.40},
        {"id": "embargoed", "title": "Tomorrow's storm", "text": "storm over the harbour", "popularity": 0.9,
         "published_at": now + 86400},
    ])
    return engine


@pytest.mark.parametrize("half_life_hours, first", [(0.0, "embargoed"), (12.0, "new")], ids=["off", "on"])
def test_a_news_catalog_ranks_the_recent_item_over_an_old_one_of_equal_relevance(tmp_path, half_life_hours, first):
    engine = _news_engine(tmp_path, half_life_hours)
    try:
        found = [c.item.id for c in engine.retriever.candidates("reader", Request(), k=4)]
    finally:
        engine.close()
    assert found[0] == first
    if half_life_hours:
        assert found.index("new") < found.index("old") and "embargoed" not in found
        assert found.index("evergreen") < found.index("old")  # undated: not aged
    else:
        assert found.index("old") < found.index("new")  # off: the catalog's own figures decide


def test_timeliness_counts_ages_at_the_request():
    published = np.array([0.0, 3600.0, np.nan, 36 * 3600.0, 50 * 3600.0])
    ages = list_ages([[0, 1, 2], [3, 4], []], published, [48 * 3600.0, 48 * 3600.0, 0.0])
    assert [a.tolist() for a in ages] == [[48.0, 47.0], [12.0, -2.0], []]
    found = timeliness(ages, recent_hours=24)
    assert found == {"mean_age_h": pytest.approx((47.5 + 5.0) / 2), "median_age_h": 29.5,
                     "share_within_24h": 0.25, "share_not_yet_out": 0.25, "lists": 2}


def test_the_evaluation_report_shows_timeliness_for_a_dated_catalog():
    from types import SimpleNamespace

    from evaluation.timeliness import add_to_beyond, report_section

    items = [Item("a", "A", published_at=0.0), Item("b", "B", published_at=7200.0), Item("c", "C")]
    test = SimpleNamespace(user_ids=["u", "v"], target_times=np.array([3600.0 * 10, 3600.0 * 30]))
    ranking = SimpleNamespace(top=[np.array([0, 1, 2]), np.array([1])], user_ids=["u", "v"])
    results = {"beyond": {"hybrid": {"coverage": 1.0}}}
    add_to_beyond(results, {("a", "test", "hybrid"): ranking}, test, items)
    assert results["beyond"]["hybrid"]["timeliness"]["median_age_h"] == 10.0  # ages 10 and 8 hours, then 28
    assert "| `hybrid` | 18.5 | 10.0 | 0.667 | 2 |" in "\n".join(report_section(results["beyond"]))
    undated = {"beyond": {"hybrid": {}}}
    add_to_beyond(undated, {("a", "test", "hybrid"): ranking}, test, [Item("a", "A"), Item("b", "B"), Item("c", "C")])
    assert "timeliness" not in undated["beyond"]["hybrid"]


def test_a_synthetic_news_platform_publishes_items_before_they_are_read(tmp_path):
    import csv
    from datetime import datetime

    written = generate(Platform(items=300, users=200, events=4000, days=10, periods=40, news=True), tmp_path, progress=False)
    published = {row["id"]: datetime.fromisoformat(row["published_at"].replace("Z", "+00:00")).timestamp()
                 for row in map(json.loads, written.catalog.read_text(encoding="utf-8").splitlines())}
    with open(written.events, newline="", encoding="utf-8") as handle:
        ages = np.array([(float(r["timestamp"]) - published[r["item_id"]]) / 3600 for r in csv.DictReader(handle) if r["item_id"]])
    assert len(published) == 300 and (ages >= 0).all()
    assert np.median(ages) < 72  # read in their first days
    plain = generate(Platform(items=50, users=20, events=200), tmp_path / "plain", progress=False)
    assert "published_at" not in plain.catalog.read_text(encoding="utf-8")


def test_freshness_beats_no_freshness_on_a_news_replay(tmp_path):
    import argparse

    from evaluation import news

    args = argparse.Namespace(items=600, users=500, events=12000, days=20.0, seed=0, test_hours=48.0, requests=150,
                              half_life_hours=12.0, embedding="hash", variants=["fit", "live+fresh"], work_dir=tmp_path)
    results = news.run(args)["variants"]
    off, on = results["fit"], results["live+fresh"]
    assert on["Recall@20"] > off["Recall@20"]
    assert on["timeliness"]["median_age_h"] < off["timeliness"]["median_age_h"]
