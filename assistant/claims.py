"""Two claims a generated reason can make that its names and numbers do not give away.

- "which you liked", "since you read X", "你喜欢的《X》": the user liked something. That must be a
  title among the user's liked items (the evidence's near_history), a creator or category the
  evidence shares with them, never the recommended item itself.
- Content words ("a haunted house"): each must be found in the item's own data or the evidence
  (request words only where the item matched them), or be part of the plain vocabulary of
  recommending (readers, classic, enjoy...) or a tone word (warm, gritty).

Words are compared crudely: lowercased, a plural or -ed/-ing ending stripped, and two words
match when one is a prefix of the other (at least 4 letters) or they share their first 6.
Chinese text is not fact-checked word by word (a Chinese sentence about an English catalog
shares no characters with it); its titles, names and liked-claims are.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

# Reject a reason with more content words than this that nothing backs. On the 167 labelled
# reasons in tests/reasons_labelled.json: 0 gives 3 false rejects and 2 false accepts, 1 gives
# 1 and 18, 2 gives 1 and 24 (`python -m evaluation.reason_check score`).
MAX_UNSUPPORTED = 0

STOP_WORDS = frozenset(
    """a an the and or but nor of to in on at by for with from into onto about over under after
    before between through during without within as than then so such that this these those which
    who whom whose what when where why how it its itself he she they them their his her him we you
    your yours i me my our us is are was were be been being am has have had having do does did will
    would shall should can could may might must not no yes very more most much many some any all each
    every both either neither other others another same also too just only even still again ever
    never always often once here there now well quite rather really s t ll ve re d""".split()
)
# Recommending itself: words that describe the pick or the reader, not the item's content.
EXPLAIN_WORDS = frozenset(
    """like likes liked liking similar similarly alike fan fans reader readers viewer viewers audience
    people person user users taste tastes story stories tale tales book books novel novels film films
    movie movies read reads reading watch watched watching work works writing written author authors
    writer writers enjoy enjoys enjoyed enjoying enjoyable love loves loved lover lovers fond
    favourite favourites favorite favorites tone style mood feel feeling classic classics great good
    fine perfect wonderful delightful engaging compelling fascinating interesting fun charming
    memorable beloved timeless popular pick picks choice choices recommend recommended recommendation
    recommendations match matches matching request requested asked ask want wanted looking something
    anything kind sort type genre theme themes title titles item items list close closer near next
    recent recently previously already history appeal appeals suit suits fit fits worth try satisfying
    thoughtful strong solid nice lovely gripping entertaining best better ideal sure definitely
    certainly probably maybe mix blend combination touch way one ones piece pieces thing things lot
    first new old own whole example sense related characters character setting plot prose narrative
    atmosphere voice pace twist
    get gets got make makes made take takes give gives go goes come comes find finds found follow
    follows tell tells told show shows keep keeps set turn turns bring brings offer offers explore
    explores feature features include includes deliver delivers capture captures far long little
    big away back catalog catalogue collection""".split()
)
# A reader's impression of the tone, not a checkable fact: "a warm comedy", "a gritty crime drama".
TONE_WORDS = frozenset(
    """warm gritty dark gentle moving tender quiet cosy cozy bleak heartfelt uplifting sweeping epic
    lyrical poignant powerful atmospheric brooding playful light lighthearted vivid tense thrilling
    exciting elegant sharp smart""".split()
)
# Phrases that name a genre with plain words: "a love story" claims Romance as much as "romance" does.
PHRASES = {"love story": "romance", "love stories": "romances", "ghost story": "ghost", "ghost stories": "ghosts"}
# Genre words and their everyday paraphrases: "a scary story" is backed by the category Horror.
GLOSSES = {
    "poetry": "poem poet verse", "comedy": "comic funny humour humor humorous", "horror": "scary frightening creepy chilling",
    "mystery": "detective whodunit sleuth puzzle", "romance": "romantic love", "science fiction": "sci-fi scifi",
    "children": "child kid young", "crime": "criminal", "thriller": "suspense tense", "fantasy": "magic magical",
    "drama": "dramatic", "philosophy": "philosophical", "biography": "life memoir", "travel": "journey voyage",
    "history": "historical", "satire": "satirical", "tragedy": "tragic", "religion": "religious spiritual faith",
    "war": "military", "animation": "animated cartoon", "documentary": "factual",
}
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ]+")
# "you liked", "you've read", "you have already enjoyed": past liking, the claim to check.
_EN_LIKED = re.compile(
    r"\b(?P<rel>which|that|whom|whose(?:\s+\w+){1,2})?\s*\byou(?:'ve|\s+have|\s+had)?(?:\s+(?:already|also|once|previously|really|especially))*"
    r"\s+(?P<verb>liked|enjoyed|loved|adored|admired|appreciated|read|watched|saw|rated)\b",
    re.IGNORECASE,
)
# "you like it", "you love this": says the user already knows the recommended item.
_EN_KNOWS_ITEM = re.compile(r"\byou\s+(?:like|love|enjoy|liked|loved|enjoyed|read|watched)\s+(?:it|this)\b", re.IGNORECASE)
_ZH_LIKED = re.compile(r"你(?:曾经|曾|之前|以前|也|都|一直)?(?:喜欢|喜爱|热爱|钟爱|爱看|爱读|读过|看过|欣赏)(?:过)?的?")
_HAVING_VERBS = frozenset({"read", "watched", "saw"})  # had, not a verdict on it
_ZH_HAVING = re.compile(r"读过|看过")
_KIND_WORDS = r"(?:the\s+)?(?:books?|novels?|films?|movies?|stor(?:y|ies)|tales?|works?|poems?|essays?|writing)\s+(?:of|by)\s+|the\s+"
# Words a look-back skips to reach the thing that was liked: "close to Emma, which you liked".
_LEAD_IN = re.compile(r"^(?:(?:it|is|was|just|like|as|close|similar|near|to|in|of|on|with|about|and|also|much|the same)\b\s*)+", re.I)
_ABOUT_ITEM = re.compile(r"^(?:a|an|this|it|that)\b", re.I)


@functools.lru_cache(maxsize=1 << 16)  # every reason check stems the item's whole text again
def stem(word: str) -> str:
    """lowercase; ghosts -> ghost, stories -> story, spies -> spy, haunted -> haunt, sailing -> sail."""
    w = word.lower().replace("’", "'")
    w = re.sub(r"'s?$", "", w)
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", "e"), ("s", "")):
        root = 2 if suffix == "ies" else 3  # spies -> spy, tries -> try (not "trie", which "trying" never meets)
        if w.endswith(suffix) and len(w) - len(suffix) >= root and not (suffix == "s" and w.endswith("ss")):
            return w[: -len(suffix)] + repl
    return w


def inflections(text: str) -> list[str]:
    """The other forms of the Latin-script words of `text` that `stem` takes for the same word
    (families: family; orphaned: orphan, orphans, orphaning; ghost: ghosts), lowercase, for words of
    four letters or more:
    what a phrase drawn from `text` may say without claiming anything new."""
    forms: set[str] = set()
    for word in _LATIN_WORD.findall(text):
        if len(word) < 4:
            continue
        word, base = word.lower(), stem(word)
        forms.add(base)
        if word.endswith(("ches", "shes", "sses", "xes")):  # witches: witch (stem keeps "witche")
            forms.add(word[:-2])
        if base.endswith("y"):
            forms.add(base[:-1] + "ies")
        elif base.endswith(("s", "x", "ch", "sh")):
            forms.add(base + "es")
        else:
            forms.add(base + "s")
        if base != word and word.endswith(("ed", "ing")):  # orphaned, sailing: the verb's forms too
            forms |= {base + "ed", base + "ing"} if not base.endswith("e") else {base + "d", base[:-1] + "ing"}
    return sorted(forms - {w.lower() for w in _LATIN_WORD.findall(text)})


@dataclass
class Support:
    """The stems a reason may draw its content words from."""

    stems: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, texts: Iterable[str]) -> "Support":
        blob = " ".join(t for t in texts if t)
        lower = blob.lower()
        blob += "".join(f" {words}" for genre, words in GLOSSES.items() if re.search(rf"\b{genre}\b", lower))
        return cls({stem(w) for w in _LATIN_WORD.findall(blob)})

    def covers(self, word: str) -> bool:
        s = stem(word)
        if s in self.stems:
            return True
        for known in self.stems:
            short, long = (s, known) if len(s) <= len(known) else (known, s)
            if (len(short) >= 4 and long.startswith(short)) or (len(short) >= 6 and long[:6] == short[:6]):
                return True
        return False


def content_words(text: str) -> list[str]:
    """The Latin-script words of `text` that could claim something: not grammar, not recommending."""
    for phrase, word in PHRASES.items():
        text = re.sub(rf"\b{phrase}\b", word, text, flags=re.IGNORECASE)
    return [
        w for w in _LATIN_WORD.findall(text)
        if len(w) > 2 and w.lower() not in _NOT_CONTENT and stem(w) not in _NOT_CONTENT
    ]


_NOT_CONTENT = STOP_WORDS | EXPLAIN_WORDS | TONE_WORDS  # once, not per word


def strip_denials(text: str) -> str:
    """`text` without its "not a ..." phrases (up to the next punctuation)."""
    return re.sub(r"\bnot\s+[^,.;:!?]*", " ", text, flags=re.IGNORECASE)


def unsupported_words(text: str, support: Support) -> list[str]:
    """Content words of `text` (in order, once each) that `support` does not cover.

    What is denied is not claimed: "a romance, not a crime story" says nothing false about crime.
    """
    out: list[str] = []
    for word in content_words(strip_denials(text)):
        if word.lower() not in out and not support.covers(word):
            out.append(word.lower())
    return out


# Liked-claims ------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


@dataclass
class Liked:
    """What the user may be said to have liked, what they only had, and the item that must not be."""

    titles: Sequence[str]  # near_history titles and the user's liked items
    creators: Sequence[str] = ()  # shared with the user's history
    categories: Sequence[str] = ()  # shared with the user's history
    item_title: str = ""
    # Had but not said to be liked (viewed, bought, said seen): "you read X" is true of them,
    # "you loved X" is not.
    had_titles: Sequence[str] = ()
    had_creators: Sequence[str] = ()
    had_categories: Sequence[str] = ()

    def verdict(self, referent: str, having: bool = False) -> str | None:
        """None when `referent` is something liked (with `having`, the verb only says the user
        had it: read, watched, saw); else what is wrong with it."""
        ref = _norm(referent)
        if not ref:
            return "says you liked something without saying what"

        def names(titles: Sequence[str]) -> bool:
            return any(ref == _norm(t) or (len(ref) >= 4 and ref in _norm(t)) for t in titles)

        if names(self.titles) or (having and names(self.had_titles)):
            return None
        if self.item_title and _norm(self.item_title) in ref:
            return f"says you liked {self.item_title}, the recommended item itself"
        if not having and names(self.had_titles):
            return f"says you liked {referent.strip()!r}, which you only had (no like or rating said so)"
        words = set(ref.split())
        for name in list(self.creators) + (list(self.had_creators) if having else []):
            # "Austen's novels" names Jane Austen; initials and particles ("H. G.", "de") do not.
            if {w for w in _norm(name).split() if len(w) > 2 and w not in ("the", "von", "van")} & words:
                return None
        if not _ABOUT_ITEM.match(referent.strip()):
            for cat in list(self.categories) + (list(self.had_categories) if having else []):
                if {stem(w) for w in _norm(cat).split()} <= {stem(w) for w in words}:
                    return None
        return f"says you liked {referent.strip()!r}, which is not among your liked items"


def liked_claim_problems(text: str, liked: Liked, titles: Sequence[str] = ()) -> list[str]:
    """Problems with every "you liked ..." claim in `text`; `titles` are the catalog titles to spot."""
    # Spot titles first (longest first) so the commas inside "Billy Budd, Sailor" split nothing.
    spots: list[str] = []
    marked, lower = text, text.lower()
    named = {t for t in list(titles) + list(liked.titles) + [liked.item_title] if len(t) >= 2 and t.lower() in lower}
    for title in sorted(named, key=len, reverse=True):
        # Case matters for one-word titles ("We", "Nature"), not for longer ones ("the time machine").
        flags = re.IGNORECASE if " " in title.strip() and len(title) >= 8 else 0
        pattern = re.compile(r"(?<!\w)" + re.escape(title) + r"(?!\w)", flags)
        if pattern.search(marked):
            marked = pattern.sub(lambda m: f"\x00{len(spots)}\x00", marked)
            spots.append(title)
    problems = [f"says you already like the recommended item ({m.group(0)!r})" for m in _EN_KNOWS_ITEM.finditer(marked)]
    referents: list[tuple[str, bool]] = []  # (what, whether the verb only says the user had it)
    for match in _EN_LIKED.finditer(marked):
        # A title right after the verb is what was liked ("since you read Emma"); otherwise the
        # phrase before it ("close to Emma, which you liked").
        having = match.group("verb").lower() in _HAVING_VERBS
        referents.append((_after(marked[match.end() :]) or _before(marked[: match.start()]), having))
    for match in _ZH_LIKED.finditer(marked):
        rest = marked[match.end() :]
        named = re.match(r"\s*(?:《[^》]+》|\x00\d+\x00)(?:\s*[、和与及,，]?\s*(?:《[^》]+》|\x00\d+\x00))*", rest)
        name = re.match(r"\s*[A-Z][\w.'’-]*(?:\s+[A-Z][\w.'’-]*)*", rest)
        if named or name:  # otherwise a general taste (你喜欢的作品): nothing to look up
            referents.append(((named or name).group(0), bool(_ZH_HAVING.search(match.group(0)))))
    for referent, having in referents:
        marks = re.findall(r"\x00(\d+)\x00", referent)
        parts = [spots[int(i)] for i in marks] if marks else re.findall(r"《([^》]+)》", referent) or [referent]
        problems += [v for v in (liked.verdict(part, having) for part in parts) if v]
    return list(dict.fromkeys(problems))


def _after(rest: str) -> str:
    """The title or name right after "you liked", if one follows."""
    rest = re.sub(r"^\s*(?:" + _KIND_WORDS + r")?", "", rest, flags=re.I)
    match = re.match(r"\s*((?:\x00\d+\x00|[A-Z][\w.'’-]*(?:\s+(?:of|the|and|de|a)?\s*[A-Z][\w.'’-]*)*)(?:\s*(?:,|and|or)\s*(?:\x00\d+\x00))*)", rest)
    return match.group(1) if match else ""


def _before(head: str) -> str:
    """What "which you liked" points back at: the phrase before it, up to the previous comma."""
    parts = re.split(r"[,;:.!?()—]", head)
    while parts and not parts[-1].strip():
        parts.pop()
    phrase = parts.pop().strip() if parts else ""
    # "a story, in which you liked ...": a bare preposition points one phrase further back.
    if re.fullmatch(r"(?:in|of|on|for|with|about|by)?", phrase.lower()) and parts:
        phrase = parts.pop().strip()
    titled = re.findall(r"\x00\d+\x00(?:\s*(?:,|and|or|&)\s*\x00\d+\x00)*", phrase)
    return titled[-1] if titled else _LEAD_IN.sub("", phrase)
