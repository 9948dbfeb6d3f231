"""Generations held to given words (assistant/llm/words.py) and the word forms a hook may use."""

from __future__ import annotations

import pytest

from assistant.claims import Support, inflections
from assistant.llm.words import AllowedTokens, word_forms


def test_a_words_forms_are_its_spellings_with_and_without_a_space_and_chinese_by_character():
    forms = set(word_forms("An orphaned son, raised by apes. 灯塔看守人"))
    assert {"orphaned", " orphaned", "Orphaned", " Orphaned", "an", " an", "An", " An"} <= forms
    assert {"灯塔看守人", " 灯塔看守人", "灯", " 灯", "人"} <= forms
    assert {",", ".", ";"} <= forms
    assert "ship" not in forms and " ship" not in forms


class WordTokenizer:
    """A tokenizer with one id per distinct text it is asked about, counting its calls."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.calls = 0

    def __call__(self, text: str) -> list[int]:
        self.calls += 1
        return [self.ids.setdefault(text, len(self.ids) + 10)]


def test_allowed_tokens_are_the_words_the_stops_and_every_token_holding_a_stop():
    tokenize = WordTokenizer()
    allowed = AllowedTokens(tokenize, always=[1], containing=lambda stop: [5, 6] if stop == "\n" else [])
    ids = allowed.ids("a devoted engineer", ["\n"])
    assert list(ids) == sorted(ids)
    assert {1, 5, 6, tokenize.ids[" devoted"], tokenize.ids["\n"]} <= set(ids.tolist())
    assert " dedicated" not in tokenize.ids
    calls = tokenize.calls
    assert allowed.ids("a devoted engineer", ["\n"]) is ids and tokenize.calls == calls, "kept, not tokenized again"


def test_allowed_tokens_keep_the_most_recently_used_texts_only():
    allowed = AllowedTokens(WordTokenizer(), limit=2)
    first = allowed.ids("one")
    allowed.ids("two")
    assert allowed.ids("one") is first
    allowed.ids("three")  # "two" was the least recently used
    assert allowed.ids("one") is first and len(allowed._kept) == 2


@pytest.mark.parametrize("text, forms, not_forms", [
    ("Several aristocratic families", {"family"}, {"familyed", "families"}),
    ("An orphaned son", {"orphan", "orphans", "orphaning"}, {"soned"}),
    ("a ghost story", {"ghosts", "stories"}, {"ghost", "thing"}),
    ("the witches", {"witch"}, set()),
])
def test_inflections_are_the_forms_the_check_takes_for_the_same_word(text, forms, not_forms):
    found = set(inflections(text))
    assert forms <= found and not (not_forms & found), found
    assert all(Support.of([text]).covers(form) for form in found), "the check takes each for a word of the text"
