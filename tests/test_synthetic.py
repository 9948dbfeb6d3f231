"""The synthetic platform generator as a specification: sizes, determinism, the shape of the log
(Zipf popularity, focused tastes, sessions, drift), and files the real ingest reads without a reject."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from evaluation import synthetic
from evaluation.synthetic import CATEGORIES, END, Platform, generate
from retrieval.ingest import ingest_catalog, ingest_events
from retrieval.records import ALL_EVENT_TYPES
from retrieval.store import Store

SMALL = Platform(items=400, users=300, events=6000, seed=1)


def rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def items(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Enough events for the shape of the log to show (well under a second to write)."""
    written = generate(Platform(items=3000, users=2000, events=120_000, seed=3), tmp_path_factory.mktemp("big"), progress=False)
    return items(written.catalog), rows(written.events)


def test_sizes_are_the_ones_asked_for(tmp_path):
    written = generate(SMALL, tmp_path, progress=False)
    catalog, events = items(written.catalog), rows(written.events)
    assert len(catalog) == written.items == 400 and len({i["id"] for i in catalog}) == 400
    assert len(events) == written.event_rows == 6000
    assert len({e["user_id"] for e in events}) == written.users == 300  # every user has an event when events >= users
    assert {e["type"] for e in events} <= set(ALL_EVENT_TYPES)
    assert all(END - 366 * 86400 <= int(e["timestamp"]) < END for e in events)


def test_the_same_seed_writes_the_same_files(tmp_path):
    first, again = generate(SMALL, tmp_path / "a", progress=False), generate(SMALL, tmp_path / "b", progress=False)
    other = generate(Platform(items=400, users=300, events=6000, seed=2), tmp_path / "c", progress=False)
    assert first.catalog.read_bytes() == again.catalog.read_bytes()
    assert first.events.read_bytes() == again.events.read_bytes()
    assert first.events.read_bytes() != other.events.read_bytes()


def test_users_are_written_a_block_at_a_time(tmp_path, monkeypatch):
    whole = generate(SMALL, tmp_path / "whole", progress=False)
    monkeypatch.setattr(synthetic, "USER_BLOCK", 7)
    blocks = generate(SMALL, tmp_path / "blocks", progress=False)
    assert len(rows(blocks.events)) == 6000 and blocks.users == whole.users


@pytest.mark.parametrize("events, users", [(50, 300), (0, 10)])
def test_fewer_events_than_users_leaves_some_users_out(tmp_path, events, users):
    written = generate(Platform(items=30, users=users, events=events), tmp_path, progress=False)
    assert len(rows(written.events)) == events and written.users <= min(events, users)


def test_popularity_follows_zipf(big):
    _, events = big
    counts = np.array(sorted(Counter(e["item_id"] for e in events if e["item_id"]).values(), reverse=True), float)
    ranks = np.arange(1, len(counts) + 1)
    slope = np.polyfit(np.log(ranks[9:500]), np.log(counts[9:500]), 1)[0]
    assert -1.3 < slope < -0.7  # Zipf exponent 1, blurred by drift and sessions
    assert counts[: len(counts) // 100].sum() > 0.2 * counts.sum()  # the top 1% of items: a large share


def test_tastes_are_focused_and_sessions_keep_to_a_category(big):
    catalog, events = big
    category = {i["id"]: i["categories"][0] for i in catalog}
    per_user = defaultdict(Counter)
    for e in events:
        if e["item_id"]:
            per_user[e["user_id"]][category[e["item_id"]]] += 1
    heavy = [c for c in per_user.values() if sum(c.values()) >= 20]
    top_share = np.mean([max(c.values()) / sum(c.values()) for c in heavy])
    assert top_share > 3 / len(CATEGORIES)  # far above what a taste spread over every category gives
    by_user = defaultdict(list)
    for e in events:
        by_user[e["user_id"]].append((int(e["timestamp"]), e["item_id"]))
    close = same = 0
    for timeline in by_user.values():
        timeline.sort()
        for (t1, a), (t2, b) in zip(timeline, timeline[1:]):
            if a and b and t2 - t1 < 3600:
                close += 1
                same += category[a] == category[b]
    assert close > 0.5 * len(events) and same / close > 0.6  # sessions: minutes apart, one category


def test_popularity_drifts_over_time(big):
    _, events = big
    halves = [Counter(), Counter()]
    middle = END - 365 * 86400 / 2
    for e in events:
        if e["item_id"]:
            halves[int(e["timestamp"]) >= middle][e["item_id"]] += 1
    early, late = ({i for i, _ in half.most_common(50)} for half in halves)
    assert len(early & late) < 40  # the most popular items of the first half are not all those of the second
    assert set(halves[1]) - set(halves[0])  # items released later, had only in the second half


def sequel_share(platform: Platform, path) -> float:
    """Share of next-item pairs within a session (minutes apart) where the second continues the first's series."""
    series = synthetic._Catalog(platform, np.random.default_rng(platform.seed)).sequel  # as `generate` builds it
    by_user = defaultdict(list)
    for e in rows(path):
        if e["item_id"]:
            by_user[e["user_id"]].append((int(e["timestamp"]), int(e["item_id"][1:])))
    pairs = [(a, b) for timeline in by_user.values() for (t1, a), (t2, b) in zip(sorted(timeline), sorted(timeline)[1:])
             if t2 - t1 < 3600]
    return sum(series[a] == b != a for a, b in pairs) / len(pairs)


@pytest.mark.parametrize("sequel, low, high", [(0.0, 0.0, 0.02), (0.25, 0.12, 0.3)])
def test_a_share_of_events_continues_the_previous_items_series(tmp_path, sequel, low, high):
    platform = Platform(items=2000, users=1000, events=30_000, seed=5, sequel=sequel)
    written = generate(platform, tmp_path, progress=False)
    assert low <= sequel_share(platform, written.events) <= high


def test_titles_are_distinct(big):
    catalog, _ = big
    assert len({i["title"] for i in catalog}) == len(catalog)  # the retriever keeps one id per work


def test_the_files_go_through_the_real_ingest_without_a_reject(tmp_path):
    written = generate(SMALL, tmp_path / "platform", progress=False)
    with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
        catalog = ingest_catalog(written.catalog, store, progress=False)
        behaviour = ingest_events(written.events, store, progress=False)
        assert catalog.rejected == 0 and catalog.inserted == 400
        assert behaviour.rejected == 0 and behaviour.read == 6000
        assert behaviour.inserted >= 5990  # the same user, item, type and second twice is one event
        item = store.get_item("i0")
        assert item.title and item.text and item.categories and item.creator and item.year and item.popularity is not None


def test_the_command_line_writes_both_files_and_says_so(tmp_path, capsys):
    synthetic.main(["--items", "50", "--users", "20", "--events", "300", "--seed", "4", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert "wrote 50 items" in out and "300 events of 20 users" in out
    assert "synthetic: 300 / 300 events (100%)" in err
    assert len(rows(tmp_path / "events.csv")) == 300
