"""Linking titles people write to catalog items, with what they said about them; one work, one id."""

from dataclasses import dataclass

import pytest

from retrieval.comention import CoMentionModel
from retrieval.records import Event
from retrieval.titles import TitleIndex, Works, normalize_title


@dataclass
class Film:
    id: str
    title: str
    year: int | None


FILMS = [
    Film("it17", "It", 2017), Film("it90", "It", 1990), Film("xm", "X-Men", None), Film("xm00", "X-Men", 2000),
    Film("st", "Super Troopers", 2001), Film("leb", "The Big Lebowski", 1998), Film("yes", "Yes", 2004),
    Film("annie", "Annie", 1982), Film("about", "About Time", 2013), Film("matrix", "Matrix, The", 1999),
    Film("mis", "Les Misérables", 2012), Film("emma", "Emma", 1996), Film("ateam", "The A-Team", 2010),
    Film("tj", "Tom & Jerry", 1992), Film("hlm", "红楼梦", None),
]


@pytest.fixture(scope="module")
def index():
    return TitleIndex(FILMS)


@pytest.mark.parametrize("text,expected", [
    ("I liked It (2017) but It (1990) was better", [("it17", 2017, "liked"), ("it90", 1990, "neutral")]),
    ("I like action movies like X-Men (2000)", [("xm00", 2000, "liked")]),  # the film with that year first
    ("i watched the big lebowski", [("leb", None, "seen")]),  # lower case, no year: rare words still link
    ("Yes! that is a freaky one", []),  # a one-word title at a sentence start is a word
    ("I have seen Annie but it was sort of meh", [("annie", None, "disliked")]),  # a verdict after "but"
    ("it is about time we went", []),  # common words only, not in title case
    ("Have you seen About Time? it is good", [("about", None, "seen")]),
    ("I loved the matrix and Les Miserables (2012)", [("matrix", None, "liked"), ("mis", 2012, "liked")]),
    ("emma was fine", []),
    ("I loved Emma", [("emma", None, "liked")]),
    ("saw the a-team yesterday", [("ateam", None, "seen")]),  # a key that starts with an article after one is dropped
    ("Tom & Jerry (1992) was awful", [("tj", 1992, "disliked")]),
    ("我很喜欢红楼梦，还有类似的吗", [("hlm", None, "liked")]),  # Chinese titles inside running text
    ("It (2003) is not in the catalog", []),  # a year that matches no film of that title: no guess
])
def test_titles_are_linked_with_year_and_stance(index, text, expected):
    got = [(m.item_id, m.year, m.stance) for m in index.find(text)]
    assert got == expected


def test_words_that_describe_items_are_a_request_not_a_title():
    films = [Film("scary", "Scary Movie", 2000), Film("hh", "A Haunted House", 2013), Film("knight", "The Dark Knight", 2008)]
    index = TitleIndex(films)
    index.describing.update({"scary"})  # a category word (the vocabulary names them)
    for n in range(20):  # "haunted" and "dark" are in the descriptions of many items
        index.describe(f"A haunted manor and its dark secret, number {n}.")
    index.describe("A knight in armour.")

    def found(text):
        return [m.item_id for m in index.find(text)]

    assert found("I want a scary movie with ghosts or a haunted house") == []
    assert found("My kids loved Scary Movie and A Haunted House") == ["scary", "hh"]  # title case mid-sentence
    assert found("something like scary movie") == ["scary"]  # after a cue
    assert found("a scary movie (2000) please") == ["scary"]  # with its year
    assert found("i rewatched the dark knight") == ["knight"]  # "knight" names; it describes few items


def test_describing_words_are_counted_as_title_tokens_are_read():
    """Accents folded ("Café" is the token "cafe") and category words split as titles are
    ("sci-fi" is "sci" and "fi"): else "Café Society" or "Sci-Fi High" read as names."""
    from assistant.vocabulary import CatalogVocabulary
    from retrieval.records import Item

    index = TitleIndex([Film("cafe", "Café Society", 2016)])
    for n in range(20):
        index.describe(f"A Café on a corner, and its Society of regulars, number {n}.")
    assert index.describes("cafe") and index.describes("society")
    assert [m.item_id for m in index.find("any film set in a café society?")] == []
    assert [m.item_id for m in index.find("I loved Café Society")] == ["cafe"]
    vocab = CatalogVocabulary([Item(id="s", title="Sci-Fi High", categories=["Science Fiction"])])
    assert {"sci", "fi"} <= vocab.title_index.describing


def test_one_work_under_two_ids_is_twins_and_listed_once(index):
    assert index.twins("xm00") == ["xm00", "xm"]
    works = Works()
    assert works.first("X-Men", None) and not works.first("X-Men", 2000)  # one film, its year unknown once
    assert works.first("It", 2017) and works.first("It", 1990)  # remakes stay two works
    assert not works.first("It", 2017)
    mention = index.find("like X-Men (2000)")[0]
    assert set(mention.item_ids) == {"xm00", "xm"}  # excluded under every id


@pytest.mark.parametrize("a,b", [("The Matrix", "Matrix, The"), ("Les Misérables (2012)", "les miserables"),
                                 ("Tom & Jerry", "tom and jerry")])
def test_normalize_title_agrees(a, b):
    assert normalize_title(a) == normalize_title(b)


def _events(histories: dict[str, list[str]], start: float) -> list[Event]:
    return [Event(user, "like", start + n, item) for user, items in histories.items() for n, item in enumerate(items)]


def test_comention_favours_short_and_recent_histories():
    # An old heavy rater had "a" with everything; two recent conversations named "a" with "b".
    old = _events({"rater": ["a"] + [f"x{n}" for n in range(200)]}, start=0)
    recent = _events({"chat1": ["a", "b"], "chat2": ["a", "b", "c"]}, start=400 * 86400)
    model = CoMentionModel().fit(old + recent)
    scores = model.scores(["a"], n=5)
    assert list(scores)[0] == "b"
    assert scores["b"] > scores.get("x1", 0) * 10
    trending = model.trending(3)
    assert list(trending)[:2] == ["a", "b"]  # recent and named twice; the rater's items are old


def test_comention_newest_seed_weighs_most():
    events = _events({"u1": ["a", "p"], "u2": ["a", "p"], "u3": ["b", "q"], "u4": ["b", "q"]}, start=0)
    model = CoMentionModel().fit(events)
    assert list(model.scores(["a", "b"]))[0] == "q"  # b was named last
    assert list(model.scores(["b", "a"]))[0] == "p"
    assert model.scores(["unknown"]) == {}
    assert CoMentionModel().fit([]).scores(["a"]) == {}
