"""Reasons and summaries: grounded LLM text is kept, invented facts are replaced by evidence sentences."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from core.errors import LLMError
from assistant.events import Card
from assistant.evidence import evidence_reason, evidence_summary, item_about
from assistant.explain import clean_generated, hook_reason, llm_reasons, reason_prompt, summarize_item, summarize_list
from assistant.grounding import check_reason, reason_problems
from assistant.llm.fake import FakeLLM
from prompts import Prompts, parse_template
from retrieval.records import Candidate, Evidence, Item

PROMPTS = Prompts("completion")  # the shipped reason template writes a hook
# The whole-sentence form (as the chat template and a prompt engineer's variant may use it): the
# completion template shipped before the hook form, kept as a test fixture.
SENTENCE = Prompts("completion")
SENTENCE.override(parse_template((Path(__file__).parent / "reason_sentence.completion.yaml").read_text("utf-8"), "sentence"))
KNOWN = {"Goodfellas", "The Godfather", "Casino", "Heat", "Toy Story", "Godfather: Part II, The", "Up"}

GOODFELLAS = Candidate(
    Item(
        "gf",
        "Goodfellas",
        text="The story of Henry Hill and his life in the mob, from 1955 to 1980.",
        categories=["Crime", "Drama"],
        year=1990,
        creator="Martin Scorsese",
        tags=["mafia"],
    ),
    0.9,
    Evidence(near_history=[("g1", "The Godfather", 0.8)], shared_categories=["Crime"], signals={"collab_score": 0.4}),
)
TOY_STORY = Candidate(Item("ts", "Toy Story", categories=["Animation", "Comedy"], year=1995), 0.5, Evidence())


@pytest.mark.parametrize(
    "reason, ok",
    [
        ("Like The Godfather, which you liked, it is a gritty crime drama.", True),  # a tone word needs no source
        ("A Martin Scorsese crime classic from 1990.", True),
        ("A 90s mob story about Henry Hill.", True),  # decade of its year, names from its own text
        ("It follows Henry Hill from 1955 to 1980.", True),
        ("和你喜欢的《The Godfather》一样，这是一部犯罪剧情片。", True),
        ("Like Casino, it is a gritty crime drama.", False),  # another catalog title
        ("和你喜欢的《Casino》一样。", False),
        ("A 1972 crime drama.", False),  # a year that is nobody's here
        ("It won 3 Oscars.", False),
        ("A crime drama starring Robert De Niro.", False),  # a name found nowhere in the data
        ("Goodfellas is a crime drama, a crime drama, a crime drama.", False),  # loops
        ("", False),
        ("  ", False),
        ("x" * 400, False),
    ],
)
def test_reason_check_accepts_grounded_and_rejects_invented(reason, ok):
    assert check_reason(reason, GOODFELLAS, KNOWN) is ok, reason_problems(reason, GOODFELLAS, KNOWN)


def test_a_title_inside_the_items_own_title_is_not_another_title():
    sequel = Candidate(Item("g2", "The Godfather: Part II", text="The saga continues.", year=1974), 1.0)
    assert check_reason("The Godfather: Part II continues the saga.", sequel, {"The Godfather", "The Godfather: Part II"})


def test_movielens_style_titles_are_recognised_in_natural_order():
    assert not check_reason("Just like The Godfather: Part II.", TOY_STORY, {"Godfather: Part II, The"})


def test_a_category_of_another_candidate_is_a_false_claim():
    others = {"Crime", "Drama", "Animation", "Comedy"}
    assert not check_reason("A gritty crime film, just as you asked.", TOY_STORY, KNOWN, "a gritty crime film", others)
    assert check_reason("A warm animated comedy.", TOY_STORY, KNOWN, "", others)


@pytest.mark.parametrize(
    "evidence, en, zh",
    [
        (
            Evidence(near_history=[("a", "Heat", 0.9), ("b", "Casino", 0.8)], shared_categories=["Crime"]),
            "It is close to Heat and Casino, which you liked, and shares Crime with your favourites.",
            "它与你喜欢的《Heat》《Casino》相近，并且和你喜欢的作品同属Crime类。",
        ),
        (
            Evidence(matched_words=["mob", "1990s"], shared_creators=["Martin Scorsese"]),
            "It matches what you asked for (mob and 1990s) and is by Martin Scorsese, whose work you have enjoyed.",
            "它符合你的要求（mob、1990s），并且出自你欣赏的 Martin Scorsese。",
        ),
        (
            Evidence(signals={"collaborative": 0.3, "popularity": 0.1, "content": 0.9}),
            "It is liked by people with similar taste and is popular with other users.",
            "它也受到口味相近的用户喜爱，并且很受其他用户欢迎。",
        ),
        (
            # A genre and an era the user named while talking (retrieval marks them "category", "era").
            Evidence(signals={"category": 1.0, "era": 1.0, "category_favourites": 2.1, "popularity": 0.2}),
            "It is of a kind you mentioned and is from the years you mentioned.",
            "它属于你提到的类型，并且来自你提到的年代。",
        ),
        (Evidence(), "A strong Crime and Drama match from the catalog.", "这是目录中与你很匹配的Crime、Drama作品。"),
    ],
)
def test_evidence_reasons_in_english_and_chinese(evidence, en, zh):
    candidate = Candidate(Item("x", "Goodfellas", categories=["Crime", "Drama"]), 1.0, evidence)
    assert evidence_reason(candidate) == en
    assert evidence_reason(candidate, "zh") == zh
    assert evidence_reason(candidate, "zh-CN") == zh
    assert check_reason(en, candidate)  # evidence sentences pass their own check
    assert check_reason(zh, candidate, language="zh")  # "同属Crime类": the name ends where the Chinese begins


def test_llm_reasons_stream_then_keep_a_grounded_reason():
    llm = FakeLLM(["Like The Godfather, it is a crime drama.\nItem: babble"])
    chunks = list(llm_reasons(llm, SENTENCE, [GOODFELLAS], "something gritty", "en", KNOWN))
    deltas = [c.delta for c in chunks if c.delta]
    assert "".join(deltas).startswith("Like The Godfather")
    assert chunks[-1].final == "Like The Godfather, it is a crime drama." and chunks[-1].source == "llm"
    prompt = llm.prompts[0]
    assert prompt.endswith("Item: Goodfellas (1990; Crime, Drama) by Martin Scorsese\n"
                           "Facts: you liked The Godfather; shares Crime with your favourites; liked by people with similar taste\n"
                           "Request: something gritty\nLanguage: English\nReason:")
    assert llm.calls[0]["max_tokens"] <= 60 and llm.calls[0]["stop"] == ["\n"]


@pytest.mark.parametrize(
    "answer",
    [
        "Like Casino, it is a crime drama.",  # invented title
        "",  # empty
        "the the the the the the the the the the the the",  # looping
        LLMError("server down"),
    ],
)
def test_llm_reasons_replace_a_bad_reason_with_the_evidence(answer):
    llm = FakeLLM([answer])
    final = [c for c in llm_reasons(llm, SENTENCE, [GOODFELLAS], "", "en", KNOWN) if c.final][0]
    assert (final.final, final.source) == (evidence_reason(GOODFELLAS), "evidence")


def test_after_a_backend_failure_the_rest_of_the_turn_uses_evidence():
    llm = FakeLLM([LLMError("timeout"), "A fine pick."])
    finals = [c for c in llm_reasons(llm, SENTENCE, [GOODFELLAS, TOY_STORY], "", "zh", KNOWN) if c.final]
    assert [c.source for c in finals] == ["evidence", "evidence"] and len(llm.prompts) == 1
    assert finals[1].final == evidence_reason(TOY_STORY, "zh")



def test_a_batching_model_writes_every_reason_in_one_call_streamed_as_each_finishes():
    llm = FakeLLM(["Like The Godfather, it is a crime drama.", "An animated film."], supports_batch=True)
    chunks = list(llm_reasons(llm, SENTENCE, [GOODFELLAS, TOY_STORY], "", "en", KNOWN))
    assert [c["kind"] for c in llm.calls] == ["stream_many"] and llm.calls[0]["n"] == 2
    deltas = [c.item_id for c in chunks if c.delta]
    assert deltas[:2] == [GOODFELLAS.item.id, TOY_STORY.item.id], "the reasons' pieces interleave"
    finals = {c.item_id: c for c in chunks if c.final}
    assert finals[GOODFELLAS.item.id].final == "Like The Godfather, it is a crime drama."
    assert finals[GOODFELLAS.item.id].source == "llm"
    assert [c.item_id for c in chunks if c.final][0] == TOY_STORY.item.id, "the shorter reason is final first"


def test_a_model_that_can_be_held_to_words_writes_the_hook_from_the_about_lines_words_only():
    llm = FakeLLM(["the story of Henry Hill"], supports_batch=True)
    llm.writes_given_words = True  # plays the local llama.cpp model (llm/words.py)
    finals = [c for c in llm_reasons(llm, PROMPTS, [GOODFELLAS], "", "en", KNOWN) if c.final]
    assert finals[0].source == "llm" and [c["kind"] for c in llm.calls] == ["stream_many"], "one hook goes the held way too"
    (words,) = llm.calls[0]["words"]
    assert item_about(GOODFELLAS.item) in words and " who " in f" {words} ", "its About line and the template's few common words"
    assert "Scorsese" not in words and "mafia" not in words, "only the line the model is asked to sum up"
    free = FakeLLM(["the story of Henry Hill", "x"], supports_batch=True)  # a hosted model: never held
    list(llm_reasons(free, PROMPTS, [GOODFELLAS, TOY_STORY], "", "en", KNOWN))
    assert free.calls and all(c.get("words") is None for c in free.calls)
    held = FakeLLM(["Like The Godfather, it is a crime drama.", "x"], supports_batch=True)
    held.writes_given_words = True
    list(llm_reasons(held, SENTENCE, [GOODFELLAS, TOY_STORY], "", "en", KNOWN))
    assert held.calls and all(c.get("words") is None for c in held.calls), "a template without words_from lets the model write any words"


def test_a_batch_that_fails_midway_keeps_what_finished_and_says_so_once():
    llm = FakeLLM(["Gritty.", LLMError("the local model process died")], supports_batch=True)  # one word: done first
    finals = {c.item_id: c for c in llm_reasons(llm, SENTENCE, [GOODFELLAS, TOY_STORY], "", "en", KNOWN) if c.final}
    assert finals[TOY_STORY.item.id].source == "evidence"
    assert "the local model process died" in finals[TOY_STORY.item.id].failure
    assert finals[GOODFELLAS.item.id].failure is None


# The shipped completion template writes a hook: a phrase on what the item is about, which the
# caller joins with the strongest evidence fact and checks as one sentence.


def test_a_hook_is_streamed_then_joined_with_the_strongest_evidence():
    llm = FakeLLM(["Henry Hill and his life in the mob\nItem: babble"])
    chunks = list(llm_reasons(llm, PROMPTS, [GOODFELLAS], "something gritty", "en", KNOWN))
    assert "".join(c.delta for c in chunks if c.delta).startswith("Henry Hill and his life")
    assert chunks[-1].final == "Henry Hill and his life in the mob; it is close to The Godfather, which you liked."
    assert chunks[-1].source == "llm"
    assert llm.prompts[0].endswith(
        "\n\nAbout: The story of Henry Hill and his life in the mob, from 1955 to 1980.\nLanguage: English\nHook:"
    )
    assert llm.calls[0]["stop"] == ["\n"] and llm.calls[0]["max_tokens"] <= 32


@pytest.mark.parametrize(
    "hook",
    [
        "a mob story starring Robert De Niro",  # a name found nowhere in the data
        "a crime drama",  # says nothing the item line does not
        "Goodfellas",
        "the story of Henry Hill, his life in the mob, the crimes he did from 1955 to 1980 in New York",  # too long, no clause to end at
        "a spacecraft crew hunted by a deadly creature",  # the template's own example
        "",
    ],
)
def test_an_invented_or_empty_hook_gives_the_evidence_sentence(hook):
    final = [c for c in llm_reasons(FakeLLM([hook]), PROMPTS, [GOODFELLAS], "", "en", KNOWN) if c.final][0]
    assert (final.final, final.source) == (evidence_reason(GOODFELLAS), "evidence")


def test_an_item_without_a_description_is_not_sent_to_the_model():
    bare = Candidate(Item("n", "Night Shift", text="A comedy film from 1982.", categories=["Comedy"], year=1982), 0.5, Evidence())
    llm = FakeLLM(["should not be asked"])
    finals = [c for c in llm_reasons(llm, PROMPTS, [TOY_STORY, bare], "", "en", KNOWN) if c.final]
    assert [c.source for c in finals] == ["evidence", "evidence"] and llm.prompts == []


GOODFELLAS_ZH = Candidate(
    Item("gf", "Goodfellas", text="亨利·希尔从1955年到1980年的黑帮生涯。", categories=["Crime", "Drama"], year=1990),
    0.9,
    GOODFELLAS.evidence,
)


def test_a_chinese_hook_is_joined_with_the_chinese_evidence():
    final = [c for c in llm_reasons(FakeLLM(["亨利·希尔的黑帮生涯"]), PROMPTS, [GOODFELLAS_ZH], "", "zh", KNOWN) if c.final][0]
    assert (final.final, final.source) == ("亨利·希尔的黑帮生涯，它与你喜欢的《The Godfather》相近。", "llm")


def test_a_chinese_reply_about_an_english_description_quotes_the_hook_in_english():
    # The model is asked as for an English reply (the prompt an English user's turn, or the
    # writer's spare time, already made: one generation serves both) and its phrase is checked
    # against the English description, then quoted in the Chinese sentence.
    english = FakeLLM(["Henry Hill and his life in the mob"])
    final = [c for c in llm_reasons(english, PROMPTS, [GOODFELLAS], "", "zh", KNOWN) if c.final][0]
    assert (final.final, final.source) == ("「Henry Hill and his life in the mob」，它与你喜欢的《The Godfather》相近。", "llm")
    assert english.prompts == [reason_prompt(PROMPTS.get("reason"), GOODFELLAS, "", "en")]
    # A translation is not asked for and not kept: nothing in the description to check it against.
    translated = [c for c in llm_reasons(FakeLLM(["亨利·希尔的黑帮生涯"]), PROMPTS, [GOODFELLAS], "", "zh", KNOWN) if c.final][0]
    assert (translated.final, translated.source) == (evidence_reason(GOODFELLAS, "zh"), "evidence")
    # The quoted phrase is checked as an English reply's would be: an invented word fails there.
    invented = [c for c in llm_reasons(FakeLLM(["Henry Hill and his life on Mars"]), PROMPTS, [GOODFELLAS], "", "zh", KNOWN) if c.final][0]
    assert invented.source == "evidence", invented.final
    english = FakeLLM(["Henry Hill and his life in the mob"])
    assert [c for c in llm_reasons(english, PROMPTS, [GOODFELLAS], "", "en", KNOWN) if c.final][0].source == "llm"


@pytest.mark.parametrize(
    "hook",
    [
        "牧师的女儿与多年前拒绝的水手重逢",  # the template's Chinese example, about another item
        "Henry Hill and his life in the mob",  # English, for a Chinese user
    ],
)
def test_a_chinese_user_gets_the_evidence_sentence_for_a_copied_or_english_hook(hook):
    final = [c for c in llm_reasons(FakeLLM([hook]), PROMPTS, [GOODFELLAS_ZH], "", "zh", KNOWN) if c.final][0]
    assert (final.final, final.source) == (evidence_reason(GOODFELLAS_ZH, "zh"), "evidence")


def test_a_hook_may_repeat_example_words_its_own_description_holds():
    crew = Candidate(Item("n", "Nightfall", text="A spacecraft crew hunted by a deadly creature fights back.", categories=["Horror"]),
                     0.5, Evidence(near_history=[("g1", "The Godfather", 0.8)]))
    final = [c for c in llm_reasons(FakeLLM(["a spacecraft crew hunted by a deadly creature"]), PROMPTS, [crew], "", "en", KNOWN) if c.final][0]
    assert final.source == "llm"


@pytest.mark.parametrize(
    "hook, expected",
    [
        ("henry Hill's life in the mob.", "Henry Hill's life in the mob; it is close to The Godfather, which you liked."),
        ("Henry Hill and his", "Henry Hill; it is close to The Godfather, which you liked."),  # no dangling words
        ("Henry Hill joins the mob in New York, where he", "Henry Hill joins the mob in New York; it is close to The Godfather, which you liked."),
        ("a crime film from 1990", None),
        ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen", None),
        # A copy of the description past the limit is kept up to the last clause that starts in time ...
        ("the story of Henry Hill and his life in the mob, who rose from a boy running errands to a made man in New York",
         "The story of Henry Hill and his life in the mob; it is close to The Godfather, which you liked."),
        # ... preferring a clause word to an "and" that may join two words, never an "and" that ends a list
        ("Henry Hill, a boy from Brooklyn, grows up in the mob before his luck and his friends run out on him in 1980",
         "Henry Hill, a boy from Brooklyn, grows up in the mob; it is close to The Godfather, which you liked."),
        ("Henry Hill lives the mob life of money, guns, cars, drugs and fear from 1955 to 1980 in New York City", None),
    ],
)
def test_hook_reason(hook, expected):
    assert hook_reason(hook, GOODFELLAS) == expected


@pytest.mark.parametrize("hook, expected", [
    # Cut at max_tokens inside a clause: kept up to its last whole clause, though short enough.
    ("the story of Henry Hill and his life in the mob, who rose from a boy running…",
     "The story of Henry Hill and his life in the mob; it is close to The Godfather, which you liked."),
    ("Henry Hill lives the mob life from 1955 to 1980 in New…", None),  # no whole clause: evidence instead
    ("Henry Hill's life in the mob. He rose from a boy running…",  # the first sentence ended before the cut
     "Henry Hill's life in the mob; it is close to The Godfather, which you liked."),
])
def test_a_hook_cut_at_max_tokens_keeps_only_whole_clauses(hook, expected):
    assert hook_reason(hook, GOODFELLAS) == expected


def test_a_chinese_hook_cut_at_max_tokens_keeps_its_first_whole_clause():
    assert hook_reason("亨利·希尔从1955年开始，在黑帮里一步步…", GOODFELLAS_ZH, "zh").startswith("亨利·希尔从1955年开始，它")
    assert hook_reason("亨利·希尔从1955年开始在黑帮里一步步…", GOODFELLAS_ZH, "zh") is None, "no clause ended before the cut"
    assert hook_reason("亨利·希尔从1955年开始在黑帮里", GOODFELLAS_ZH, "zh").startswith("亨利·希尔从1955年开始在黑帮里")


def test_a_hook_the_model_wrote_to_max_tokens_is_marked_and_remembered_so():
    from assistant.explain import CUT_MARK, reason_limits
    from assistant.llm.memo import Remembered

    max_tokens, stops = reason_limits(PROMPTS.get("reason"))
    words = "Henry Hill and his life in the mob, who rose from a boy running errands to a made man in New York City".split()
    assert len(words) >= max_tokens  # the fake model counts a word as a token
    memory = Remembered()
    llm = _greedy(" ".join(words[:max_tokens]))
    final = [c for c in llm_reasons(llm, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(llm)) if c.final][0]
    assert final.raw.endswith(CUT_MARK) and final.source == "llm"
    assert final.final == "Henry Hill and his life in the mob; it is close to The Godfather, which you liked."
    assert memory.bind(llm).get(llm.prompts[0], max_tokens, stops).endswith(CUT_MARK), "later turns judge it as cut too"
    short = _greedy("Henry Hill and his life in the mob")
    assert not [c for c in llm_reasons(short, PROMPTS, [GOODFELLAS], "", "en", KNOWN) if c.final][0].raw.endswith(CUT_MARK)


@pytest.mark.parametrize("word, backed_by", [("spy", "spies"), ("tries", "trying"), ("flies", "fly"), ("ghosts", "ghost")])
def test_a_word_is_backed_by_another_form_of_it(word, backed_by):
    from assistant.claims import Support

    assert Support.of([f"a tale of {backed_by}"]).covers(word)


@pytest.mark.parametrize(
    "text, about",
    [
        ("Short. Second sentence.", "Short."),
        ("H. G. Wells wrote it. Then more.", "H. G. Wells wrote it."),
        # past 3/5 of the limit a comma ends the clause
        ("A young sailor signs aboard a whaling ship whose one-legged captain, bent on revenge, hunts the white whale that took his leg.",
         "A young sailor signs aboard a whaling ship whose one-legged captain, bent on revenge"),
        # otherwise the cut is at 20 words, without a dangling "the"
        ("In the smog-choked Los Angeles of 2019, blade runner Rick Deckard is called out of retirement to hunt down the four replicants who fled.",
         "In the smog-choked Los Angeles of 2019, blade runner Rick Deckard is called out of retirement to hunt down"),
        ("", ""),
    ],
)
def test_item_about_is_the_first_clause_of_the_description(text, about):
    assert item_about(Item("x", "X", text=text)) == about

def test_without_an_llm_every_reason_comes_from_evidence():
    finals = list(llm_reasons(None, PROMPTS, [GOODFELLAS, TOY_STORY], "", "en"))
    assert [(c.item_id, c.delta, c.source) for c in finals] == [("gf", None, "evidence"), ("ts", None, "evidence")]


CARDS = [
    Card("gf", "Goodfellas", 0.9, year=1990, categories=["Crime", "Drama"]),
    Card("c", "Casino", 0.8, year=1995, categories=["Crime", "Drama"]),
    Card("h", "Heat", 0.7, year=1995, categories=["Action", "Crime"]),
]


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Three crime dramas from the 90s, led by Goodfellas.", "Three crime dramas from the 90s, led by Goodfellas."),
        ("Three crime films, including Toy Story.", "3 picks, mostly Crime and Drama, from 1990 to 1995."),
        ("A young man is kidnapped by thugs and forced to live in a small town.", "3 picks, mostly Crime and Drama, from 1990 to 1995."),
        (LLMError("down"), "3 picks, mostly Crime and Drama, from 1990 to 1995."),
    ],
)
def test_summarize_list_keeps_grounded_summaries_only(answer, expected):
    assert summarize_list(FakeLLM([answer]), PROMPTS, CARDS, "en", "crime films", KNOWN) == expected


@pytest.mark.parametrize(
    "language, expected",
    [("en", "3 picks, mostly Crime and Drama, from 1990 to 1995."), ("zh", "为你挑选了 3 项，以Crime、Drama为主，年份 1990–1995。")],
)
def test_evidence_summary(language, expected):
    assert summarize_list(None, PROMPTS, CARDS, language) == expected == evidence_summary(CARDS, language)


def test_summarize_item_falls_back_to_its_own_text():
    item = GOODFELLAS.item
    llm = FakeLLM(["Goodfellas follows Henry Hill and his life in the mob. It is a story by Martin Scorsese."])
    assert summarize_item(llm, PROMPTS, item) == "Goodfellas follows Henry Hill and his life in the mob. It is a story by Martin Scorsese."
    assert summarize_item(FakeLLM(["It stars Al Pacino."]), PROMPTS, item) == item.text
    assert summarize_item(None, PROMPTS, Item("e", "Emma", year=1815)) == "Emma (1815)."


@pytest.mark.parametrize(
    "text, expected",
    [
        ('  "One. Two! Three?"  ', "One. Two!"),
        ("No full stop", "No full stop"),
        ("第一句。第二句。第三句。", "第一句。第二句。"),
    ],
)
def test_clean_generated_keeps_the_first_sentences(text, expected):
    assert clean_generated(text) == expected


# Grounding: liked-claims and content words --------------------------------------------------------

SLEEPY_HOLLOW = Candidate(
    Item(
        "bk-106",
        "The Legend of Sleepy Hollow",
        text="A gangly, superstitious schoolmaster courts a wealthy farmer's daughter in a drowsy Hudson Valley "
        "village haunted by a headless rider. Irving's tale is more comic than scary. Perfect autumn reading.",
        categories=["Short Stories", "Gothic"],
        tags=["headless-horseman", "halloween", "folklore", "new-york"],
        year=1820,
        creator="Washington Irving",
    ),
    0.8,
    Evidence(near_history=[("bk-175", "Ghost Stories of an Antiquary", 0.7)], shared_categories=["Gothic"]),
)
TITLES = {"The Legend of Sleepy Hollow", "Ghost Stories of an Antiquary", "Dracula", "The Turn of the Screw", "Emma"}


@pytest.mark.parametrize(
    "reason, unsupported",
    [
        ("A haunted house tale, close to Ghost Stories of an Antiquary, which you liked.", "house"),
        ("A Gothic tale set in a haunted castle in Scotland.", "castle, scotland"),
        ("A tale of vampires, more comic than scary.", "vampires"),
        ("A perfect autumn read: a Gothic tale of a village haunted by a headless rider.", None),
        ("More comic than scary: Halloween folklore about a schoolmaster.", None),  # tags and text
        ("A Gothic tale, not a romance.", None),  # what is denied is not claimed
    ],
)
def test_content_words_must_come_from_the_item_or_the_evidence(reason, unsupported):
    problems = [p for p in reason_problems(reason, SLEEPY_HOLLOW, TITLES) if "found neither" in p]
    assert problems == ([] if unsupported is None else [f"says {unsupported}: found neither in the item's data nor in the evidence"])


@pytest.mark.parametrize(
    "reason, ok",
    [
        ("Close to Ghost Stories of an Antiquary, which you liked.", True),
        ("Like the Gothic tales you enjoyed, it is perfect autumn reading.", True),  # a shared category
        ("A Gothic tale, which you liked.", False),  # "which" is the recommended item itself
        ("The Legend of Sleepy Hollow, which you enjoyed, is perfect autumn reading.", False),
        ("A Gothic tale, and you like it.", False),
        ("Since you read The Turn of the Screw, try this Gothic tale.", False),  # a title never liked
        ("Washington Irving, whose work you loved, wrote this Gothic tale.", False),  # not a shared creator
        ("和你喜欢的《Ghost Stories of an Antiquary》一样，这是一个哥特故事。", True),
        ("你读过的《The Legend of Sleepy Hollow》很适合秋天。", False),
        ("和你喜欢的《Dracula》一样，这是一个哥特故事。", False),
    ],
)
def test_a_liked_claim_must_point_at_something_the_user_liked(reason, ok):
    language = "zh" if "你" in reason else "en"
    assert check_reason(reason, SLEEPY_HOLLOW, TITLES, language=language) is ok, reason_problems(reason, SLEEPY_HOLLOW, TITLES)


def test_liked_items_outside_the_evidence_count_when_the_caller_passes_them():
    reason = "Like Dracula, which you loved, it is a Gothic tale."
    assert not check_reason(reason, SLEEPY_HOLLOW, TITLES)
    assert check_reason(reason, SLEEPY_HOLLOW, TITLES, liked_titles=["Dracula"])


@pytest.mark.parametrize("request_, ok", [("", False), ("a spooky autumn tale", True), ("a murder mystery", False)])
def test_just_as_you_asked_needs_a_request_the_item_meets(request_, ok):
    assert check_reason("A Gothic tale, just as you asked.", SLEEPY_HOLLOW, TITLES, request_) is ok


def test_a_chinese_user_gets_the_evidence_reason_instead_of_an_english_one():
    llm = FakeLLM(["A Gothic tale, close to Ghost Stories of an Antiquary, which you liked."])
    final = [c for c in llm_reasons(llm, SENTENCE, [SLEEPY_HOLLOW], "", "zh", TITLES) if c.final][0]
    assert (final.final, final.source) == (evidence_reason(SLEEPY_HOLLOW, "zh"), "evidence")


def test_initials_do_not_end_a_sentence():
    assert clean_generated("H. G. Wells wrote it. Second. Third.") == "H. G. Wells wrote it. Second."


LABELLED = Path(__file__).with_name("reasons_labelled.json")


def _labelled_verdicts() -> list[tuple[dict, bool]]:
    books = {b["id"]: b for b in map(json.loads, (files("assistant.demo_data") / "books.jsonl").read_text("utf-8").splitlines())}
    titles = {b["title"] for b in books.values()}
    out = []
    for row in json.loads(LABELLED.read_text("utf-8"))["rows"]:
        ev = row["evidence"]
        evidence = Evidence(
            [(n["item_id"], n["title"], n["similarity"]) for n in ev["near_history"]],
            ev["matched_words"], ev["shared_categories"], ev["shared_creators"], ev["signals"],
        )
        candidate = Candidate(Item(**books[row["item_id"]]), 1.0, evidence)
        out.append((row, check_reason(row["reason"], candidate, titles, row["request"], row["others"], language=row["language"])))
    return out


def test_labelled_reasons_are_judged_as_labelled():
    """Reasons from the embedded Gemma 3 270M on the demo users, and hand-written ones, labelled by hand.

    The threshold (MAX_UNSUPPORTED) and the vocabulary lists were chosen on the first Gemma run
    and the hand rows; "heldout" rows come from a second run with other requests, labelled before
    the check was run on them. `python -m evaluation.reason_check score` prints the table per group.
    """
    verdicts = _labelled_verdicts()
    assert len(verdicts) >= 30
    false_rejects = [row["reason"] for row, ok in verdicts if row["ok"] and not ok]
    false_accepts = [row["reason"] for row, ok in verdicts if ok and not row["ok"]]
    assert len(false_rejects) <= 3, false_rejects  # measured: 3 of 44 good (all on held-out rows)
    assert len(false_accepts) <= 2, false_accepts  # measured: 2 of 123 bad (the check said 99 before)


def test_a_hook_is_tied_to_the_users_history_before_the_request():
    asked = Candidate(GOODFELLAS.item, 0.9, Evidence(near_history=[("g1", "The Godfather", 0.8)], matched_words=["mob"]))
    assert hook_reason("Henry Hill's life in the mob", asked) == "Henry Hill's life in the mob; it is close to The Godfather, which you liked."
    only_asked = Candidate(GOODFELLAS.item, 0.9, Evidence(matched_words=["mob"]))
    assert hook_reason("Henry Hill's life in the mob", only_asked) == "Henry Hill's life in the mob; it matches what you asked for (mob)."


def test_a_summary_that_repeats_the_templates_example_is_not_kept():
    # The shipped example is about Jane Austen novels; a small model with nothing to say repeats it.
    austen = [Card("p", "Persuasion", 0.9, year=1817, categories=["Fiction", "Romance"], creator="Jane Austen"),
              Card("e", "Emma", 0.8, year=1815, categories=["Fiction", "Romance"], creator="Jane Austen"),
              Card("m", "Middlemarch", 0.7, year=1871, categories=["Fiction"])]
    copied = "Three classic novels about love and society, led by two Jane Austen favourites."
    assert summarize_list(FakeLLM([copied]), PROMPTS, austen, "en", "", KNOWN) == evidence_summary(austen)
    own = "Fiction and romance, led by Persuasion and Emma."
    assert summarize_list(FakeLLM([own]), PROMPTS, austen, "en", "", KNOWN) == own


@pytest.mark.parametrize(
    "summary, kept",
    [
        ("Three crime dramas, led by Goodfellas.", True),  # three cards
        ("Two crime dramas, led by Goodfellas.", False),
        ("Twelve crime dramas, led by Goodfellas.", False),
        ("Crime dramas, with Heat as one of them.", True),  # "one" is not counted
    ],
)
def test_spelled_out_counts_must_match_the_list(summary, kept):
    assert (summarize_list(FakeLLM([summary]), PROMPTS, CARDS, "en", "", KNOWN) == summary) is kept


# What the model wrote before, remembered by its prompt (assistant/llm/memo.py) --------------------

HEAT = Candidate(
    Item("ht", "Heat", text="A detective hunts a master thief across Los Angeles.", categories=["Crime"], year=1995),
    0.8,
    Evidence(shared_categories=["Crime"]),
)


def _greedy(*answers):
    return FakeLLM(list(answers), greedy_repeats=True)


def test_a_hook_written_once_serves_a_later_turn_without_the_model():
    from assistant.llm.memo import Remembered

    memory = Remembered()
    llm = _greedy("Henry Hill and his life in the mob")
    first = [c for c in llm_reasons(llm, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(llm)) if c.final][0]
    assert first.source == "llm" and not first.earlier
    # A later turn the busy model turned away (llm None): the same prompt's text, checked again.
    later = [c for c in llm_reasons(None, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(llm)) if c.final][0]
    assert (later.final, later.source, later.earlier) == (first.final, "llm", True)
    assert len(llm.prompts) == 1, "the model was asked once"
    assert memory.stats()["hits"] == 1


def test_a_remembered_hook_is_joined_with_the_new_turns_evidence():
    from dataclasses import replace

    from assistant.llm.memo import Remembered

    memory = Remembered()
    llm = _greedy("Henry Hill and his life in the mob")
    list(llm_reasons(llm, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(llm)))
    # Another user, another turn: the hook is the item's, the reason is this user's.
    other = replace(GOODFELLAS, evidence=Evidence(near_history=[("h1", "Heat", 0.8)]))
    final = [c for c in llm_reasons(None, PROMPTS, [other], "", "en", KNOWN, remembered=memory.bind(llm)) if c.final][0]
    assert final.earlier and final.source == "llm"
    assert final.final == "Henry Hill and his life in the mob; it is close to Heat, which you liked."


def test_a_quota_asks_the_model_for_that_many_and_remembered_ones_are_free():
    from assistant.llm.memo import Remembered

    memory = Remembered()
    llm = _greedy("Henry Hill and his life in the mob", "a detective hunts a master thief")
    list(llm_reasons(llm, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(llm)))
    finals = {c.item_id: c for c in llm_reasons(llm, PROMPTS, [GOODFELLAS, HEAT], "", "en", KNOWN,
                                                remembered=memory.bind(llm), quota=1) if c.final}
    assert finals["gf"].earlier and finals["gf"].source == "llm"
    assert not finals["ht"].earlier and finals["ht"].source == "llm", "the quota went to the one not remembered"
    assert len(llm.prompts) == 2
    none_left = {c.item_id: c for c in llm_reasons(_greedy("x"), PROMPTS, [HEAT, GOODFELLAS], "", "en", KNOWN, quota=0) if c.final}
    assert {c.source for c in none_left.values()} == {"evidence"}


def _writing_turn(memory, llm, candidates=None):
    """A turn whose model call blocks until `started` is set: its hooks are in flight meanwhile."""
    import threading

    out: dict = {}

    def run():
        out["finals"] = [c for c in llm_reasons(llm, PROMPTS, candidates or [GOODFELLAS], "", "en", KNOWN,
                                                remembered=memory.bind(llm)) if c.final]

    thread = threading.Thread(target=run)
    thread.start()
    for _ in range(500):  # until the model has the prompt (the call blocks in its answer)
        if llm.prompts:
            break
        threading.Event().wait(0.01)
    return thread, out


def test_a_hook_another_turn_is_writing_is_awaited_not_asked_again():
    import threading

    from assistant.llm.memo import Remembered

    memory, go = Remembered(), threading.Event()
    llm = _greedy(lambda prompt: go.wait(10) and "Henry Hill and his life in the mob")
    writer, wrote = _writing_turn(memory, llm)
    threading.Timer(0.2, go.set).start()
    # A concurrent turn the busy model turned away (llm None) shows the same item: it waits for that text.
    waited = [c for c in llm_reasons(None, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(llm), wait_s=30) if c.final][0]
    writer.join(10)
    assert (waited.source, waited.earlier) == ("llm", True)
    assert waited.final == wrote["finals"][0].final == "Henry Hill and his life in the mob; it is close to The Godfather, which you liked."
    assert len(llm.prompts) == 1, "the model wrote it once"
    assert memory.stats()["shared"] == 1
    # A turn the model granted reasons to does not ask for it either: its share goes to the others.
    go.clear()
    both = _greedy(lambda prompt: go.wait(10) and "Henry Hill and his life in the mob", "a detective hunts a master thief")
    memory = Remembered()
    writer, _ = _writing_turn(memory, both)
    threading.Timer(0.2, go.set).start()
    finals = {c.item_id: c for c in llm_reasons(both, PROMPTS, [GOODFELLAS, HEAT], "", "en", KNOWN,
                                                remembered=memory.bind(both), quota=1, wait_s=30) if c.final}
    writer.join(10)
    assert finals["gf"].source == "llm" and finals["gf"].earlier
    assert finals["ht"].source == "llm" and not finals["ht"].earlier
    assert len(both.prompts) == 2


def test_a_turn_does_not_wait_past_its_time_or_for_a_generation_that_stopped():
    import threading

    from assistant.llm.memo import Remembered

    memory, go = Remembered(), threading.Event()
    llm = _greedy(lambda prompt: go.wait(10) and "Henry Hill and his life in the mob")
    writer, _ = _writing_turn(memory, llm)
    late = [c for c in llm_reasons(None, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(llm), wait_s=0.05) if c.final][0]
    assert late.source == "evidence", "out of time: the evidence sentence"
    go.set()
    writer.join(10)

    # The writing turn stops reading (its time ran out) before its hook is whole: the waiter is
    # woken at once with nothing, and gets the evidence sentence instead of waiting its time out.
    memory = Remembered()
    slow = _greedy("Henry Hill and his life in the mob")
    pieces = llm_reasons(slow, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(slow))
    next(pieces)  # the first word is written: the hook is in flight
    out: dict = {}
    waiter = threading.Thread(target=lambda: out.update(finals=[c for c in llm_reasons(
        None, PROMPTS, [GOODFELLAS], "", "en", KNOWN, remembered=memory.bind(slow), wait_s=60) if c.final]))
    waiter.start()
    threading.Event().wait(0.1)
    pieces.close()
    waiter.join(30)
    assert not waiter.is_alive(), "it waited for a generation that had stopped"
    assert out["finals"][0].source == "evidence"
    from assistant.explain import reason_limits

    assert memory.bind(slow).get(slow.prompts[0], *reason_limits(PROMPTS.get("reason"))) is None, "half a hook is not remembered"


def test_only_models_that_repeat_themselves_are_remembered():
    from assistant.llm.memo import Remembered

    memory = Remembered(limit=2)
    assert memory.bind(FakeLLM([])) is None, "a model that may sample is never remembered"
    assert memory.bind(None) is None and Remembered(limit=0).bind(_greedy()) is None
    one, other = memory.bind(_greedy()), memory.bind(FakeLLM([], model="other", greedy_repeats=True))
    one.put("p", 8, ["\n"], "text")
    assert one.get("p", 8, ["\n"]) == "text"
    assert other.get("p", 8, ["\n"]) is None, "another model's text is not this one's"
    assert one.get("p", 9, ["\n"]) is None, "other limits, another generation"
    one.put("q", 8, ["\n"], "q")
    one.put("r", 8, ["\n"], "r")
    assert one.get("p", 8, ["\n"]) is None and len(memory) == 2, "the least recently used goes first"


def test_an_english_reply_about_a_chinese_description_quotes_the_chinese_hook():
    llm = FakeLLM(["亨利·希尔的黑帮生涯"])
    final = [c for c in llm_reasons(llm, PROMPTS, [GOODFELLAS_ZH], "", "en", KNOWN) if c.final][0]
    assert (final.final, final.source) == ("“亨利·希尔的黑帮生涯”; it is close to The Godfather, which you liked.", "llm")
    assert "Language: Chinese" in llm.prompts[0].splitlines()[-2]
    made_up = [c for c in llm_reasons(FakeLLM(["火星上的黑帮"]), PROMPTS, [GOODFELLAS_ZH], "", "en", KNOWN) if c.final][0]
    assert made_up.source == "evidence", "checked as a Chinese reply's hook: characters the item does not have"
    english = [c for c in llm_reasons(FakeLLM(["Henry Hill in the mob"]), PROMPTS, [GOODFELLAS_ZH], "", "en", KNOWN) if c.final][0]
    assert english.source == "evidence", "a translation into English is not kept either"


def test_the_hook_template_shows_examples_in_the_replys_language():
    template = PROMPTS.get("reason")
    offered = {"item": "X (1900; Y)", "about": "一件事。", "facts": "", "request": ""}
    zh = template.render_offered({**offered, "language": "Chinese"})
    en = template.render_offered({**offered, "about": "A thing.", "language": "English"})
    assert "Language: English" not in zh and zh.count("Language: Chinese") == 3
    assert "Language: Chinese" not in en and en.count("Language: English") == 3


@pytest.mark.parametrize("said_liked, language, expected", [
    (None, "en", "It is close to Alien, which you liked."),  # a card stored before: as it said then
    (["m1"], "en", "It is close to Alien, which you liked."),
    ([], "en", "It is close to Alien from your history."),  # only viewed, bought or "seen"
    (["m1"], "zh", "它与你喜欢的《Alien》相近。"),
    ([], "zh", "它与你看过的《Alien》相近。"),
])
def test_a_reason_calls_liked_only_what_the_user_said_they_liked(said_liked, language, expected):
    candidate = Candidate(Item(id="m2", title="Aliens"), 1.0, Evidence(near_history=[("m1", "Alien", 0.8)], said_liked=said_liked))
    assert evidence_reason(candidate, language) == expected
    hooked = hook_reason("a crew hunted by a creature" if language == "en" else "被怪物追猎的船员", candidate, language)
    assert ("liked" in hooked or "喜欢" in hooked) == (said_liked != [])


def test_what_a_card_said_about_liking_survives_storage():
    from assistant.reasons import evidence_from_dict

    for said_liked in (None, [], ["m1"]):
        evidence = Evidence(near_history=[("m1", "Alien", 0.8)], said_liked=said_liked)
        assert evidence_from_dict(json.loads(json.dumps(evidence.to_dict()))).said_liked == said_liked


def test_a_hook_joined_to_history_not_liking_passes_the_check():
    from assistant.explain import judge_reason

    template = Prompts().get("reason")
    item = Item(id="b1", title="The Turn of the Screw", text="A young governess at a remote country house.", categories=["Gothic"])
    candidate = Candidate(item, 1.0, Evidence(near_history=[("b2", "The Canterville Ghost", 0.6)], said_liked=[]))
    reason, problems = judge_reason("a governess at a country house", candidate, template, ["The Canterville Ghost"], "", [], [], "en")
    assert reason == "A governess at a country house; it is close to The Canterville Ghost from your history." and not problems


@pytest.mark.parametrize("stated, language, expected", [
    (None, "en", "It shares Gothic with your favourites."),
    (["Gothic"], "en", "It shares Gothic with your favourites."),
    ([], "en", "It shares Gothic with your history."),
    ([], "zh", "它和你看过的作品同属Gothic类。"),
])
def test_categories_are_favourites_only_when_they_come_from_stated_likes(stated, language, expected):
    candidate = Candidate(Item(id="m2", title="Carmilla"), 1.0, Evidence(shared_categories=["Gothic"], said_liked_categories=stated))
    assert evidence_reason(candidate, language) == expected


@pytest.mark.parametrize("stated, language, expected", [
    (None, "en", "It is by Jules Verne, whose work you have enjoyed."),  # a card stored before: as it said then
    (["Jules Verne"], "en", "It is by Jules Verne, whose work you have enjoyed."),
    ([], "en", "It is by Jules Verne, whose work is in your history."),  # only viewed or bought
    (["Jules Verne"], "zh", "它出自你欣赏的 Jules Verne。"),
    ([], "zh", "它和你看过的作品出自同一作者（Jules Verne）。"),
])
def test_a_creator_is_enjoyed_only_when_the_user_said_they_liked_their_work(stated, language, expected):
    from assistant.evidence import evidence_facts
    from assistant.reasons import evidence_from_dict

    evidence = Evidence(shared_creators=["Jules Verne"], said_liked_creators=stated)
    candidate = Candidate(Item(id="v2", title="The Mysterious Island", creator="Jules Verne"), 1.0, evidence)
    assert evidence_reason(candidate, language) == expected
    assert evidence_facts(candidate) == [f"by Jules Verne, whose work you {'had' if stated == [] else 'liked'} before"]
    assert evidence_from_dict(json.loads(json.dumps(evidence.to_dict()))).said_liked_creators == stated


@pytest.mark.parametrize("reason, stated, ok", [
    ("It is close to Dracula, which you loved.", [], False),  # only viewed: no verdict was said
    ("It is close to Dracula, which you loved.", ["m1"], True),
    ("It is close to Dracula, which you read.", [], True),  # true of anything the user had
    ("Since you watched Dracula, try this.", [], True),
    ("它与你喜欢的《Dracula》相近。", [], False),
    ("它与你看过的《Dracula》相近。", [], True),
    ("Verne's fans will like it, and you enjoyed Jules Verne.", [], False),
    ("It is by Jules Verne, whom you read before.", [], True),
])
def test_a_model_may_say_liked_only_of_what_the_user_said_they_liked(reason, stated, ok):
    """A chat model's sentence gets the same rule as the evidence sentence: "loved", "enjoyed" and
    喜欢 need a stated like; "read", "watched" and 看过 are true of any history item."""
    item = Item(id="c1", title="Carmilla", text="A vampire story.", creator="Jules Verne", categories=["Gothic"])
    evidence = Evidence(near_history=[("m1", "Dracula", 0.8)], shared_creators=["Jules Verne"], said_liked=stated,
                        said_liked_creators=["Jules Verne"] if stated else [])
    problems = [p for p in reason_problems(reason, Candidate(item, 1.0, evidence), ["Dracula", "Carmilla"]) if "liked" in p]
    assert (problems == []) == ok, problems


def test_cards_that_would_repeat_one_evidence_sentence_each_open_with_their_own_description():
    from assistant.explain import evidence_reasons

    shared = dict(near_history=[("h1", "Twenty Thousand Leagues Under the Seas", 0.7)], said_liked=["h1"])
    whale = Item(id="b1", title="Moby-Dick", text="A young sailor signs aboard a whaling ship whose one-legged captain "
                 "is bent on hunting down the white whale that maimed him. More follows.")
    island = Item(id="b2", title="Robinson Crusoe", text="A headstrong sailor is shipwrecked alone on a tropical island "
                  "and spends years building a life from salvage and patience.")
    bare = Item(id="b3", title="Untold", text="")  # nothing of its own to say: the evidence sentence
    other = Item(id="b4", title="Emma", text="A matchmaker meddles.")
    cands = [Candidate(whale, 1.0, Evidence(**shared)), Candidate(island, 0.9, Evidence(**shared)),
             Candidate(bare, 0.8, Evidence(**shared)), Candidate(other, 0.7, Evidence(shared_categories=["Romance"]))]
    reasons = evidence_reasons(cands, "en")
    assert reasons["b1"] == ("A young sailor signs aboard a whaling ship whose one-legged captain is bent on hunting down the "
                             "white whale; it is close to Twenty Thousand Leagues Under the Seas, which you liked.")  # cut before "that"
    assert reasons["b2"] == ("A headstrong sailor is shipwrecked alone on a tropical island and spends years building a life from "
                             "salvage and patience; it is close to Twenty Thousand Leagues Under the Seas, which you liked.")  # 20 words: whole
    assert reasons["b3"] == evidence_reason(cands[2]) and reasons["b4"] == evidence_reason(cands[3])  # b4's is its own already
    assert len(set(reasons.values())) == 4
    for c in cands:
        assert reason_problems(reasons[c.item.id], c, ["Twenty Thousand Leagues Under the Seas", "Emma"]) == []


def test_in_a_chinese_reply_cards_about_english_books_open_with_their_own_words_quoted():
    from assistant.explain import evidence_reasons

    shared = dict(near_history=[("h1", "Twenty Thousand Leagues Under the Seas", 0.7)], said_liked=["h1"])
    whale = Item(id="b1", title="Moby-Dick", text="A young sailor signs aboard a whaling ship whose one-legged captain "
                 "is bent on hunting down the white whale that maimed him.")
    island = Item(id="b2", title="Robinson Crusoe", text="A headstrong sailor is shipwrecked alone on a tropical island.")
    cands = [Candidate(whale, 1.0, Evidence(**shared)), Candidate(island, 0.9, Evidence(**shared))]
    reasons = evidence_reasons(cands, "zh")
    assert reasons["b2"] == "「A headstrong sailor is shipwrecked alone on a tropical island」，它与你喜欢的《Twenty Thousand Leagues Under the Seas》相近。"
    assert reasons["b1"].startswith("「A young sailor signs aboard a whaling ship whose one-legged captain is bent on hunting down the white whale」，它")


@pytest.mark.parametrize("text, language, expected", [
    ("A dog is stolen from California and sold as a sled dog in the Klondike gold rush, where he must learn the harsh rules.",
     "en", "A dog is stolen from California and sold as a sled dog in the Klondike gold rush"),  # where a clause starts
    ("Short and sweet.", "en", "Short and sweet"),
    ("One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen "
     "nineteen twenty twenty-one.", "en", None),  # no clause starts within the limit: no cut phrase
    ("徐志摩回忆在剑桥的日子：康河上撑船，骑车在乡间小路上看夕阳。", "zh", "徐志摩回忆在剑桥的日子"),
    ("An English description.", "zh", None),  # a Chinese reply does not open with English
])
def test_a_hook_taken_from_the_description_is_a_whole_clause(text, language, expected):
    from assistant.explain import extracted_hook

    assert extracted_hook(Item(id="x", title="X", text=text), language) == expected


def test_a_description_that_opens_with_a_quotation_gives_a_hook_without_a_stray_quote():
    from assistant.explain import extracted_hook, hook_reason

    item = Item(id="z", title="故乡", text="“我”冒着严寒回到阔别二十年的故乡，见到儿时伙伴闰土。")
    hook = extracted_hook(item, "zh")
    assert hook == "我冒着严寒回到阔别二十年的故乡"
    assert hook_reason(hook, Candidate(item, 1.0, Evidence(shared_categories=["乡土"])), "zh").startswith("我冒着严寒")


@pytest.mark.parametrize("signals, fact", [({"era": 1.0}, "is from the years you mentioned"),
                                            ({"category": 1.0}, "is of a kind you mentioned")])
def test_a_hook_joined_with_what_the_user_said_passes_the_checks(signals, fact):
    """"I like old books" with no other words: the hook's evidence fact is the era said, which the
    checks accept although nothing was asked in words (it does not claim to be what was asked)."""
    emma = Candidate(Item("e", "Emma", text="A young woman appoints herself matchmaker for her small village.",
                          categories=["Romance"], year=1815), 1.0, Evidence(signals={**signals, "popularity": 0.3}))
    reason = hook_reason("A young woman appoints herself matchmaker for her small village", emma, "en")
    assert reason.endswith(fact + ".")
    assert check_reason(reason, emma, KNOWN, "")
    unsaid = Candidate(emma.item, 1.0, Evidence(signals={"popularity": 0.3}))
    assert not check_reason(reason, unsaid, KNOWN, "")  # nothing of the kind was said: a false claim
