"""The whole conversation is evidence: named titles (with verdicts), co-mention neighbours, twins,
and the earlier turns a client sends (POST /v1/chat `history`, the OpenAI facade's messages)."""

from __future__ import annotations

import pytest

from assistant.engine import Engine
from assistant.events import MessageEvent, CardsEvent
from assistant.settings import Settings
from retrieval.records import Item

FILMS = [
    ("alien", "Alien", 1979, "Science Fiction|Horror", "A crew in space meets a deadly creature."),
    ("aliens", "Aliens", 1986, "Science Fiction|Action", "Marines return to the creature's planet."),
    ("predator", "Predator", 1987, "Science Fiction|Action", "Soldiers in a jungle are hunted."),
    ("annie", "Annie", 1982, "Musical|Family", "An orphan girl sings her way into a new home."),
    ("grease", "Grease", 1978, "Musical|Romance", "High school sweethearts sing through a summer."),
    ("xmen", "X-Men", None, "Action", "Mutants with powers fight for acceptance."),
    ("xmen00", "X-Men", 2000, "Action", "Mutants with powers fight for acceptance."),
    ("logan", "Logan", 2017, "Action|Drama", "An old mutant protects a girl."),
] + [(f"pop{n}", f"Blockbuster Number {n}", 2015, "Comedy", "A crowd pleaser everyone has seen.") for n in range(12)]

# Conversations on the platform: who named what together. Blockbusters are named most often alone.
TALKS = [["alien", "aliens", "predator"], ["alien", "aliens"], ["alien", "predator"], ["annie", "grease"],
         ["annie", "grease"], ["xmen00", "logan"], ["xmen", "logan"]] + [[f"pop{n % 12}"] for n in range(60)]


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Engine:
    settings = Settings.load(env={}, data_dir=tmp_path_factory.mktemp("films"), llm_backend="none", embedding_backend="hash")
    engine = Engine(settings)
    engine.upsert_items([{"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d} for i, t, y, c, d in FILMS])
    engine.add_events([{"user_id": f"talk{n}", "item_id": item, "type": "like", "timestamp": 1_600_000_000 + n * 60 + k}
                       for n, talk in enumerate(TALKS) for k, item in enumerate(talk)])
    engine.retriever.refit(engine.store)
    yield engine
    engine.close()


def ids(engine, user, message, **kw):
    events = list(engine.agent.respond(user, message, k=5, **kw))
    ranked = [e for e in events if isinstance(e, CardsEvent) and e.stage == "ranked"]
    return [c.item_id for c in ranked[-1].cards] if ranked else []


def test_named_titles_bring_their_co_mention_neighbours(films):
    got = ids(films, "u1", "I loved Alien (1979), anything else?")
    assert set(got[:2]) == {"aliens", "predator"}
    assert "alien" not in got


def test_a_title_said_no_to_is_no_seed(films):
    got = ids(films, "u2", "I saw Annie (1982) but it was meh. I really liked Alien (1979) though")
    assert "annie" not in got and got[0] in {"aliens", "predator"}
    assert got.index("grease") > 1 if "grease" in got else True


def test_one_work_under_two_ids_is_never_shown_nor_shown_twice(films):
    got = ids(films, "u3", "something like X-Men (2000)")
    assert "xmen" not in got and "xmen00" not in got and got[0] == "logan"
    listed = ids(films, "u4", "mutants with powers")
    assert not {"xmen", "xmen00"} <= set(listed)  # the same film once, whichever id


def test_earlier_turns_in_the_session_still_count(films):
    first = list(films.agent.respond("u5", "I loved Alien (1979)", k=5))
    session = first[-1].session_id
    got = ids(films, "u5", "what else could I watch?", session_id=session)
    assert got[0] in {"aliens", "predator"} and "alien" not in got


@pytest.mark.parametrize("others", ["something else please", "换一批"])
def test_a_reaction_keeps_what_still_fits_and_only_asking_for_others_leaves_the_list_out(films, others):
    user = f"u-others-{len(others)}"
    first = list(films.agent.respond(user, "I loved Alien (1979)", k=5))
    session = first[-1].session_id
    shown = [c.item_id for c in [e for e in first if isinstance(e, CardsEvent) and e.stage == "ranked"][-1].cards]
    after_seen = ids(films, user, "I've seen the second one", session_id=session)
    assert shown[1] not in after_seen  # said seen
    assert shown[0] == after_seen[0]  # still the best answer: not dropped for having been shown
    fresh = ids(films, user, others, session_id=session)
    assert fresh and not set(fresh) & set(shown + after_seen)


def test_prior_turns_start_a_session_and_suggestions_turned_down_count_against(films):
    prior = [{"role": "user", "content": "I only watch films like Alien (1979)"},
             {"role": "assistant", "content": "Have you seen Predator (1987)?"},
             {"role": "user", "content": "not for me, I hated it"}]
    got = ids(films, "u6", "anything good?", prior=prior)
    assert got[0] == "aliens" and "predator" not in got and "alien" not in got
    without = ids(films, "u7", "anything good?")
    assert without[0].startswith("pop")  # without the history: what is popular


fastapi = pytest.importorskip("fastapi")


def test_http_chat_history_and_openai_facade_read_the_conversation(films):
    from fastapi.testclient import TestClient

    from server.app import create_app

    with TestClient(create_app(films, mount_ui=False), raise_server_exceptions=False) as client:
        history = [{"role": "user", "content": "I only watch films like Alien (1979)"}, {"role": "assistant", "content": "Got it"}]
        r = client.post("/v1/chat", json={"user_id": "h1", "message": "anything good?", "history": history})
        assert r.status_code == 200, r.text
        assert r.json()["items"][0]["item_id"] in {"aliens", "predator"}
        messages = history + [{"role": "user", "content": "anything good?"}]
        r = client.post("/v1/chat/completions", json={"user": "h2", "messages": messages})
        assert r.status_code == 200, r.text
        assert r.json()["recassist"]["items"][0]["item_id"] in {"aliens", "predator"}
        bad = client.post("/v1/chat", json={"user_id": "h3", "message": "hi", "history": [{"role": "robot", "content": "x"}]})
        assert bad.status_code == 422 and "role" in bad.text


def _dialog(conv, seeker_says, recommender_says, mentions, liked=None):
    messages = [{"text": seeker_says, "senderWorkerId": 1, "messageId": 1, "timeOffset": 0},
                {"text": recommender_says, "senderWorkerId": 2, "messageId": 2, "timeOffset": 5}]
    questions = {m: {"suggested": 0, "seen": 2, "liked": (liked or {}).get(m, 2)} for m in mentions}
    return {"conversationId": conv, "messages": messages, "initiatorWorkerId": 1, "respondentWorkerId": 2,
            "movieMentions": mentions, "initiatorQuestions": questions}


def test_a_dialog_log_loads_as_behaviour_once_with_bad_lines_named(make_engine, tmp_path):
    import json

    engine = make_engine(demo=False, llm_backend="none")
    engine.upsert_items([{"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d} for i, t, y, c, d in FILMS])
    log = tmp_path / "dialogs.jsonl"
    lines = [
        json.dumps(_dialog("d1", "I loved @annie", "Then try @grease", {"annie": "Annie (1982)", "grease": "Grease (1978)"},
                           liked={"annie": 1})),
        "{not json",
        # An id the catalog does not use: linked by its title and year.
        json.dumps(_dialog("d2", "Loved @111", "Try @grease and @999", {"111": "Annie (1982)", "grease": "Grease (1978)",
                                                                        "999": "Unknown Film (1950)"})),
        json.dumps({"conversationId": "d3"}),
    ]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = engine.ingest_dialogs_file(log)
    # Each seeker message is a search with its words (works by name), just before the works named after it.
    assert report["dialogs"] == 2 and report["by_type"] == {"like": 1, "mention": 3, "search": 2}
    assert report["linked_by_title"] == 1 and report["works_not_in_catalog"] == 1
    assert [r.split(": ", 1)[0] for r in report["rejected"]] == [f"{log}:2", f"{log}:4"]
    assert "conversationId, messages" in report["rejected"][1]
    events = engine.store.events_for_user("dialog:d1")
    assert [(e.type, e.item_id, e.text) for e in events] == [
        ("search", None, "I loved Annie (1982)"), ("like", "annie", "dialog d1"), ("mention", "grease", "dialog d1")]
    again = engine.ingest_dialogs_file(log)
    assert again["stored"] == 0  # the same file twice stores nothing twice
    assert ids(engine, "fan", "I loved Annie (1982)")[0] == "grease"  # learnt from the loaded conversations
    engine.agent.delete_user("dialog:d1")
    assert engine.store.events_for_user("dialog:d1") == []


def test_what_a_user_says_in_chat_becomes_traceable_events(films):
    events = list(films.agent.respond("talker", "I loved Alien (1979) but Annie (1982) was awful"))
    session = events[-1].session_id
    stored = {(e.item_id, e.type, e.text) for e in films.store.events_for_user("talker")}
    assert stored == {("alien", "like", f"chat {session}"), ("annie", "dislike", f"chat {session}"),
                      (None, "search", "I loved Alien (1979) but Annie (1982) was awful")}
    films.agent.delete_user("talker")
    assert films.store.events_for_user("talker") == []


def test_ingest_dialogs_from_the_command_line(cli_env, capsys, tmp_path):
    import json

    from server.cli import main

    catalog = tmp_path / "films.jsonl"
    catalog.write_text("\n".join(json.dumps({"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d})
                                 for i, t, y, c, d in FILMS), encoding="utf-8")
    assert main(["ingest-catalog", str(catalog), "--quiet"]) == 0
    log = tmp_path / "chats.jsonl"
    log.write_text(json.dumps(_dialog("c1", "I loved @alien", "Try @aliens", {"alien": "Alien (1979)", "aliens": "Aliens (1986)"},
                                      liked={"alien": 1})) + "\nnot a dialog\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["ingest-dialogs", str(log)]) == 2  # one line rejected, the good one landed
    out = capsys.readouterr().out
    assert "1 dialogs -> 3 events (3 new)" in out and f"{log}:2: not JSON" in out
    assert main(["ingest-dialogs", str(tmp_path / "missing.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_vague_turn_is_about_the_taste_said_before(demo_engine):
    from fastapi.testclient import TestClient

    from server.app import create_app

    gothic = [{"role": "user", "content": "I only read gothic horror: ghosts, vampires, haunted houses"},
              {"role": "assistant", "content": "Got it"}]
    with TestClient(create_app(demo_engine, mount_ui=False), raise_server_exceptions=False) as client:
        def titles(user, messages):
            r = client.post("/v1/chat/completions", json={"user": user, "messages": messages})
            assert r.status_code == 200, r.text
            return [demo_engine.store.get_item(i["item_id"]) for i in r.json()["recassist"]["items"]]

        ask = [{"role": "user", "content": "What should I read tonight?"}]
        with_history, without = titles("g1", gothic + ask), titles("g2", ask)
    assert [i.id for i in with_history] != [i.id for i in without]
    gothic_or_horror = [i for i in with_history if {"Gothic", "Horror"} & set(i.categories)]
    assert len(gothic_or_horror) >= 3, [(i.title, i.categories) for i in with_history]


def test_a_greeting_or_a_question_about_a_card_is_no_taste_for_later_turns(demo_engine):
    """"hello 👋", "tell me about the third one", "I loved the first one": the last turn's list is
    not searched with "hello" or "third" (it listed books with "Three" in the title)."""
    session, requests = None, []
    for message in ["a witty romance", "tell me about the third one", "hello 👋", "I loved the first one ❤️"]:
        events = list(demo_engine.agent.respond("taste1", message, session_id=session))
        done = events[-1]
        session = done.session_id
        requests.append(done.request)
    assert requests[1] == requests[2] == {}  # a question about a card and a greeting retrieve nothing
    assert requests[-1]["topic"] == "witty romance"  # the taste said before, once; no "hello", no "third"


def test_a_kind_asked_for_once_is_preferred_not_enforced_after_a_new_request(demo_engine):
    """"something funny" filters; "anything else you can think of?" still prefers Comedy but no
    longer filters by it (a ReDial seeker's "funny what else?" hid every later non-comedy)."""
    session, requests = None, []
    for message in ["something funny", "anything else you can think of?"]:
        events = list(demo_engine.agent.respond("kind1", message, session_id=session))
        session = events[-1].session_id
        requests.append(events[-1].request)
    assert requests[0]["categories"] == ["Comedy"]
    assert requests[1]["categories"] == [] and "Comedy" in requests[1]["prefer_categories"]


def _signals(engine, user, message, **kw) -> dict[str, list[str]]:
    events = list(engine.agent.respond(user, message, k=5, **kw))
    ranked = [e for e in events if isinstance(e, CardsEvent) and e.stage == "ranked"]
    return {c.item_id: sorted(c.evidence.get("signals", {})) for c in ranked[-1].cards} if ranked else {}


def test_what_people_asked_in_chat_and_then_had_answers_the_next_person(make_engine):
    engine = make_engine(demo=False, llm_backend="none")
    engine.upsert_items([{"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d} for i, t, y, c, d in FILMS])
    for n in range(4):  # the words say nothing of Grease's text; what these people did says it
        events = list(engine.agent.respond(f"party{n}", "ideas for my niece's birthday sleepover", k=5))
        engine.agent.feedback(f"party{n}", "grease", "like", source=f"chat {events[-1].session_id}")
    searches = [e for n in range(4) for e in engine.store.events_for_user(f"party{n}") if e.type == "search"]
    assert [e.text for e in searches] == ["ideas for my niece's birthday sleepover"] * 4
    before = _signals(engine, "next", "a film for a birthday sleepover")
    assert "asked" not in before.get("grease", [])  # nothing fitted yet (hashed words match no film's text)
    engine.retriever.refit(engine.store)  # the fitting job, as serve schedules it after new events
    after = _signals(engine, "next2", "a film for a birthday sleepover")
    assert list(after)[0] == "grease" and "asked" in after["grease"]


@pytest.mark.parametrize("message, kw, settings", [
    ("ideas for a birthday sleepover", {"persist": False}, {}),  # the prompt lab's dry run
    ("ideas for a birthday sleepover", {}, {"learn_from_requests": False}),
    ("more like the first one", {}, {}),  # no content words: nothing to learn from
    ("hello", {}, {}),  # small talk
])
def test_requests_that_teach_nothing_or_are_not_to_be_kept_leave_no_search(make_engine, message, kw, settings):
    engine = make_engine(demo=False, llm_backend="none", **settings)
    engine.upsert_items([{"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d} for i, t, y, c, d in FILMS])
    list(engine.agent.respond("quiet", message, k=5, **kw))
    assert [e for e in engine.store.events_for_user("quiet") if e.type == "search"] == []


def test_a_profile_shows_the_newest_requests_once(make_engine):
    engine = make_engine(demo=False, llm_backend="none")
    engine.upsert_items([{"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d} for i, t, y, c, d in FILMS])
    for message in ["films about mutants", "a space crew meets a creature", "an orphan who sings"]:
        list(engine.agent.respond("asker", message, k=3))
    profile = engine.agent.get_profile("asker")
    assert profile["recent_searches"] == ["films about mutants", "a space crew meets a creature", "an orphan who sings"]
    assert profile["onboarding"] == ["mutants"] and 'Looked for "an orphan who sings"' in profile["summary"]


def test_an_era_said_once_is_preferred_for_the_rest_of_the_conversation(demo_engine):
    """"I like old books": the catalog's oldest quarter is preferred, in this turn and the next
    ("anything else?"); a decade said later filters instead."""
    session, requests = None, []
    for message in ["I like old books", "anything else?", "something from the 1890s"]:
        events = list(demo_engine.agent.respond("era1", message, session_id=session))
        session = events[-1].session_id
        requests.append(events[-1].request)
    low, high = requests[0]["prefer_years"]
    assert low is None and high is not None
    years = [item.year for item in demo_engine.store.iter_items() if item.year is not None]
    assert len(years) // 4 <= sum(y <= high for y in years) < len(years) // 2  # the oldest quarter of the catalog
    assert tuple(requests[1]["prefer_years"]) == (low, high)  # said once, still wanted
    assert requests[2]["prefer_years"] is None and requests[2]["year_min"] == 1890


def test_what_an_era_means_depends_on_the_catalog():
    from assistant.vocabulary import CatalogVocabulary

    films = CatalogVocabulary([Item(id=f"f{y}", title=f"Film {y}", year=y) for y in range(1960, 2020)])
    news = CatalogVocabulary([Item(id=f"n{d}", title=f"Story {d}", year=2020 + d // 100) for d in range(500)])
    assert films.era_years("old") == (None, 1974) and films.era_years("new") == (2013, None)
    assert news.era_years("old") == (None, 2021) and news.era_years("new") == (2024, None)
    assert films.era_years("") is None and CatalogVocabulary([]).era_years("old") is None


def test_thanks_keeps_the_list_and_request_words_are_said_once(demo_engine):
    """"Thanks, I'll check it out" answers in words (the list in view stays, no new search with
    "check"); a refinement of a refinement carries the first request's words once, not once per turn."""
    session, requests, texts = None, [], []
    for message in ["a witty romance", "thanks, I'll check it out", "I liked the first one", "shorter", "and older"]:
        events = list(demo_engine.agent.respond("once1", message, session_id=session))
        session = events[-1].session_id
        requests.append(events[-1].request)
        texts.append(" ".join(e.text for e in events if isinstance(e, MessageEvent)))
    assert requests[1] == {} and texts[1].startswith("Glad to help")
    for request in requests[2:]:
        words = request.get("topic", "").split()
        assert words and len(words) == len(set(words)), request.get("topic")


def test_a_long_dialog_file_makes_no_recency_of_its_line_order(tmp_path):
    """The file dates no dialog: a film named only on its first line trends as one named only on its last."""
    import json

    from retrieval.comention import CoMentionModel
    from retrieval.dialog_log import load_redial
    from retrieval.titles import TitleIndex

    log = tmp_path / "many.jsonl"
    n = 5000
    mentions = ["first"] + ["filler"] * (n - 2) + ["last"]
    log.write_text("".join(json.dumps(_dialog(f"d{i}", "Any ideas?", f"Try @{m}", {m: m.title()})) + "\n"
                           for i, m in enumerate(mentions)), encoding="utf-8")
    loaded = load_redial(log, {"first", "filler", "last"}, TitleIndex(), base_time=1_700_000_000.0)
    assert loaded.dialogs == n and not loaded.rejects
    trending = CoMentionModel(half_life_days=180.0).fit(loaded.events).trending(3)
    assert set(trending) == {"first", "filler", "last"}
    assert trending["first"] == pytest.approx(trending["last"], rel=0.01)  # an hour a line apart: 0.37 against 0.69
