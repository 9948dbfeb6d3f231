"""Grounding checks: does a generated reason claim only what we know about the item and the user?

A reason that names another title, a number or a name we cannot trace, copies a prompt example,
or says the user liked something they did not, has problems; the explain step then replaces it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Collection, Iterable, Sequence

from assistant import claims
from assistant.claims import Liked, Support, content_words, liked_claim_problems, strip_denials, unsupported_words
from assistant.evidence import evidence_facts, is_chinese
from retrieval.records import Candidate

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 300
# Words that may be capitalised mid-sentence without being a claim about the world.
_FREE_WORDS = {"i", "you", "your", "it", "its", "this", "if", "and", "a", "an", "the", "like", "also", "both"}
# Words any recommendation may use; they claim nothing about the item.
_GENERIC_WORDS = set(
    "that with from they them their these those which what where when have this will would could should "
    "just more most very much such into about than then also only other another same like likes liked enjoy "
    "enjoyed love loved favourite favourites favorite favorites pick picks list item items title titles "
    "film films movie movies book books read story stories tale classic classics great good perfect fans "
    "similar asked request recommended recommendation recommendations choice choices here both mostly mainly "
    "some many three four five several selection".split()
)
_CJK = re.compile(r"[\u3400-\u9fff]")
# "just as you asked", "what you were looking for", "符合你的要求": a claim that the request is met.
_ASKED = re.compile(r"\byou(?:\s+were)?\s+(?:asked|requested|wanted|looking for)\b|\byour request\b|要求|你想要", re.IGNORECASE)




def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[^\W\d_]+", text)}


def _year_forms(years: Iterable[int | None]) -> set[str]:
    forms: set[str] = set()
    for year in years:
        if year is None:
            continue
        decade = year // 10 * 10
        forms |= {str(year), str(year)[-2:], str(decade), str(decade)[-2:]}
    return forms


def _title_forms(title: str) -> list[str]:
    """'Godfather, The' (MovieLens style) is also written 'The Godfather'."""
    forms = [title]
    match = re.match(r"^(.*), (The|A|An)$", title)
    if match:
        forms.append(f"{match.group(2)} {match.group(1)}")
    return forms


NUMBER_WORDS = {w: n for n, w in enumerate("_ _ two three four five six seven eight nine ten eleven twelve".split()) if n >= 2}
NUMBER_WORDS |= {"twenty": 20, "thirty": 30, "hundred": 100}  # not "one": "one of", "the one you liked"


def copies_example(text: str, template, own: Iterable[str] = ()) -> bool:
    """True when `text` repeats the template's own example text (12 letters or more of it, in
    any script) that the call's own material (`own`: the item's description, the shown items)
    does not also hold: a small model with nothing to say copies the few-shot example, which is
    about other items."""
    compact = _compact(text)
    if len(compact) < 12:
        return False
    fixed = template.template or " ".join(m.content for m in template.messages or [])
    fixed = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", " ", fixed)  # the per-call values are not examples
    return compact in _compact(fixed) and not any(compact in _compact(t) for t in own if t)


def _compact(text: str) -> str:
    """Letters and digits only, lowercased: "A crew, hunted!" and "a crew hunted" compare equal."""
    return re.sub(r"[\W_]+", "", text.lower())


def grounding_problems(
    text: str,
    *,
    allowed_texts: Iterable[str],
    allowed_titles: Iterable[str],
    known_titles: Collection[str] = (),
    years: Iterable[int | None] = (),
    foreign_words: Collection[str] = (),
    min_overlap: float = 0.0,
) -> list[str]:
    """What in `text` cannot be traced to the allowed facts: empty, looping, other titles, numbers, names.

    `foreign_words` (e.g. other items' categories) may appear only if the allowed facts contain
    them; `min_overlap` is the share of the text's content words that must come from those facts.
    """
    stripped = text.strip()
    if len(stripped) < 3:
        return ["empty"]
    words = re.findall(r"\w+", stripped.lower())
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    if len(stripped) > MAX_REASON_CHARS or (grams and grams.most_common(1)[0][1] > 1):
        return ["loops or rambles"]
    problems: list[str] = []
    allowed_titles = [f for t in allowed_titles if t for f in _title_forms(t)]
    allowed_texts = list(allowed_texts) + allowed_titles
    allowed_blob = " ".join(allowed_texts)
    allowed_lower = allowed_blob.lower()
    # Cut the allowed titles out first so "The Godfather" inside "The Godfather Part II" is not flagged.
    rest = stripped
    for title in sorted(allowed_titles, key=len, reverse=True):
        rest = rest.replace(title, " ")
    for title in known_titles:
        for form in _title_forms(title):
            if len(form) >= 4 and form in rest and form.lower() not in allowed_lower:
                if re.search(r"(?<!\w)" + re.escape(form) + r"(?!\w)", rest):
                    problems.append(f"names another title: {form}")
                    rest = rest.replace(form, " ")  # reported once, not again as a name
    for quoted in re.findall(r"《([^》]+)》", rest):
        if quoted.strip() and quoted.lower() not in allowed_lower:
            problems.append(f"names a title not in the evidence: {quoted}")
    allowed_numbers = set(re.findall(r"\d+", allowed_blob)) | _year_forms(years)
    for number in re.findall(r"\d+", rest):
        if number not in allowed_numbers:
            problems.append(f"mentions a number not in the evidence: {number}")
    # Spelled-out counts claim as much as digits: "three novels" about a list of five.
    allowed_words = _words(allowed_blob)
    for word in re.findall(r"[^\W\d_]+", rest.lower()):
        if word in NUMBER_WORDS and word not in allowed_words and str(NUMBER_WORDS[word]) not in allowed_numbers:
            problems.append(f"mentions a number not in the evidence: {word}")
    vocabulary = _words(allowed_blob) | _FREE_WORDS
    # Latin-script capitalised words that do not start a sentence are names or titles: claims to check.
    # Latin letters only: "Fiction类" in a Chinese sentence is the word Fiction, then Chinese.
    for match in re.finditer(r"(?<![.!?:;\"'“(\s])\s+([A-Z][A-Za-zÀ-ÖØ-öø-ÿ\d'’-]*(?:\s+[A-Z][A-Za-zÀ-ÖØ-öø-ÿ\d'’-]*)*)", rest):
        name = re.sub(r"['’]s$", "", match.group(1))
        if any(part.lower() not in vocabulary for part in re.findall(r"[^\W\d_]+", name)):
            problems.append(f"mentions {name!r}, which is not in the evidence")
    text_words = _words(strip_denials(rest))
    for word in sorted({w.lower() for w in foreign_words} & text_words - vocabulary):
        problems.append(f"claims {word!r}, which belongs to other items")
    content = [w for w in re.findall(r"[^\W\d_]+", rest.lower()) if len(w) > 3 and w not in _GENERIC_WORDS]
    if min_overlap and content and not _CJK.search(rest):
        share = sum(w in vocabulary for w in content) / len(content)
        if share < min_overlap:
            problems.append(f"only {share:.0%} of its words come from the facts")
    return problems


def reason_problems(
    reason: str,
    candidate: Candidate,
    known_titles: Collection[str] = (),
    request: str = "",
    other_categories: Collection[str] = (),
    liked_titles: Collection[str] = (),
    language: str = "en",
) -> list[str]:
    """Why `reason` is not grounded in the candidate's own data and evidence ([] when it is).

    `other_categories`: categories of the other candidates; naming one this item lacks is a false claim.
    `liked_titles`: the user's liked items, which a reason may say they liked besides near_history.
    Chinese reasons get the same title, name, number and liked-claim checks; their Chinese words
    are not fact-checked (see assistant.claims).
    """
    item, ev = candidate.item, candidate.evidence
    near = [t for _, t, _ in ev.near_history]
    allowed = [
        item.title, item.text, item.creator or "", " ".join(item.categories), " ".join(item.tags),
        " ".join(ev.matched_words), " ".join(ev.shared_categories), " ".join(ev.shared_creators),
        " ".join(evidence_facts(candidate)),
        # The request may be echoed, except for words that claim something about the item
        # (a category or a name) that the item does not have.
        _strip_claims(request, other_categories),
    ]
    titles = [item.title] + near + list(liked_titles)
    problems = grounding_problems(
        reason,
        allowed_texts=allowed,
        allowed_titles=titles,
        known_titles=known_titles,
        years=[item.year],
        foreign_words=_category_words(other_categories),
    )
    if is_chinese(language) and problems != ["empty"] and not _CJK.search(reason):
        problems.append("is not in Chinese, the user's language")
    stated = [t for i, t, _ in ev.near_history if ev.may_call_liked(i)]
    liked = Liked(stated + list(liked_titles),
                  [c for c in ev.shared_creators if ev.said_liked_creators is None or c in ev.said_liked_creators],
                  [c for c in ev.shared_categories if ev.said_liked_categories is None or c in ev.said_liked_categories],
                  item.title, had_titles=[t for t in near if t not in stated], had_creators=ev.shared_creators,
                  had_categories=ev.shared_categories)
    return problems + liked_claim_problems(reason, liked, list(known_titles)) + _content_problems(reason, candidate, titles, request)


def _content_problems(reason: str, candidate: Candidate, titles: Sequence[str], request: str) -> list[str]:
    """Content words nothing backs, and "just as you asked" where the item meets no request word.

    Request words back a content word only where the item matched them (ev.matched_words):
    "a dystopian story, just as you asked" is false for David Copperfield. The liked titles may
    be named, but their words say nothing about this item ("a horror story with a sea-wolf").
    """
    item, ev = candidate.item, candidate.evidence
    rest = reason
    for title in sorted((f for t in titles for f in _title_forms(t)), key=len, reverse=True):
        rest = rest.replace(title, " ")
    own = [item.title, item.text, item.creator or "", " ".join(item.categories), " ".join(item.tags).replace("-", " ")]
    evidence = [" ".join(ev.matched_words), " ".join(ev.shared_categories), " ".join(ev.shared_creators)]
    evidence += [fact for fact in evidence_facts(candidate) if not fact.startswith("you liked ")]
    problems = []
    unsupported = unsupported_words(rest, Support.of(own + evidence))
    if len(unsupported) > claims.MAX_UNSUPPORTED:
        problems.append(f"says {', '.join(unsupported)}: found neither in the item's data nor in the evidence")
    if _ASKED.search(reason) and not ev.matched_words:
        if not request.strip():
            problems.append("says it is what you asked for, but nothing was asked")
        elif not any(Support.of(own).covers(w) for w in content_words(request)):
            problems.append("says it is what you asked for, but it matches none of the request's words")
    return problems


def check_reason(
    reason: str,
    candidate: Candidate,
    known_titles: Collection[str] = (),
    request: str = "",
    other_categories: Collection[str] = (),
    liked_titles: Collection[str] = (),
    language: str = "en",
) -> bool:
    """True when the reason names only the item, its evidence titles and facts found in them."""
    return not reason_problems(reason, candidate, known_titles, request, other_categories, liked_titles, language)


def _strip_claims(request: str, categories: Iterable[str]) -> str:
    claims = _category_words(categories)
    return " ".join(w for w in re.findall(r"\w+", request) if w.lower() not in claims and not w[:1].isupper())


def _category_words(categories: Iterable[str]) -> set[str]:
    return {w for cat in categories for w in _words(cat)} - _GENERIC_WORDS


