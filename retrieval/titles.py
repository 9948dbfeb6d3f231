"""Titles named in what people write, linked to catalog items, with what was said about them.

People name films and books loosely: "The Matrix", "matrix (1999)", "Matrix, The", "It (2017)",
"i watched the big lebowski". The index links word n-grams of a message to normalised catalog
titles, longest first, so a title's words never also count as a shorter title. A year right after
a title ("It (2017)") picks the right film among remakes and lets even a two-letter title link.
Without a year, a title must not be everyday words that happen to match: one word counts only
when capitalised mid-sentence or after a cue ("loved Emma"), and a title made only of common words
("About Time", "What If") only when written in title case. So does a title made only of common and
describing words ("a scary movie", "a haunted house", "ghost story"): words that say what items are
about, either the catalog's own category words or words found in the descriptions of many of its
items (`describe`). "I want a scary movie" asks for horror; "I loved Scary Movie" names a film.

A catalog often holds one film twice (with and without its year): `same_year` is the one rule
for that, used by `twins` (a named film is excluded under every id) and by `Works` (a list never
shows it twice).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

_ARTICLES = {"the", "a", "an", "le", "la", "les", "der", "die", "das", "el"}
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|&", re.UNICODE)
_DESCRIPTION_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)  # counted for `describes`
_YEAR = re.compile(r"1[89]\d\d|20[0-4]\d")
_TITLE_YEAR = re.compile(r"^(.*?)\s*[(（]\s*(\d{4})\s*[)）]\s*$")
MAX_TITLE_WORDS = 12
# A word in the descriptions of at least this many items, and this share of them, describes items
# ("haunted" in 21 of ReDial's 6,924 films, "ghost" in 23; "knight" in 13, "lebowski" in none).
DESCRIBING_MIN_ITEMS = 15
DESCRIBING_SHARE = 0.002
# Words too common to make a title on their own; a title of only these needs title case.
COMMON = frozenset(
    """a about above after again against all almost also always am an and another any anything are around as at away
    back bad be because been before being best better between big black blue boy boys but by call can come could
    cut day days dead did do does doing done down dream each end even ever every eyes face fall family far fast
    few find first for found free friend friends from fun funny game get girl girls give go god going gone good
    got great had half hands happy hard has have he heart her here high him his home hot house how i if in inside
    into is it its just keep kid kids kind know last late left let life light like little live long look lost love
    loved made make man many may me men might mind more most movie movies much must my name never new next night
    no not nothing now of off old on once one only open or other our out over part people play please point
    real red right road room run said same saw say school see seen she should show side since so some something
    soon start still stop story such sure take tell than that the their them then there these they thing things
    think this those time to together tonight too top true try turn two under until up us very want war was watch
    watched way we well went were what when where which while white who why wild will with without woman women
    world would yes yet you young your""".split()
)
_CUE = re.compile(
    r"\b(?:like|liked|loved|enjoyed|adored|watched|seen|saw|about|similar to|hated|disliked|called|named)\s+(?:the\s+|a\s+|an\s+)?$"
)
_NEGATIVE = re.compile(
    r"\b(?:hated?|disliked?|didn'?t (?:like|enjoy|care for)|did not (?:like|enjoy)|not (?:a fan|into|my thing|for me|"
    r"that good|very good|great)|wasn'?t (?:good|great|a fan)|meh|boring|awful|terrible|overrated|worst|"
    r"couldn'?t (?:stand|get into)|too (?:scary|slow|long|violent|sad))\b|不喜欢|讨厌|无聊|难看"
)
_POSITIVE = re.compile(
    r"\b(?:lov(?:e|ed|es)|lik(?:e|ed|es)|enjoy(?:ed|s)?|adored?|favou?rites?|great|awesome|amazing|fantastic|"
    r"best|good|fun|funny|excellent|brilliant|classic)\b|喜欢|爱看|好看|最爱"
)
_SEEN = re.compile(r"\b(?:seen|watched|saw|read|finished)\b|看过|读过")
_CLAUSE = re.compile(r"[.!?;\n]|\bbut\b|，|。|！|？|；")


@dataclass(frozen=True)
class Mention:
    """One title named in a text: the item (and its twins) and what was said about it."""

    item_ids: tuple[str, ...]  # the best match first, then the same work under other ids
    text: str  # the words as written
    start: int  # character offsets in the text
    end: int
    year: int | None  # the year written after the title, if any
    stance: str  # "liked", "disliked", "seen" or "neutral"

    @property
    def item_id(self) -> str:
        return self.item_ids[0]


@functools.lru_cache(maxsize=1 << 16)  # candidates dedupe works by title on every request
def normalize_title(text: str) -> str:
    """Forgiving title key: case, accents, punctuation, leading article and a trailing year ignored."""
    words = [w for w, _, _ in _words(re.sub(r"\(\s*\d{4}\s*\)", " ", text))]
    if words and words[0] in _ARTICLES:
        words = words[1:]
    if len(words) > 1 and _YEAR.fullmatch(words[-1]):
        words = words[:-1]
    # "Movie, The" forms (MovieLens) put the article last.
    if len(words) > 1 and words[-1] in _ARTICLES:
        words = words[:-1]
    return " ".join(words)


def _fold(text: str) -> str:
    if text.isascii():  # nothing to decompose: the same result, several times faster
        return text.lower().replace("&", " and ")
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower().replace("&", " and ")


def _words(text: str) -> list[tuple[str, int, int]]:
    """(folded word, start, end) with offsets into `text`; apostrophes inside a word are dropped."""
    out = []
    for match in _WORD.finditer(text):
        folded = _fold(match.group(0)).replace("'", "").replace("’", "")
        for part in folded.split():  # "&" became " and "
            out.append((part, match.start(), match.end()))
    return out


class TitleIndex:
    """Normalised catalog titles -> item ids, and the linking of a text's words to them."""

    def __init__(self, items: Iterable = ()):
        self.ids_of: dict[str, list[str]] = {}
        self.key_of: dict[str, str] = {}
        self.year_of: dict[str, int | None] = {}
        self.longest = 1
        self.cjk_keys: set[str] = set()  # written without spaces: found as substrings
        # Words that say what items are about (see the module docstring): named ones, and how many
        # items' descriptions hold each word.
        self.describing: set[str] = set()
        self._described: dict[str, int] = {}
        self._descriptions = 0
        for item in items:
            self.add(item.id, item.title, item.year)

    def add(self, item_id: str, title: str, year: int | None) -> None:
        key = normalize_title(title)
        if not key:
            return
        old = self.key_of.get(item_id)
        if old is not None and item_id in self.ids_of.get(old, []):
            self.ids_of[old].remove(item_id)
        self.ids_of.setdefault(key, []).append(item_id)
        self.key_of[item_id] = key
        if _has_cjk(key) and len(key.replace(" ", "")) >= 2:
            self.cjk_keys.add(key)
        self.year_of[item_id] = year
        self.longest = min(MAX_TITLE_WORDS, max(self.longest, key.count(" ") + 1))

    def describe(self, text: str) -> None:
        """Count one item's description (text, categories, tags): words many items hold describe them."""
        self._descriptions += 1
        counts = self._described
        for word in set(_DESCRIPTION_WORD.findall(_fold(text))):  # folded as title tokens are ("café" is "cafe")
            counts[word] = counts.get(word, 0) + 1

    def describes(self, word: str) -> bool:
        """Is this a word that says what items are about, rather than a word of a name?"""
        if word in self.describing:
            return True
        return self._described.get(word, 0) >= max(DESCRIBING_MIN_ITEMS, DESCRIBING_SHARE * self._descriptions)

    def twins(self, item_id: str) -> list[str]:
        """The ids of the same work: same title, and the same year or a year unknown on one side."""
        key = self.key_of.get(item_id)
        if key is None:
            return [item_id]
        year = self.year_of.get(item_id)
        same = [i for i in self.ids_of[key] if same_year(year, self.year_of.get(i))]
        return [item_id] + [i for i in same if i != item_id]

    def title_line(self, line: str) -> list[str]:
        """The ids of a line that is one title ("Title (Year)" or "Title", as a list of proposals
        writes them): the whole line must be the title; a year picks among remakes when it can."""
        match = _TITLE_YEAR.match(line)
        title, year = (match.group(1), int(match.group(2))) if match else (line, None)
        ids = self.ids_of.get(normalize_title(title), [])
        if ids and year is not None:
            ids = _by_year(ids, year, self.year_of) or ids
        return self._with_twins(ids) if ids else []

    def find(self, text: str) -> list[Mention]:
        """Every title named in the text, in order, longest match first, each with its stance."""
        tokens = _words(text)
        mentions: list[Mention] = []
        i = 0
        while i < len(tokens):
            hit = self._match_at(text, tokens, i)
            if hit is None:
                i += 1
                continue
            ids, end_token, year = hit
            start, end = tokens[i][1], tokens[end_token - 1][2]
            if year is not None:
                close = text.find(")", end)
                end = close + 1 if 0 <= close - end <= 8 else end
            mentions.append(Mention(tuple(ids), text[start:end], start, end, year, _stance(text, start, end)))
            i = end_token + (1 if year is not None else 0)
        if self.cjk_keys and any(_has_cjk(ch) for ch in text):
            mentions = sorted(mentions + self._find_cjk(text, mentions), key=lambda m: m.start)
        return mentions

    def _find_cjk(self, text: str, taken: list[Mention]) -> list[Mention]:
        """Chinese titles inside running text ("我喜欢红楼梦"), longest first, no overlaps."""
        plain = _fold(text)
        spans = [(m.start, m.end) for m in taken]
        found = []
        for key in sorted(self.cjk_keys, key=len, reverse=True):
            needle = key.replace(" ", "")
            start = plain.find(needle)
            while start >= 0:
                end = start + len(needle)
                if not any(a < end and start < b for a, b in spans):
                    spans.append((start, end))
                    found.append(Mention(tuple(self._with_twins(self.ids_of[key])), text[start:end], start, end, None,
                                         _stance(text, start, end)))
                start = plain.find(needle, end)
        return found

    def _match_at(self, text: str, tokens, i: int) -> tuple[list[str], int, int | None] | None:
        for n in range(min(self.longest + 1, len(tokens) - i), 0, -1):
            words = [w for w, _, _ in tokens[i : i + n]]
            key = " ".join(words)
            candidates = self.ids_of.get(key)
            if not candidates:
                continue
            year = _year_after(text, tokens, i + n)
            if year is not None:
                ids = _by_year(candidates, year, self.year_of)
                if ids:
                    return self._with_twins(ids), i + n, year
            if self._plausible_without_year(text, tokens, i, n):
                return self._with_twins(candidates), i + n, None
        return None

    def _with_twins(self, ids: list[str]) -> list[str]:
        out = list(ids)
        for item_id in ids:
            out += [t for t in self.twins(item_id) if t not in out]
        return out

    def _plausible_without_year(self, text: str, tokens, i: int, n: int) -> bool:
        words = [w for w, _, _ in tokens[i : i + n]]
        raw = [text[s:e] for _, s, e in tokens[i : i + n]]
        sentence_start = i == 0 or bool(re.search(r"[.!?\n]\s*$", text[: tokens[i][1]]))
        cued = bool(_CUE.search(_fold(text[max(0, tokens[i][1] - 24) : tokens[i][1]])))
        if any(_has_cjk(w) for w in words):
            return len("".join(words)) >= 2
        if n == 1:
            word = raw[0]
            capitalised = word[:1].isupper() and not word.isupper() or (word.isupper() and len(word) > 1)
            if len(words[0]) < 3 or words[0] in COMMON and not cued:
                return False
            return cued or (capitalised and not sentence_start)
        if all(w in COMMON for w in words):
            # "About Time" is a title; "about time" is a phrase.
            return all(r[:1].isupper() for r, w in zip(raw, words) if w not in _SMALL) and not (sentence_start and not cued and n < 3)
        if not cued and all(w in COMMON or w in _SMALL or self.describes(w) for w in words):
            # "Scary Movie" is a title; "a scary movie" is a request.
            return all(r[:1].isupper() for r, w in zip(raw, words) if w not in _SMALL) and not sentence_start
        return True


def same_year(a: int | None, b: int | None) -> bool:
    """Two entries with one title are one work when their years agree or one year is unknown."""
    return a is None or b is None or a == b


class Works:
    """Keeps one id per work in a list: `first` is False for a later id of a work already seen."""

    def __init__(self):
        self.years: dict[str, list[int | None]] = {}

    def first(self, title: str, year: int | None) -> bool:
        key = normalize_title(title)
        if not key:
            return True
        seen = self.years.setdefault(key, [])
        if any(same_year(year, other) for other in seen):
            return False
        seen.append(year)
        return True


_SMALL = frozenset("a an and at by for in of on or the to with".split())


def _has_cjk(word: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in word)


def _year_after(text: str, tokens, j: int) -> int | None:
    """A year written right after a title: "It (2017)", "It 2017"."""
    if j >= len(tokens) or not _YEAR.fullmatch(tokens[j][0]):
        return None
    between = text[tokens[j - 1][2] : tokens[j][1]]
    return int(tokens[j][0]) if re.fullmatch(r"\s*\(?\s*", between) else None


def _by_year(ids: list[str], year: int, year_of: dict) -> list[str]:
    exact = [i for i in ids if year_of.get(i) == year]
    if exact:
        return exact
    unknown = [i for i in ids if year_of.get(i) is None]
    if unknown:
        return unknown
    return [i for i in ids if abs((year_of.get(i) or 0) - year) <= 1]


def _stance(text: str, start: int, end: int) -> str:
    """What the clause around a title says about it: liked, disliked, seen or neutral."""
    before = _CLAUSE.split(text[:start])[-1]
    after = _CLAUSE.split(text[end:])[0]
    clause = _fold(before + " " + after)
    if _NEGATIVE.search(clause):
        return "disliked"
    if _POSITIVE.search(clause):
        return "liked"
    # "I have seen Annie but it was meh": a verdict may follow a "but" in the same sentence.
    if _NEGATIVE.search(_fold(re.split(r"[.!?\n。！？]", text[end:])[0])):
        return "disliked"
    if _SEEN.search(clause):
        return "seen"
    return "neutral"
