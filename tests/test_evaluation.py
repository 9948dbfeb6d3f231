"""The evaluation harness: metrics against hand-computed values, splits, bootstrap, protocols, report."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from core.errors import ConfigError
from evaluation import bootstrap, metrics, protocols, scorers
from evaluation.cli import parse_mapping
from evaluation.movielens import split_title
from evaluation.splits import filter_min_count, leave_one_out
from evaluation.variants import parse_variants
from retrieval.records import Event, Item

INF = math.inf


# Metrics ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rank, recall10, ndcg10, recall20, ndcg20, rr",
    [
        (1, 1.0, 1.0, 1.0, 1.0, 1.0),
        (2, 1.0, 1 / math.log2(3), 1.0, 1 / math.log2(3), 0.5),
        (3, 1.0, 0.5, 1.0, 0.5, 1 / 3),
        (10, 1.0, 1 / math.log2(11), 1.0, 1 / math.log2(11), 0.1),
        (11, 0.0, 0.0, 1.0, 1 / math.log2(12), 1 / 11),
        (21, 0.0, 0.0, 0.0, 0.0, 1 / 21),
        (INF, 0.0, 0.0, 0.0, 0.0, 0.0),  # the target never made the list
    ],
)
def test_accuracy_metrics_per_user(rank, recall10, ndcg10, recall20, ndcg20, rr):
    got = metrics.accuracy(np.array([rank]), (10, 20))
    assert got["Recall@10"][0] == pytest.approx(recall10)
    assert got["NDCG@10"][0] == pytest.approx(ndcg10)
    assert got["Recall@20"][0] == pytest.approx(recall20)
    assert got["NDCG@20"][0] == pytest.approx(ndcg20)
    assert got["MRR"][0] == pytest.approx(rr)


def test_accuracy_means_over_users():
    got = metrics.accuracy(np.array([1, 3, 11, INF]), (10,))
    assert got["Recall@10"].mean() == pytest.approx(0.5)
    assert got["NDCG@10"].mean() == pytest.approx((1 + 0.5) / 4)
    assert got["MRR"].mean() == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)


@pytest.mark.parametrize(
    "scores, target, excluded, keys, expected",
    [
        ([0.9, 0.5, 0.4, 0.1], 2, [], [0, 1, 2, 3], 3),
        ([0.9, 0.5, 0.4, 0.1], 2, [0], [0, 1, 2, 3], 2),  # an excluded (seen) item does not count
        ([0.9, 0.5, 0.5, 0.1], 2, [0], [0, 1, 2, 3], 2),  # tie: item 1 has the lower key, so it goes first
        ([0.9, 0.5, 0.5, 0.1], 2, [0], [0, 3, 2, 1], 1),  # tie: the target has the lower key
        ([0.1, 0.1, 0.1, 0.1], 3, [], [3, 2, 1, 0], 1),
        ([0.9, -INF, 0.5, 0.1], 1, [], [0, 1, 2, 3], INF),  # a variant that cannot score the target
    ],
)
def test_target_ranks_exclusions_and_ties(scores, target, excluded, keys, expected):
    ranks = metrics.target_ranks(np.array([scores]), np.array([target]), [np.array(excluded, dtype=int)], np.array(keys))
    assert ranks[0] == expected


def test_top_k_skips_excluded_and_breaks_ties_like_target_ranks():
    scores = np.array([[0.9, 0.5, 0.5, 0.1, 0.7]])
    keys = np.array([0, 3, 2, 1, 4])
    top = metrics.top_k(scores, [np.array([0])], keys, 3)
    assert top.tolist() == [[4, 2, 1]]
    for position, item in enumerate(top[0], start=1):
        assert metrics.target_ranks(scores, np.array([item]), [np.array([0])], keys)[0] == position


@pytest.mark.parametrize(
    "lists, n_items, expected",
    [([[0, 1], [1, 2]], 4, 0.75), ([[0, 1], [0, 1]], 10, 0.2), ([], 5, 0.0)],
)
def test_coverage(lists, n_items, expected):
    assert metrics.coverage(lists, n_items) == pytest.approx(expected)


def test_intra_list_diversity_orthogonal_identical_and_mixed():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [math.sqrt(0.5), math.sqrt(0.5)]])
    got = metrics.intra_list_diversity([[0, 1], [0, 2], [0, 1, 3], [0]], vectors)
    # pairs of [0,1,3]: cos(0,1)=0, cos(0,3)=cos(1,3)=0.7071 -> mean distance 1 - 1.4142/3
    assert got.tolist() == pytest.approx([1.0, 0.0, 1 - 2 * math.sqrt(0.5) / 3, 0.0])


def test_novelty_is_mean_self_information_with_add_one_smoothing():
    counts = np.array([9, 0, 4])  # users (of 9) who had each item in training
    got = metrics.novelty([[0], [1], [0, 2]], counts, n_users=9)
    assert got.tolist() == pytest.approx([0.0, math.log2(10), math.log2(2) / 2])


def test_validity_rates():
    outcomes = [
        {"valid": True, "fallback": False, "parsed": 20, "expected": 20},
        {"valid": False, "fallback": True, "parsed": 0, "expected": 20},
        {"valid": True, "fallback": False, "parsed": 10, "expected": 20},
        {"valid": True, "fallback": False, "parsed": 20, "expected": 20},
    ]
    got = metrics.validity(outcomes)
    assert got == {"calls": 4, "valid_rate": 0.75, "fallback_rate": 0.25, "label_coverage": 50 / 80}
    assert metrics.validity([]) == {"calls": 0}


# Splits -------------------------------------------------------------------------------------


def ev(user, item, ts, value=4.0, type_="rate"):
    return Event(user_id=user, type=type_, timestamp=float(ts), item_id=item, value=value)


def catalog(*ids):
    return [Item(id=i, title=f"Item {i}") for i in ids]


def test_leave_one_out_orders_by_time_then_item_id():
    events = [ev("u", "10", 5), ev("u", "2", 1), ev("u", "9", 5), ev("u", "3", 2), ev("u", "4", 3)]
    split = leave_one_out(catalog("2", "3", "4", "9", "10"), events)
    (user,) = split.users
    # Ties at t=5 are ordered by numeric id (9 before 10), so 10 is the test item.
    assert [e.item_id for e in user.train] == ["2", "3", "4"]
    assert user.valid.item_id == "9" and user.test.item_id == "10"
    assert [e.item_id for e in user.history("valid")] == ["2", "3", "4"]
    assert [e.item_id for e in user.history("test")] == ["2", "3", "4", "9"]


def test_stage_arrays_never_hold_the_stage_target():
    events = [ev("a", str(i), i) for i in range(6)] + [ev("b", str(i), 10 - i) for i in range(6)]
    split = leave_one_out(catalog(*map(str, range(6))), events)
    index = split.item_index()
    for name in ("valid", "test"):
        stage = split.stage(name)
        for user, hist, target in zip(split.users, stage.histories, stage.targets):
            assert target == index[user.target(name).item_id]
            assert target not in hist
        assert [len(h) for h in stage.histories] == ([4, 4] if name == "valid" else [5, 5])


def test_repeats_unknown_items_and_searches_are_dropped():
    events = [
        ev("u", "a", 1), ev("u", "a", 2), ev("u", "zzz", 3), ev("u", None, 4, type_="search"),
        ev("u", "b", 5), ev("u", "c", 6),
    ]
    split = leave_one_out(catalog("a", "b", "c"), events)
    assert split.counts["dropped_repeat_of_same_item"] == 1
    assert split.counts["dropped_item_not_in_catalog"] == 1
    assert split.counts["dropped_no_item"] == 1
    assert [e.item_id for e in split.users[0].train] == ["a"]


def test_users_with_fewer_than_three_interactions_are_left_out():
    events = [ev("u", "a", 1), ev("u", "b", 2), ev("v", "a", 1), ev("v", "b", 2), ev("v", "c", 3)]
    split = leave_one_out(catalog("a", "b", "c"), events)
    assert [u.user_id for u in split.users] == ["v"]
    assert split.counts["users_with_fewer_than_3"] == 1


def test_min_count_filter_repeats_until_users_and_items_both_pass():
    # Item "rare" has 2 users; dropping it leaves user "x" with 2 items, so "x" goes too,
    # which leaves item "c" with 1 user, so it goes, and so on until everything has >= 2.
    events = [
        ev("x", "rare", 1), ev("x", "c", 2), ev("x", "d", 3),
        ev("y", "rare", 1), ev("y", "a", 2),
        ev("p", "a", 1), ev("p", "b", 2), ev("p", "d", 3),
        ev("q", "a", 1), ev("q", "b", 2), ev("q", "d", 3),
    ]
    kept = filter_min_count(events, 3)
    assert {e.user_id for e in kept} == {"p", "q"} or not kept
    per_item = {}
    for e in kept:
        per_item[e.item_id] = per_item.get(e.item_id, 0) + 1
    assert all(n >= 3 for n in per_item.values())
    kept2 = filter_min_count(events, 2)
    users = {}
    for e in kept2:
        users[e.user_id] = users.get(e.user_id, 0) + 1
        per_item[e.item_id] = 0
    assert all(n >= 2 for n in users.values())
    assert "c" not in {e.item_id for e in kept2}


def test_filtered_split_ranks_only_the_items_that_survive():
    events = [ev(u, i, t) for u in ("p", "q", "r") for t, i in enumerate(["a", "b", "c", "d"])] + [ev("p", "lonely", 9)]
    split = leave_one_out(catalog("a", "b", "c", "d", "lonely", "never"), events, min_count=2)
    assert [i.id for i in split.items] == ["a", "b", "c", "d"]
    unfiltered = leave_one_out(catalog("a", "b", "c", "d", "lonely", "never"), events)
    assert len(unfiltered.items) == 6  # without filtering the whole catalog is ranked


def test_no_usable_user_is_a_clear_error():
    with pytest.raises(ConfigError, match="item ids must match"):
        leave_one_out(catalog("a"), [ev("u", "x", 1), ev("u", "y", 2), ev("u", "z", 3)])


@pytest.mark.parametrize(
    "raw, title, year",
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("American President, The (1995)", "The American President", 1995),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "The City of Lost Children (Cité des enfants perdus, La)", 1995),
        ("Babylon 5", "Babylon 5", None),
        ("Stranger Things (2016-)", "Stranger Things", 2016),
    ],
)
def test_movielens_titles(raw, title, year):
    assert split_title(raw) == (title, year)


# Bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_contains_the_mean_and_is_deterministic():
    values = np.random.default_rng(3).random(200)
    a = bootstrap.confidence_interval(values, seed=42)
    b = bootstrap.confidence_interval(values, seed=42)
    assert a == b
    assert a.low <= a.mean <= a.high
    assert a.mean == pytest.approx(values.mean())
    assert a.high - a.low < 0.2
    assert bootstrap.confidence_interval(values, seed=43) != a


def test_bootstrap_of_a_constant_and_of_nothing():
    c = bootstrap.confidence_interval(np.ones(50), seed=0)
    assert (c.mean, c.low, c.high) == (1.0, 1.0, 1.0)
    assert bootstrap.confidence_interval(np.array([]), seed=0).n == 0


def test_paired_difference_of_identical_variants_is_exactly_zero():
    values = np.random.default_rng(1).random(100)
    d = bootstrap.paired_difference(values, values.copy(), seed=0)
    assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same users"):
        bootstrap.paired_difference(values, values[:10], seed=0)


# Protocols and scorers ----------------------------------------------------------------------


def tiny_split():
    """Six users who all watch a -> b -> c -> d -> e in order (with one twist)."""
    order = ["a", "b", "c", "d", "e", "f"]
    events = []
    for n, user in enumerate(["u1", "u2", "u3", "u4", "u5", "u6"]):
        seq = order if n % 2 == 0 else order[:-2] + ["f", "e"]
        events += [ev(user, item, t) for t, item in enumerate(seq)]
    items = catalog(*order, *(f"extra{i}" for i in range(24)))
    return leave_one_out(items, events)


def test_sampled_negatives_are_unseen_fixed_and_shared_by_stages():
    split = tiny_split()
    first = protocols.sampled_negatives(split, seed=5)
    again = protocols.sampled_negatives(split, seed=5)
    index = split.item_index()
    for user in split.users:
        seen = {index[e.item_id] for e in [*user.train, user.valid, user.test]}
        assert len(first[user.user_id]) == protocols.SAMPLED_NEGATIVES
        assert not seen & set(first[user.user_id].tolist())
        assert first[user.user_id].tolist() == again[user.user_id].tolist()
    valid = protocols.sampled_candidates(split.stage("valid"), [0], first)
    test = protocols.sampled_candidates(split.stage("test"), [0], first)
    assert valid[0, 1:].tolist() == test[0, 1:].tolist()  # same negatives, different held-out item


@pytest.mark.parametrize(
    "scores, keys, expected",
    [
        ([[0.9, 0.1, 0.2]], [0, 1, 2], 1.0),
        ([[0.1, 0.9, 0.2]], [0, 1, 2], 3.0),
        ([[0.5, 0.5, 0.1]], [0, 1, 2], 1.0),
        ([[0.5, 0.5, 0.1]], [2, 1, 0], 2.0),
    ],
)
def test_rank_within_sampled_candidates(scores, keys, expected):
    candidates = np.array([[0, 1, 2]])
    assert protocols.rank_within(np.array(scores), candidates, np.array(keys))[0] == expected


def test_sequential_scorer_predicts_what_follows_the_latest_item():
    events = [ev(u, i, t) for u in ("u1", "u2", "u3") for t, i in enumerate(["p", "x", "y", "q", "r"])]
    events += [ev("new", i, t) for t, i in enumerate(["q", "r", "x", "s", "t"])]
    split = leave_one_out(catalog("p", "q", "r", "s", "t", "x", "y"), events)
    stage = split.stage("valid")  # training: u1-u3 saw p -> x -> y; "new" saw q -> r -> x
    index = split.item_index()
    row = stage.user_ids.index("new")
    scores = scorers.Sequential(window=1, backward=0.0, last=1, decay=1.0).fit(stage).score(stage, [row])[0]
    assert scores.argmax() == index["y"]  # y always followed x
    pop = scorers.Popularity().fit(stage).score(stage, [row])[0]
    assert pop[index["x"]] == 4 and pop[index["y"]] == 3
    scaled = scorers.scale_rows(np.array([[2.0, 4.0], [0.0, 0.0]]))
    assert scaled.tolist() == [[0.5, 1.0], [0.0, 0.0]]


def test_full_ranking_batched_variant_end_to_end():
    from evaluation.variants import MatrixVariant

    split = tiny_split()
    stage = split.stage("test")
    keys = protocols.tie_key(len(split.items), 0)
    variant = MatrixVariant("sequential", scorers.Sequential(window=2, last=2))
    ranking = protocols.full_ranking(variant, stage, range(stage.n_users), keys)
    assert ranking.ranks.shape == (6,)
    assert all(len(t) == protocols.TOP_N for t in ranking.top)
    for top, hist in zip(ranking.top, stage.histories):
        assert not set(top.tolist()) & set(hist.tolist())
    assert ranking.accuracy()["Recall@10"].mean() == 1.0  # 6 unseen items fit in a top 10


@pytest.mark.parametrize(
    "pairs, expected",
    [
        (["id=movieId", "text=overview"], {"id": "movieId", "text": "overview"}),
        (["type==rate"], {"type": "=rate"}),
        ([], {}),
    ],
)
def test_cli_mappings(pairs, expected):
    assert parse_mapping(pairs, "--map-catalog") == expected


def test_cli_rejects_a_broken_mapping_and_unknown_variants():
    from core.errors import RecassistError

    with pytest.raises(RecassistError, match="FIELD=COLUMN"):
        parse_mapping(["idmovieId"], "--map-catalog")
    with pytest.raises(ConfigError, match="unknown variant"):
        parse_variants("popularity,telepathy")
    assert parse_variants("hybrid, popularity") == ["hybrid", "popularity"]


# The whole run on a tiny synthetic platform ------------------------------------------------------


def write_platform(tmp_path):
    """A 30-item catalog and 12 users with a strong 'next item' pattern, in a platform's own column names."""
    rng = np.random.default_rng(0)
    catalog_file = tmp_path / "items.csv"
    genres = ["Drama", "Comedy", "Horror", "Sci-Fi"]
    with catalog_file.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sku", "name", "blurb", "kind", "released"])
        for i in range(30):
            w.writerow([f"m{i}", f"Movie {i}", f"A story about thing {i % 7}", genres[i % 4], 1980 + i])
    events_file = tmp_path / "events.csv"
    with events_file.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "sku", "stars", "when"])
        for u in range(12):
            start = int(rng.integers(0, 20))
            for t, i in enumerate(range(start, start + 8)):
                w.writerow([f"user{u}", f"m{i % 30}", 4 if t % 3 else 5, 1_600_000_000 + 60 * t])
    return catalog_file, events_file


def test_run_writes_metrics_report_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from assistant.llm.fake import FakeLLM
    from evaluation.runner import EvalConfig, run
    from retrieval.embeddings import HashingEmbedder

    catalog_file, events_file = write_platform(tmp_path)
    out = tmp_path / "report"
    cfg = EvalConfig(
        out=out,
        work_dir=tmp_path / "work",
        data="custom",
        catalog=catalog_file,
        events=events_file,
        map_catalog={"id": "sku", "title": "name", "text": "blurb", "categories": "kind", "year": "released"},
        map_events={"user_id": "uid", "item_id": "sku", "value": "stars", "timestamp": "when", "type": "=rate"},
        variants=["popularity", "content", "sequential", "hybrid", "llm", "llm-noshuffle"],
        llm_users=5,
        min_count=0,
        progress=False,
        command="recassist eval --data custom ...",
        llm=FakeLLM(default="A B C"),
        embedder=HashingEmbedder(),
    )
    results = run(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split"]["users"] == 12
    assert set(saved["protocol_a"]["test"]) >= {"popularity", "content", "sequential", "hybrid", "llm", "llm-noshuffle"}
    cell = saved["protocol_a"]["test"]["sequential"]["NDCG@10"]
    assert cell["low"] <= cell["mean"] <= cell["high"]
    assert saved["protocol_b"]["test"]["hybrid"]["users"] == 12
    assert saved["protocol_a"]["test"]["llm"]["users"] == 5  # the LLM sample
    assert set(results["llm"]["chosen_blend"]) == {"(a) llm", "(a) llm-noshuffle", "(b) llm", "(b) llm-noshuffle"}
    assert results["knobs"]["hybrid"]["best"]["sequential"] == 1.0
    text = (out / "report.md").read_text()
    for needle in ("Headline: protocol (a)", "Chosen knobs", "LLM ranking", "Blend weight chosen on the validation item",
                   "recassist eval --data custom", "Beyond accuracy"):
        assert needle in text
    for png in ("protocol_a.png", "protocol_b.png", "beyond_accuracy.png", "llm_blend.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_renders_from_saved_metrics(tmp_path):
    from evaluation import report

    results = {
        "meta": {"command": "recassist eval", "seed": 0, "seconds": 1.0},
        "protocol_a": {"test": {"x": {"users": 3, "Recall@10": {"mean": 0.2, "low": 0.1, "high": 0.3, "n": 3},
                                      "NDCG@10": {"mean": 0.11, "low": 0.05, "high": 0.2, "n": 3}}}},
    }
    paths = report.write(tmp_path, results, plots=False)
    assert [p.name for p in paths] == ["metrics.json", "report.md"]
    text = (tmp_path / "report.md").read_text()
    assert "0.2000 [0.1000, 0.3000]" in text
    assert "**met**" in text


# Real data (skips when ../shared/data is absent) ----------------------------------------------------


def test_movielens_prepare_and_llamarec_split_counts(shared_data, tmp_path):
    from evaluation.movielens import prepare
    from retrieval.ingest import read_catalog, read_events

    prepared = prepare(shared_data, tmp_path)
    assert prepared.stats == {"movies": 9742, "movies_with_overview": 3537, "ratings": 100836}
    items = read_catalog(prepared.catalog, prepared.catalog_mapping)
    events = read_events(prepared.events, prepared.events_mapping)
    assert not items.rejects and not events.rejects
    assert len(items.records) == 9742 and len(events.records) == 100836
    by_id = {i.id: i for i in items.records}
    assert by_id["1"].title == "Toy Story" and by_id["1"].year == 1995 and "Animation" in by_id["1"].categories
    no_overview = [i for i in items.records if i.text.startswith("A ") and i.text.endswith(".") and len(i.text) < 80]
    assert no_overview and all(i.title for i in no_overview)
    split = leave_one_out(items.records, events.records, min_count=5)
    # LlamaRec reports 610 users and 3,650 items for ml-latest-small after its filtering.
    assert (split.counts["users"], split.counts["items"]) == (610, 3650)
    stage = split.stage("test")
    variant = scorers.Sequential(window=5, last=10, decay=0.8, backward=0.3, step_decay=1.0).fit(stage)
    ranks = metrics.target_ranks(variant.score(stage, range(stage.n_users)), stage.targets, stage.histories,
                                 protocols.tie_key(stage.n_items, 0))
    assert metrics.ndcg_at(ranks, 10).mean() > 0.05  # far above popularity (~0.02): the split is sane


# Conversational checks -------------------------------------------------------------------------


def card(item_id, categories=(), year=None):
    from assistant.events import Card

    return Card(item_id=item_id, title=item_id, score=1.0, year=year, categories=list(categories))


@pytest.mark.parametrize(
    "cards, expectation, failing",
    [
        ([card("a", ["Drama"], 1990)], {}, []),
        ([card("a", ["Horror"], 1990)], {"exclude_categories": {"Horror"}}, ["excluded category"]),
        ([card("a", ["Drama"], 1990), card("b", ["Drama"], 1985)], {"year_before": 1990}, ["older than asked"]),
        ([card("a", ["Drama"], None)], {"year_before": 1990}, ["older than asked"]),  # unknown year cannot be verified
        ([card("a"), card("b")], {"banned": {"b"}}, ["seen/disliked not shown"]),
        ([], {"banned": {"b"}}, ["non-empty answer"]),
    ],
)
def test_conversation_turn_checks(cards, expectation, failing):
    from evaluation.conversation import Expectation, check_turn

    checks = check_turn(cards, Expectation(**expectation))
    assert sorted(name for name, ok in checks.items() if not ok) == failing


def test_conversation_script_reads_the_last_answer():
    from evaluation.conversation import Expectation, dislike_second, exclude_genre, older, seen_first

    shown = [card("a", ["Horror", "Drama"], 2001), card("b", ["Horror"], 1995), card("c", ["Comedy"], 1980)]
    exp = Expectation()
    assert exclude_genre(shown, exp) == "No horror please" and exp.exclude_categories == {"Horror"}
    assert older(shown, exp) == "Older ones please" and exp.year_before == 1995
    seen_first(shown, exp)
    dislike_second(shown, exp)
    assert exp.banned == {"a", "b"}


def test_scripted_session_through_the_real_agent(demo_engine):
    from evaluation.conversation import SCRIPT, run_session

    turns = run_session(demo_engine.agent, "ana")
    assert [t["turn"] for t in turns] == list(range(len(SCRIPT)))
    assert turns[1]["message"].startswith("No ") and turns[1]["message"].endswith(" please")
    checked = [t for t in turns if "checks" in t]
    assert len(checked) == len(SCRIPT) - 1
    assert all(t["cards"] for t in turns)
    failures = [(t["message"], name) for t in checked for name, ok in t["checks"].items() if not ok]
    assert not failures


def test_recording_llm_replays_and_persists_answers(tmp_path):
    from assistant.llm.fake import FakeLLM
    from evaluation.llm_eval import RecordingLLM

    cache = tmp_path / "llm.jsonl"
    first = RecordingLLM(FakeLLM(["B A", "done"]), cache)
    assert first.label_logprobs("prompt", ["A", "B"]) == {"B": 0.0, "A": -1.0}
    assert first.label_logprobs("prompt", ["A", "B"]) == {"B": 0.0, "A": -1.0}  # replayed, not asked again
    assert "".join(first.stream("say", max_tokens=5)) == "done"
    assert [c["kind"] for c in first.calls] == ["label_logprobs", "stream"]
    # A new run with a model that knows nothing still gets the recorded answers.
    second = RecordingLLM(FakeLLM(default="other"), cache)
    assert second.label_logprobs("prompt", ["A", "B"]) == {"B": 0.0, "A": -1.0}
    assert "".join(second.stream("say", max_tokens=5)) == "done"
    assert second.reused == 2 and all(c["cached"] for c in second.calls)
    assert [c["kind"] for c in second.calls] == ["label_logprobs", "stream"]  # with their recorded cost
    assert second.replayed_ms == pytest.approx(sum(c["ms"] for c in first.calls))
    assert "".join(second.stream("say", max_tokens=6)) == "other"  # different arguments, new question


def test_user_samples_are_seeded_and_nested():
    from evaluation.runner import _sample

    rows = np.arange(610)
    small, large = _sample(rows, 50, seed=0, salt=2), _sample(rows, 200, seed=0, salt=2)
    assert len(small) == 50 and set(small) <= set(large)  # a bigger run reuses the smaller run's users
    assert _sample(rows, 50, seed=0, salt=2).tolist() == small.tolist()
    assert _sample(rows, 50, seed=1, salt=2).tolist() != small.tolist()
    assert _sample(rows, None, seed=0, salt=2) is rows


def test_the_llm_blend_needs_a_clear_validation_gain():
    """A blend chosen on noise is refused (0, retrieval alone); a consistent gain is kept."""
    import numpy as np

    from evaluation.llm_runner import guarded_blend

    rng = np.random.default_rng(0)
    alone = rng.integers(1, 40, size=200)
    noisy = np.where(rng.random(200) < 0.5, np.maximum(alone - 3, 1), alone + 3)  # as often worse as better
    better = np.maximum(alone - 3, 1)  # every user's item moves up
    ranks = {("a", "llm", 0.0): alone, ("a", "llm", 0.4): noisy, ("a", "llm", 0.6): better}
    assert guarded_blend(ranks, "a", "llm", 0.4, seed=0) == 0.0
    assert guarded_blend(ranks, "a", "llm", 0.6, seed=0) == 0.6
    assert guarded_blend(ranks, "a", "llm", 0.0, seed=0) == 0.0


def test_no_product_or_evaluation_module_imports_the_tests():
    """Tests may import the evaluation and the product, never the other way round."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    offenders = []
    for package in ("assistant", "retrieval", "evaluation", "prompts", "ui", "integrations"):
        for path in sorted((repo / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(repo)}:{node.lineno} imports {n}" for n in names
                              if n == "tests" or n.startswith("tests.")]
    assert offenders == []


def test_stage_engine_writes_through_the_product_write_path(tmp_path):
    """The evaluation's stage store holds the catalog embedded and marked, and the stage's history only."""
    from types import SimpleNamespace

    from evaluation.product import stage_engine
    from retrieval.embeddings import HashingEmbedder

    events = [ev(u, str(i), 10 * n + i) for n, u in enumerate("abc") for i in range(5)]
    split = leave_one_out(catalog(*map(str, range(7))), events)
    cfg = SimpleNamespace(work_dir=tmp_path, backend="fake", embedding="hash", prompt_variant="")
    engine = stage_engine(cfg, split, "valid", HashingEmbedder())
    try:
        assert engine.store.items_needing_embedding() == []
        assert engine.retriever.content.count() == 7
        assert engine.store.event_count() == 3 * 3  # training only: neither held-out item of any user
    finally:
        engine.close()
