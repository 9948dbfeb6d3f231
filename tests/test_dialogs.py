"""The dialog protocol: reading ReDial and INSPIRED, dedup cases, the tune/report split, metrics, one run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from core.errors import ConfigError
from evaluation import bootstrap
from evaluation.dialog_data import TitleLinker, normalise, title_keys
from evaluation.dialog_eval import DialogConfig, baseline_ranks, list_rank, mention_counts, run_dialogs, summarize
from evaluation.dialogs import Case, Dialog, Message, dialog_cases, read_inspired, read_redial, seeker_turns, split_by_hash
from tests.conftest import SHARED_DATA

INF = math.inf
SEEKER, RECOMMENDER = 1, 2


def redial_line(conversation_id: str, messages: list[tuple[int, str]], mentions: dict[str, str], liked: dict[str, int] | None = None) -> str:
    return json.dumps({
        "conversationId": conversation_id,
        "initiatorWorkerId": SEEKER,
        "respondentWorkerId": RECOMMENDER,
        "movieMentions": mentions,
        "messages": [{"text": text, "senderWorkerId": who, "timeOffset": i, "messageId": i} for i, (who, text) in enumerate(messages)],
        "initiatorQuestions": {m: {"suggested": 0, "seen": 1, "liked": v} for m, v in (liked or {}).items()},
        "respondentQuestions": {},
    })


def dialog(*messages: tuple[str, str, tuple[str, ...]], dialog_id: str = "d1") -> Dialog:
    return Dialog(dialog_id, [Message(role, text, movies) for role, text, movies in messages])


# Reading ----------------------------------------------------------------------------------------


def test_redial_ids_become_names_and_roles_and_verdicts_are_read(tmp_path):
    path = tmp_path / "dialogs.jsonl"
    path.write_text(redial_line("7", [(SEEKER, "I loved @1 and @2"), (RECOMMENDER, "Try @3!")],
                                {"1": "The Matrix (1999)", "2": "Alien  (1979)"}, liked={"1": 1, "2": 0, "3": 2}) + "\n",
                    encoding="utf-8")
    [got] = read_redial(path, names={"3": "Heat (1995)"})
    assert got.id == "7"
    assert got.messages == [
        Message("seeker", "I loved The Matrix (1999) and Alien (1979)", ("1", "2")),
        Message("recommender", "Try Heat (1995)!", ("3",)),  # a name missing from the dialog comes from the movie list
    ]
    assert got.verdicts == {"1": "like", "2": "dislike"}  # 2 = "did not say"
    assert got.mentioned() == ["1", "2", "3"]


def test_a_line_that_is_not_a_redial_dialog_names_file_and_line(tmp_path):
    path = tmp_path / "dialogs.jsonl"
    path.write_text(redial_line("1", [(SEEKER, "hi")], {}) + "\n" + json.dumps({"messages": []}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dialogs.jsonl:2: not a ReDial dialog"):
        read_redial(path)


def test_inspired_rows_become_ordered_dialogs_with_linked_titles(tmp_path):
    path = tmp_path / "test.tsv"
    header = ["dialog_id", "utt_id", "speaker", "turn_id", "text", "movies"]
    rows = [
        ["a", "2", "RECOMMENDER", "1", "Have you seen Heat?", "Heat (1995)"],
        ["a", "1", "SEEKER", "1", "I like QUOTATION_MARKheistQUOTATION_MARK films like Ronin", "Ronin (1998); Future (2011)"],
        ["b", "1", "SEEKER", "1", "hello", ""],
    ]
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    catalog = {"Heat (1995)": "10", "Ronin (1998)": "11"}
    dialogs, linked = read_inspired(path, catalog.get)
    assert [d.id for d in dialogs] == ["a", "b"]
    assert dialogs[0].messages == [
        Message("seeker", 'I like "heist" films like Ronin', ("11",)),  # Future (2011) is not in the catalog: dropped
        Message("recommender", "Have you seen Heat?", ("10",)),
    ]
    assert linked == {"linked": 2, "not linked": 1}


@pytest.mark.parametrize(
    "a, b",
    [
        ("Matrix, The (1999)", "The Matrix (1999)"),
        ("Police Academy  (1984)", "police academy (1984)"),
        ("Amélie (2001)", "Amelie (2001)"),
        ("Fast & Furious (2009)", "Fast and Furious (2009)"),
    ],
)
def test_titles_link_by_normalised_title_and_year(a, b):
    assert title_keys(a) == title_keys(b)


def test_alternative_titles_link_and_a_year_is_required():
    assert title_keys("Seven (a.k.a. Se7en) (1995)") == [("seven", 1995), ("se7en", 1995)]
    link = TitleLinker({"1": "Se7en (1995)", "2": "Seven (1979)", "3": "Alien", "4": "Se7en  (1995)"})
    assert link.all("Seven (a.k.a. Se7en) (1995)") == ["1", "4"]  # both twins of a duplicate entry
    assert link("Alien") is None  # no year, no link
    assert normalise("The Thing") == normalise("Thing") == "thing"


# Cases ------------------------------------------------------------------------------------------


def test_each_new_movie_the_recommender_names_is_one_case():
    d = dialog(
        ("recommender", "Hi! Seen Jaws?", ("J",)),  # nothing said by the seeker yet: not a case
        ("seeker", "Hello.", ()),
        ("seeker", "I love Alien", ("A",)),
        ("recommender", "Then Aliens or Alien again", ("B", "A")),  # A was mentioned: only B is a case
        ("recommender", "Or Jaws, or Heat", ("J", "H")),  # J was mentioned in the first message
        ("seeker", "Seen Heat", ("H",)),
        ("recommender", "Ronin!", ("R",)),
    )
    cases, skipped = dialog_cases(d)
    assert [(c.target, c.message, sorted(c.mentioned), c.seeker_turns) for c in cases] == [
        ("B", 3, ["A", "J"], ("Hello. I love Alien",)),  # consecutive seeker messages are one turn
        ("H", 4, ["A", "B", "J"], ("Hello. I love Alien",)),
        ("R", 6, ["A", "B", "H", "J"], ("Hello. I love Alien", "Seen Heat")),
    ]
    assert skipped == {"no seeker words before it": 1}
    assert seeker_turns(d) == [(2, "Hello. I love Alien"), (5, "Seen Heat")]


def test_the_dialog_before_a_case_becomes_prior_turns_and_the_seekers_last_turn():
    from evaluation.dialog_play import dialog_before

    d = dialog(
        ("recommender", "Hi! Seen Jaws?", ("J",)),
        ("seeker", "Hello.", ()),
        ("seeker", "I love Alien", ("A",)),
        ("recommender", "Then Aliens", ("B",)),
        ("seeker", "Seen it, hated it", ()),
        ("recommender", "Hmm, let me think.", ()),
        ("recommender", "Ronin!", ("R",)),
    )
    prior, message = dialog_before(d, 6)  # the case is the recommender naming Ronin
    assert prior == [
        {"role": "assistant", "content": "Hi! Seen Jaws?"},
        {"role": "user", "content": "Hello. I love Alien"},  # one side's consecutive messages are one turn
        {"role": "assistant", "content": "Then Aliens"},  # its named title becomes the assistant's suggestion
    ]
    assert message == "Seen it, hated it"  # the recommender's "let me think" after it is not the seeker's to answer


def test_targets_outside_the_catalog_are_not_cases():
    d = dialog(("seeker", "anything?", ()), ("recommender", "X or Y", ("X", "Y")))
    cases, skipped = dialog_cases(d, {"Y"})
    assert [c.target for c in cases] == ["Y"]
    assert skipped == {"target not in the catalog": 1}


def test_one_message_keeps_the_latest_turns_that_fit():
    case = Case("d", 3, "T", ("first turn", "second", "third"), frozenset())
    assert case.one_message() == "first turn\nsecond\nthird"
    assert case.one_message(limit=14) == "second\nthird"
    assert case.one_message(limit=3) == "ird"  # one long turn: its end


def test_the_split_is_deterministic_and_disjoint():
    dialogs = [Dialog(str(20000 + i), []) for i in range(400)]
    tune, report = split_by_hash(dialogs)
    again_tune, again_report = split_by_hash(list(reversed(dialogs)))
    assert {d.id for d in tune} == {d.id for d in again_tune} and {d.id for d in report} == {d.id for d in again_report}
    assert not {d.id for d in tune} & {d.id for d in report}
    assert len(tune) + len(report) == 400 and 150 < len(report) < 250


# Metrics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids, mentioned, depth, expected",
    [
        (["a", "T", "b"], set(), 50, 2),
        (["a", "T", "b"], {"a"}, 50, 1),  # a mentioned movie is removed from the list
        (["a", "b", "T"], set(), 2, INF),  # below the depth
        (["a", "a", "T"], set(), 2, 2),  # a repeated id counts once
        ([], set(), 50, INF),  # an answer without a list
    ],
)
def test_rank_in_the_agents_list(ids, mentioned, depth, expected):
    assert list_rank(ids, Case("d", 1, "T", ("hi",), frozenset(mentioned)), depth) == expected


def test_popularity_ranks_exclude_mentioned_movies_and_stop_at_the_depth():
    index = {"a": 0, "b": 1, "c": 2, "d": 3}
    tune = [dialog(("seeker", "", ("a", "b"))), dialog(("seeker", "", ("a", "c", "a")))]
    counts = mention_counts(tune, index)
    assert counts.tolist() == [2, 1, 1, 0]  # once per dialog
    cases = [Case("x", 1, "b", ("hi",), frozenset()), Case("y", 1, "b", ("hi",), frozenset({"a"})),
             Case("z", 1, "d", ("hi",), frozenset())]
    cfg = DialogConfig(source="redial", out=None, work_dir=None, depth=3)
    ranks, _ = baseline_ranks(lambda rows: np.tile(counts, (len(rows), 1)), cases, index, cfg)
    assert ranks[1] == 1 and ranks[0] in (2, 3) and ranks[2] == INF  # d would be 4th: beyond depth 3


def test_metrics_of_a_known_run_with_intervals_over_dialogs():
    ranks = np.array([1, 5, INF, 15, 40, INF])
    groups = np.array(["d1", "d1", "d2", "d3", "d3", "d3"])
    got = summarize(ranks, groups, seed=0)
    assert got["cases"] == 6 and got["dialogs"] == 3
    assert got["Recall@1"]["mean"] == pytest.approx(1 / 6, abs=1e-6)
    assert got["Recall@10"]["mean"] == pytest.approx(2 / 6, abs=1e-6)
    assert got["Recall@20"]["mean"] == pytest.approx(3 / 6, abs=1e-6)
    assert got["Recall@50"]["mean"] == pytest.approx(4 / 6, abs=1e-6)
    assert got["NDCG@10"]["mean"] == pytest.approx((1 + 1 / math.log2(6)) / 6, abs=1e-6)
    assert got["MRR"]["mean"] == pytest.approx((1 + 1 / 5 + 1 / 15 + 1 / 40) / 6, abs=1e-6)
    assert got["Recall@10"]["low"] <= got["Recall@10"]["mean"] <= got["Recall@10"]["high"]


def test_grouped_interval_resamples_whole_dialogs():
    # Every dialog has the same mean: resampling dialogs cannot move it, resampling cases would.
    values = np.array([1, 0, 1, 0, 1, 0], dtype=float)
    groups = np.array([1, 1, 2, 2, 3, 3])
    got = bootstrap.grouped_interval(values, groups, seed=0)
    assert (got.mean, got.low, got.high, got.n) == (0.5, 0.5, 0.5, 6)
    spread = bootstrap.confidence_interval(values, seed=0)
    assert spread.low < 0.5 < spread.high


# A whole run on a tiny synthetic data folder -----------------------------------------------------


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def tiny_data(tmp_path):
    """Six movies, MovieLens ratings for two of them, TMDB text for one, and ReDial-format dialogs."""
    root = tmp_path / "data"
    movies = {"1": "The Matrix (1999)", "2": "Alien (1979)", "3": "Heat (1995)", "4": "Ronin (1998)",
              "5": "Jaws (1975)", "6": "Up (2009)"}
    write_csv(root / "redial-dev" / "movies_with_mentions.csv", ["movieId", "movieName", "nbMentions"],
              [[k, v, 1] for k, v in movies.items()])
    write_csv(root / "movielens-small" / "movies.csv", ["movieId", "title", "genres"],
              [["101", "Matrix, The (1999)", "Action|Sci-Fi"], ["102", "Heat (1995)", "Crime"]])
    write_csv(root / "movielens-small" / "links.csv", ["movieId", "imdbId", "tmdbId"], [["101", "1", "603"], ["102", "2", "949"]])
    write_csv(root / "movielens-small" / "tags.csv", ["userId", "movieId", "tag", "timestamp"], [["1", "102", "heist", "1"]])
    write_csv(root / "movielens-small" / "ratings.csv", ["userId", "movieId", "rating", "timestamp"],
              [["1", "101", "5", "10"], ["1", "102", "4", "20"], ["2", "102", "3", "30"]])
    write_csv(root / "tmdb-5000" / "tmdb_5000_movies.csv", ["id", "title", "overview", "genres", "keywords", "release_date"],
              [["603", "The Matrix", "A hacker learns the truth about reality.", json.dumps([{"name": "Science Fiction"}]),
                json.dumps([{"name": "simulation"}]), "1999-03-30"]])
    lines = []
    for i in range(40):  # about half land in each split
        lines.append(redial_line(str(30000 + i), [
            (SEEKER, "I want something like @1"), (RECOMMENDER, "Try @3"), (SEEKER, "Seen it, and @2"), (RECOMMENDER, "@4 or @5")],
            {k: movies[k] for k in "12345"}, liked={"1": 1}))
    (root / "redial-dev" / "dialogs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_a_tiny_run_through_the_agent_writes_the_report(tiny_data, tmp_path):
    out = tmp_path / "report"
    cfg = DialogConfig(source="redial", out=out, work_dir=tmp_path / "work", data_root=tiny_data, embedding="hash",
                       progress=False, command="recassist eval --dialogs redial")
    results = run_dialogs(cfg)
    report_dialogs = results["cases"]["dialogs_with_cases"]
    assert results["cases"]["cases"] == 3 * report_dialogs  # 3 (Heat) then 4 and 5
    assert set(results["metrics"]) == {"popularity", "content", "agent (one message)", "agent (replay)",
                                       "agent (dialog as prior turns)"}
    # Every tuning dialog mentioned 1-5 and none mentioned Up (6): a target is never below Up.
    assert results["metrics"]["popularity"]["Recall@50"]["mean"] == 1.0
    column = results["per_case_columns"].index("rank: popularity")
    assert all(row[column] <= 4 for row in results["per_case"])
    agent = results["agent"]["agent (replay)"]
    assert agent["turns"] == 2 * report_dialogs  # two seeker turns per dialog
    assert results["agent"]["agent (dialog as prior turns)"]["turns"] == 2 * report_dialogs  # one call per case message
    assert results["latency_ms"]["agent (one message)"]["p50"] > 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "recassist eval --dialogs redial" in md and "Reported on the report split" in md
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["meta"]["llm"].startswith("none") and saved["per_case"] == results["per_case"]
    catalog = (tmp_path / "work" / "dialogs" / "redial_catalog.csv").read_text(encoding="utf-8")
    assert "A hacker learns the truth about reality." in catalog and "heist" in catalog
    events = (tmp_path / "work" / "dialogs" / "events-redial.csv").read_text(encoding="utf-8")
    assert "ml-1,1,rate,5" in events and ",like," in events  # ratings linked by title + year; the seeker's verdict


def test_the_configured_llm_is_the_one_the_agent_uses(tiny_data, tmp_path):
    from assistant.llm.fake import FakeLLM

    fake = FakeLLM(prompt_style="chat")  # a chat model reads every message (the understanding stage)
    cfg = DialogConfig(source="redial", out=tmp_path / "report", work_dir=tmp_path / "work", data_root=tiny_data, embedding="hash",
                       llm="configured", llm_instance=fake, modes=("one",), limit_dialogs=2, progress=False)
    results = run_dialogs(cfg)
    assert results["meta"]["llm"] == "fake fake-model"
    assert fake.prompts  # the agent's LLM stages ran on the case messages
    assert set(results["metrics"]) == {"popularity", "content", "agent (one message)"}


# Real data --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_handful_of_real_redial_dialogs(tmp_path):
    if not (SHARED_DATA / "redial-dev" / "dialogs.jsonl").is_file():
        pytest.skip(f"ReDial data not found at {SHARED_DATA / 'redial-dev'} (set RECASSIST_SHARED_DATA to the shared data folder)")
    cfg = DialogConfig(source="redial", out=tmp_path / "report", work_dir=tmp_path / "work", data_root=SHARED_DATA,
                       embedding="hash", limit_dialogs=4, progress=False)
    results = run_dialogs(cfg)
    assert results["cases"]["cases"] > 0
    assert results["meta"]["reported_on"].startswith("the report split: 4 dialogs")
    assert results["metrics"]["agent (replay)"]["cases"] == results["cases"]["cases"]
    assert "6924" in results["meta"]["data"] or "'movies': 6924" in results["meta"]["data"]
    assert results["metrics"]["agent (dialog as prior turns)"]["cases"] == results["cases"]["cases"]
