"""What people who asked in similar words went on to have (retrieval.asked): words, moments, scores,
the fitting job and publishing, and the whole path from a loaded dialog log to a chat answer."""

from __future__ import annotations

import json

import pytest

from retrieval.asked import AskedModel, group_by_user, moments, terms
from retrieval.records import Event


def test_terms_are_content_words_and_chinese_character_pairs():
    assert terms("Any scary movies with ghosts? The ghosts!") == ["scary", "ghost"]
    assert terms("我想看恐怖片") == ["我想", "想看", "看恐", "恐怖", "怖片"]
    assert terms("推荐 sci-fi 电影") == ["推荐", "sci", "电影"]
    assert terms("好 1999") == ["好"]  # a lone character counts; a bare number does not


def _log():
    return [
        Event("a", "search", 1, text="something scary with ghosts"),
        Event("a", "view", 2, item_id="haunting"),
        Event("a", "dislike", 3, item_id="musical"),  # not a label: a "no"
        Event("a", "search", 4, text="and a vampire one"),
        Event("a", "like", 5, item_id="dracula"),
        Event("a", "like", 6, item_id="haunting"),  # had before: counted once
        Event("b", "view", 1, item_id="annie"),  # before anything was said: no moment
        Event("b", "search", 2, text="a musical for kids"),
        Event("b", "purchase", 3, item_id="annie2"),
        Event("c", "search", 1, text="nothing followed this"),
    ]


def test_each_moment_is_what_was_said_so_far_and_what_followed_before_the_next_words():
    assert list(moments(_log())) == [
        (1, "something scary with ghosts", ["haunting"]),
        (4, "something scary with ghosts and a vampire one", ["dracula"]),
        (2, "a musical for kids", ["annie2"]),
    ]
    shuffled = list(reversed(_log()))
    assert sorted(moments(group_by_user(shuffled))) == sorted(moments(_log()))


def test_a_long_history_of_searches_keeps_the_newest_words():
    from retrieval.asked import CONTEXT_CHARS, _context, _tail

    said = [f"search number {n} about ghosts" for n in range(2000)]
    kept = _tail(said)
    assert len(kept) < 200 and kept[-1] == said[-1]
    assert _context(kept) == _context(said) and len(_context(said)) == CONTEXT_CHARS
    log = [Event("heavy", "search", n, text=text) for n, text in enumerate(said)] + [Event("heavy", "view", 5000, item_id="x")]
    assert list(moments(log)) == [(1999, _context(said), ["x"])]


def test_similar_words_find_what_followed_them_best_first():
    model = AskedModel().fit(_log())
    assert model.rows == 3
    got = model.scores("any good ghost stories? scary please")
    assert list(got) == ["haunting", "dracula"]  # both moments share "scary ghost"; the first matches best
    assert got["haunting"] > got["dracula"] > 0
    assert list(model.scores("vampires")) == ["dracula"]
    assert model.scores("a cooking show") == {}
    assert AskedModel().scores("ghosts") == {}  # nothing fitted: nothing found


def test_chinese_requests_match_chinese_moments():
    log = [Event("z1", "search", 1, text="想看恐怖片，最好有鬼"), Event("z1", "view", 2, item_id="ghost"),
           Event("z2", "search", 1, text="推荐一部爱情电影"), Event("z2", "view", 2, item_id="love")]
    model = AskedModel().fit(log)
    assert list(model.scores("有没有好看的恐怖电影")) == ["ghost", "love"]  # 恐怖 first; 电影 also matches love
    assert list(model.scores("爱情片")) == ["love"]


def test_neighbours_bound_who_votes_and_max_rows_keeps_the_newest():
    log = []
    for n in range(30):
        log += [Event(f"u{n}", "search", 1, text=f"space adventure {n}"), Event(f"u{n}", "view", 2, item_id=f"film{n}")]
    assert len(AskedModel(neighbours=5).scores("space adventure")) == 0
    assert len(AskedModel(neighbours=5).fit(log).scores("space adventure")) == 5
    assert AskedModel(max_rows=10).fit(log).rows == 10


def test_the_fitting_job_publishes_the_model_and_a_worker_serves_the_same_scores(tmp_path):
    from retrieval.fitting import fit_signals
    from retrieval.records import Item
    from retrieval.signals import load_signals, publish
    from retrieval.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    store.upsert_items([Item(id=i, title=i) for i in ("haunting", "dracula", "musical", "annie", "annie2")])
    store.add_events(_log())
    fitted = fit_signals(store)
    assert fitted.asked is not None and fitted.manifest["asked_rows"] == 3
    publish(fitted, tmp_path / "signals")
    loaded = load_signals(tmp_path / "signals")
    served = AskedModel().adopt(*loaded.asked, loaded.item_ids)
    direct = AskedModel().fit(_log())
    assert served.scores("scary ghosts and vampires") == pytest.approx(direct.scores("scary ghosts and vampires"))
    # A log where nobody said anything in words publishes no model, and loads as none.
    plain = Store.open(f"sqlite:///{tmp_path / 'plain.db'}")
    plain.upsert_items([Item(id="x", title="x")])
    plain.add_events([Event("u", "view", 1, item_id="x")])
    empty = fit_signals(plain)
    assert empty.asked is None
    publish(empty, tmp_path / "plain-signals")
    assert load_signals(tmp_path / "plain-signals").asked is None


def test_the_fitting_job_finds_the_same_moments_from_columns(tmp_path):
    """The vectorised path (a step per search, none per event) against the reference definition,
    on a log with many users, ties within a second, searches without text and repeats."""
    import random

    from retrieval.fitting import read_event_columns
    from retrieval.records import Item
    from retrieval.store import Store
    from retrieval.asked import column_moments

    rng = random.Random(7)
    words = "ghost vampire space robot love song war horse".split()
    log = []
    for u in range(40):
        for t in range(rng.randint(1, 12)):
            kind = rng.choice(["search", "search", "view", "like", "dislike", "rate", "purchase"])
            when = 1_600_000_000 + rng.randint(0, 8)  # many events share a second
            if kind == "search":
                text = rng.choice(["", " ".join(rng.sample(words, 2))])
                log.append(Event(f"u{u}", "search", when, text=text))
            else:
                log.append(Event(f"u{u}", kind, when, item_id=f"i{rng.randint(0, 9)}",
                                 value=float(rng.randint(1, 5)) if kind == "rate" else None))
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    store.upsert_items([Item(id=f"i{n}", title=f"i{n}") for n in range(10)])
    store.add_events(log)
    columns = read_event_columns(store, [f"i{n}" for n in range(10)])
    fast = column_moments(columns, columns.users, columns.items)
    reference = list(moments(group_by_user(store.iter_events())))
    assert len(reference) >= 15
    assert sorted(fast) == sorted(reference)
    # The keyset read (PostgreSQL's) finds the same searches at the same positions.
    import retrieval.fitting as fitting

    fitting.event_key, saved = (lambda database: "seq"), fitting.event_key
    try:
        keyset = read_event_columns(store, [f"i{n}" for n in range(10)], chunk_size=7)
    finally:
        fitting.event_key = saved
    assert keyset.said == read_event_columns(store, [f"i{n}" for n in range(10)], chunk_size=7).said == columns.said
    assert sorted(column_moments(keyset, keyset.users, keyset.items)) == sorted(reference)


FILMS = [
    ("haunting", "The Haunting", 1963, "Horror", "A house that does not want its guests to leave."),
    ("conjuring", "The Conjuring", 2013, "Horror", "Paranormal investigators help a family in a farmhouse."),
    ("dracula", "Dracula", 1931, "Horror", "A count from Transylvania moves to London."),
    ("annie", "Annie", 1982, "Musical|Family", "An orphan girl sings her way into a new home."),
    ("grease", "Grease", 1978, "Musical|Romance", "High school sweethearts sing through a summer."),
] + [(f"pop{n}", f"Crowd Pleaser {n}", 2015, "Comedy", "A comedy everyone has seen.") for n in range(8)]


def _dialog(conv, seeker_says, recommender_says, mentions):
    messages = [{"text": seeker_says, "senderWorkerId": 1}, {"text": recommender_says, "senderWorkerId": 2}]
    return {"conversationId": conv, "messages": messages, "initiatorWorkerId": 1, "movieMentions": mentions}


def test_a_loaded_dialog_log_teaches_which_films_such_words_lead_to(make_engine, tmp_path):
    engine = make_engine(demo=False, llm_backend="none")
    engine.upsert_items([{"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d} for i, t, y, c, d in FILMS])
    engine.add_events([{"user_id": f"fan{n}", "item_id": f"pop{n % 8}", "type": "like", "timestamp": 1_600_000_000 + n}
                       for n in range(40)])
    log = tmp_path / "dialogs.jsonl"
    films = {"conj": "The Conjuring (2013)", "grease": "Grease (1978)"}
    log.write_text("\n".join(json.dumps(d) for d in [
        _dialog("d1", "I want something that keeps me up at night, demons and exorcisms", "Try @conj", films),
        _dialog("d2", "demons scare me most, got any?", "@conj is the one", films),
        _dialog("d3", "a feel-good singalong please", "@grease for sure", films),
    ]) + "\n", encoding="utf-8")
    engine.ingest_dialogs_file(log)
    events = list(engine.agent.respond("new", "anything with demons that keeps me up at night?", k=5))
    cards = [e for e in events if getattr(e, "stage", None) == "ranked"][-1].cards
    assert cards[0].item_id == "conjuring"
    assert "asked" in cards[0].evidence["signals"]
    assert "asked for something similar" in cards[0].reason
    # Words said earlier in the conversation count too, also when a client sends them as prior turns.
    prior = [{"role": "user", "content": "demons and exorcisms keep me up at night"}, {"role": "assistant", "content": "Noted."}]
    later = [c for e in engine.agent.respond("other", "so what now?", k=5, prior=prior)
             if getattr(e, "stage", None) == "ranked" for c in e.cards]
    assert later and "asked" in later[0].evidence["signals"] and later[0].item_id == "conjuring"
    # Without the loaded conversations the same words know nothing of The Conjuring.
    fresh = make_engine(demo=False, llm_backend="none")
    fresh.upsert_items([{"id": i, "title": t, "year": y, "categories": c.split("|"), "text": d} for i, t, y, c, d in FILMS])
    plain = [c for e in fresh.agent.respond("new", "anything with demons that keeps me up at night?", k=5)
             if getattr(e, "stage", None) == "ranked" for c in e.cards]
    assert "conjuring" not in [c.item_id for c in plain[:1]] and not fresh.retriever.asked.fitted
