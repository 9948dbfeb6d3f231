"""Reasons and summaries: LLM-written where it stays grounded, evidence-built where it does not.

Every LLM sentence is checked against what we know (the item's own data and the retrieval
evidence); one that names another title, a number or a name we cannot trace is replaced by a
deterministic sentence built from the evidence, which is always available.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Collection, Iterable, Iterator, Sequence

from assistant import claims
from assistant.claims import Liked, Support, content_words, liked_claim_problems, strip_denials, unsupported_words
from assistant.ranking import item_line
from assistant.replies import year_text
from retrieval.records import Candidate, Item

log = logging.getLogger(__name__)

MAX_REASON_TOKENS = 60  # a base model left alone babbles; one sentence fits easily
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


def is_chinese(language: str) -> bool:
    return language.lower().startswith("zh") or language.lower() in {"chinese", "中文"}


def language_name(language: str) -> str:
    """An English name for the prompt ('Chinese' for zh, 'English' otherwise)."""
    return "Chinese" if is_chinese(language) else "English"


# Evidence-only text --------------------------------------------------------------------------


def _signal_kinds(signals: dict[str, float]) -> list[str]:
    """Map retrieval's signal names (whatever they are called) to the few ideas a reason can state."""
    kinds: list[str] = []
    for name, value in sorted(signals.items(), key=lambda kv: -kv[1]):
        if value <= 0:
            continue
        name = name.lower()
        kind = (
            "collab" if "collab" in name or name in {"cf", "als"}
            else "sequence" if "seq" in name or "next" in name or "session" in name
            else "popular" if "pop" in name
            else ""
        )
        if kind and kind not in kinds:
            kinds.append(kind)
    return kinds


def _join(words: Sequence[str], zh: bool) -> str:
    if zh:
        return "、".join(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _predicates(candidate: Candidate, zh: bool, history_first: bool = False) -> list[str]:
    """The evidence as predicates ("is close to Heat, which you liked"), the request match first
    (or, with `history_first`, the liked items the item is close to)."""
    ev = candidate.evidence
    preds: list[str] = []
    if ev.matched_words:
        words = _join(ev.matched_words[:3], zh)
        preds.append(f"符合你的要求（{words}）" if zh else f"matches what you asked for ({words})")
    if ev.near_history:
        titles = [t for _, t, _ in ev.near_history[:2]]
        preds.insert(
            0 if history_first else len(preds),
            "与你喜欢的" + "".join(f"《{t}》" for t in titles) + "相近" if zh else f"is close to {_join(titles, False)}, which you liked",
        )
    if ev.shared_creators:
        names = _join(ev.shared_creators[:2], zh)
        preds.append(f"出自你欣赏的 {names}" if zh else f"is by {names}, whose work you have enjoyed")
    if ev.shared_categories:
        cats = _join(ev.shared_categories[:3], zh)
        preds.append(f"和你喜欢的作品同属{cats}类" if zh else f"shares {cats} with your favourites")
    for kind in _signal_kinds(ev.signals):
        preds.append(
            {
                "collab": ("也受到口味相近的用户喜爱", "is liked by people with similar taste"),
                "sequence": ("常在你最近喜欢的作品之后被选择", "often comes next after what you enjoyed recently"),
                "popular": ("很受其他用户欢迎", "is popular with other users"),
            }[kind][0 if zh else 1]
        )
    return preds


def evidence_reason(candidate: Candidate, language: str = "en") -> str:
    """A deterministic one-sentence reason built only from the candidate's evidence."""
    zh = is_chinese(language)
    preds = _predicates(candidate, zh)[:2]
    if not preds:
        cats = candidate.item.categories[:2]
        if zh:
            return f"这是目录中与你很匹配的{_join(cats, True)}作品。" if cats else "这是目录中与你很匹配的一项。"
        return f"A strong {_join(cats, False)} match from the catalog." if cats else "A strong match from the catalog."
    if zh:
        return "它" + "，并且".join(preds) + "。"
    return "It " + (", and " if "," in preds[0] else " and ").join(preds) + "."


def evidence_facts(candidate: Candidate) -> list[str]:
    """The evidence as short English facts for the reason prompt."""
    ev = candidate.evidence
    facts = [f"you liked {t}" for _, t, _ in ev.near_history[:2]]
    if ev.shared_creators:
        facts.append(f"by {_join(ev.shared_creators[:2], False)}, whose work you liked before")
    if ev.shared_categories:
        facts.append(f"shares {_join(ev.shared_categories[:3], False)} with your favourites")
    if ev.matched_words:
        facts.append(f"matches your request: {', '.join(ev.matched_words[:3])}")
    facts += [
        {"collab": "liked by people with similar taste", "sequence": "often chosen next after your recent items", "popular": "popular with other users"}[k]
        for k in _signal_kinds(ev.signals)
    ]
    return facts


_DANGLING = frozenset("a an the and or but of to in on at by for with from who whom whose which that where when as his her their its".split())
ABOUT_WORDS = 20  # the first sentence of a description, cut here: enough for a phrase to draw on


def _without_dangling(words: list[str]) -> str:
    """The words joined, without a trailing "the", "who", "and" (or comma) left by a cut."""
    words = list(words)
    while words and words[-1].lower().strip(",;") in _DANGLING:
        words.pop()
    return " ".join(words).rstrip(",;")


def item_about(item: Item) -> str:
    """The first sentence of the item's description, cut to a clause of at most ABOUT_WORDS words.

    A longer sentence is cut at its last comma or semicolon past 3/5 of the limit (or at the limit,
    without a dangling "the" or "who"), so a model that copies it copies a whole phrase.
    """
    text = re.sub(r"\s+", " ", item.text or "").strip()
    first = re.match(r".+?(?:(?<!\b[A-Z])[.!?](?=\s|$)|[。！？]|$)", text)
    sentence = (first.group(0) if first else text).strip()
    words = sentence.split()
    if len(words) <= ABOUT_WORDS:
        return sentence
    head = " ".join(words[:ABOUT_WORDS])
    cut = max(head.rfind(","), head.rfind(";"))
    if cut >= 0 and len(head[:cut].split()) >= ABOUT_WORDS * 3 // 5:
        return head[:cut]
    return _without_dangling(words[:ABOUT_WORDS])


# Grounding check ---------------------------------------------------------------------------------


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
    liked = Liked(near + list(liked_titles), ev.shared_creators, ev.shared_categories, item.title)
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


def clean_generated(text: str, max_sentences: int = 2) -> str:
    """Trim quotes and whitespace and keep the first sentences (a base model rarely stops on its own)."""
    text = text.strip().strip('"“”').strip()
    # An initial ("H. G. Wells") does not end a sentence.
    sentences = [s.strip() for s in re.findall(r".+?(?:(?<!\b[A-Z])[.!?](?=\s|$)|[。！？]|$)", text) if s.strip()]
    joiner = "" if _CJK.search(text) else " "
    return joiner.join(sentences[:max_sentences]) or text


def _until_stop(pieces: Iterable[str], stops: Sequence[str], max_chars: int) -> Iterator[str]:
    """Pass pieces through up to the first stop sequence (not every server honours `stop`) or max_chars."""
    text = ""
    try:
        for piece in pieces:
            cut = min((i for i in ((text + piece).find(s) for s in stops if s) if i >= 0), default=-1)
            if cut >= 0:
                if cut > len(text):
                    yield (text + piece)[len(text) : cut]
                return
            text += piece
            yield piece
            if len(text) > max_chars:
                return
    finally:
        # Stopping early must end the generation now: a local model holds its lock until then.
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


# LLM-written reasons -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReasonChunk:
    """A streamed piece (delta set, final None) or the checked final reason (final set)."""

    item_id: str
    delta: str | None
    final: str | None
    source: str  # "llm" or "evidence"
    failure: str | None = None  # set once, on the final chunk of the reason where the model failed
    # On final chunks of reasons the model was asked for: what it was asked, what it wrote, and
    # why that was not kept (empty when it was), for the prompt lab's trace.
    prompt: str | list | None = None
    raw: str | None = None
    problems: tuple[str, ...] = ()


HOOK_MAX_WORDS = 16  # a hook longer than this copied the description instead of summing it up
HOOK_JOINS = {"en": "; it ", "zh": "，它"}  # phrase + join + evidence predicate (hook_reason)


def _says_only_the_line(text: str, item: Item) -> bool:
    """True when every content word of `text` is in the item's title, categories or year."""
    if _CJK.search(text):  # Chinese has no spaces to find words by: every character, then
        return all(ch in item.title + "".join(item.categories) for ch in _CJK.findall(text))
    line = Support.of([item.title, " ".join(item.categories), str(item.year or "")])
    return all(line.covers(w) for w in content_words(text) if not w.isdigit())


def hook_reason(hook: str, candidate: Candidate, language: str = "en") -> str | None:
    """A reason from a model's phrase about the item plus the strongest evidence fact: the liked
    items it is close to where there are any, else the request match, a creator or categories.

    The phrase must have at most HOOK_MAX_WORDS words: a longer one copied the description
    instead of summing it up, and a cut one reads broken. None when it is longer, empty, or says
    nothing beyond the item's line ("Wonder Woman", "a comedy film from 1994"); the caller then
    uses the evidence sentence, which says more.
    """
    zh = is_chinese(language)
    text = clean_generated(hook, max_sentences=1).strip().rstrip(".。!！?？;；:：…").strip()
    if zh and not _CJK.search(text):
        return None  # an English phrase in a Chinese sentence: the evidence sentence is all Chinese
    if not zh:
        words = text.split()
        if len(words) > HOOK_MAX_WORDS:
            return None
        text = _without_dangling(words)
    if not text or _says_only_the_line(text, candidate.item):
        return None
    # The phrase already says what the item is; the fact ties it to what the user did.
    preds = _predicates(candidate, zh, history_first=True)[:1]
    if zh:
        return text + (HOOK_JOINS["zh"] + preds[0] if preds else "") + "。"
    text = text[:1].upper() + text[1:]
    return text + (HOOK_JOINS["en"] + preds[0] if preds else "") + "."


def hook_of(reason: str) -> str | None:
    """The phrase of a hook reason, before the evidence fact hook_reason joined to it (None if none)."""
    head = re.split("|".join(map(re.escape, HOOK_JOINS.values())), reason, maxsplit=1)[0]
    return head.rstrip(".。") if head != reason else None


def _unsupported_characters(phrase: str, candidate: Candidate) -> str:
    """The Chinese characters of a phrase that neither the item's data nor its evidence contains.

    Chinese has no spaces to check words by (assistant.claims checks English words); characters
    catch what the embedded model copies from its template's example ("牧师的冬景" for a winter
    essay) or invents ("夏丏尊的父亲"). One stray character is allowed, for a paraphrase. An item
    described in another language is translated, not copied: nothing to compare with.
    """
    item, ev = candidate.item, candidate.evidence
    if not _CJK.search(item.text or ""):
        return ""
    support = set("".join([item.title, item.text or "", item.creator or "", *item.categories, *item.tags,
                           *ev.matched_words, *(t for _, t, _ in ev.near_history)]))
    strange = [ch for ch in _CJK.findall(phrase) if ch not in support]
    return "".join(strange) if len(strange) > 1 else ""


def nothing_to_sum_up(item: Item) -> bool:
    """No description, or one that only restates the item's line ("A comedy film from 1994."):
    a hook template's model is not asked, and the evidence sentence says more."""
    about = item_about(item)
    return not about or _says_only_the_line(about, item)


def judge_reason(
    text: str,
    candidate: Candidate,
    template,
    known_titles: Collection[str] = (),
    request: str = "",
    other_categories: Collection[str] = (),
    liked_titles: Collection[str] = (),
    language: str = "en",
) -> tuple[str, list[str]]:
    """What the model wrote (`text`) as the reason to show, and why not ([] when it is kept).

    A hook template's phrase becomes a sentence through `hook_reason` first; a sentence or phrase
    that repeats the template's own example is not kept; the rest is `reason_problems`.
    """
    hook_form = template.output.form == "hook"
    reason = (hook_reason(text, candidate, language) or "") if hook_form else clean_generated(text)
    if hook_form and not reason:
        return "", ["the phrase was unusable (empty, only the item line, too long, or not in the user's language)"]
    if copies_example(text, template, [candidate.item.text]):  # `about` is a clause of this text
        return reason, ["it repeats the template's example, which is about another item"]
    if hook_form and is_chinese(language) and (strange := _unsupported_characters(hook_of(reason) or "", candidate)):
        return reason, [f"says {strange}: characters found neither in the item's data nor in the evidence"]
    return reason, reason_problems(reason, candidate, known_titles, request, other_categories, liked_titles, language)


def llm_reasons(
    llm,
    prompts,
    candidates: Sequence[Candidate],
    user_context: str = "",
    language: str = "en",
    known_titles: Collection[str] = (),
    liked_titles: Collection[str] = (),
) -> Iterator[ReasonChunk]:
    """Per candidate: the reason's pieces as the model writes them, then one final checked reason.

    `user_context` is the user's request this turn; `known_titles` the catalog titles (for the check);
    `liked_titles` the user's liked items (a reason may say they were liked).
    Without an LLM, or after it fails once, reasons come from the evidence.

    The template's `output.form` says what the model writes: the whole sentence ("sentence"), or
    a phrase on what the item is about ("hook", the embedded model's template), which
    `hook_reason` joins with the strongest evidence fact. Either way the final sentence is
    checked, and an evidence sentence replaces it if it invents anything. A template may use any
    of the values offered: item, about, facts, request, language.
    """
    llm_ok = llm is not None
    template = prompts.get("reason") if llm_ok else None
    hook_form = template is not None and template.output.form == "hook"
    batch_categories = {cat for c in candidates for cat in c.item.categories}
    jobs: list[tuple[Candidate, str]] = []
    for candidate in candidates:
        if not llm_ok or (hook_form and nothing_to_sum_up(candidate.item)):
            yield ReasonChunk(candidate.item.id, None, evidence_reason(candidate, language), "evidence")
            continue
        offered = {
            "item": item_line(candidate.item), "about": item_about(candidate.item), "facts": evidence_facts(candidate),
            "request": user_context, "language": language_name(language),
        }
        jobs.append((candidate, template.render_offered(offered)))
    if not jobs:
        return

    def final(candidate: Candidate, prompt: str, text: str, failed: bool, failure: str | None = None) -> ReasonChunk:
        """The checked reason; `failure` (said once a turn) is why the model could not write it."""
        item_id = candidate.item.id
        if not failed:
            reason, problems = judge_reason(text, candidate, template, known_titles, user_context, batch_categories, liked_titles, language)
        else:
            reason, problems = "", ["llm failed"]
        if problems:
            log.info("reason for %s rejected (%s): %r", item_id, "; ".join(problems), reason or text)
            return ReasonChunk(item_id, None, evidence_reason(candidate, language), "evidence", failure, prompt, text, tuple(problems))
        return ReasonChunk(item_id, None, reason, "llm", None, prompt, text)

    stops = template.output.stop or ["\n"]
    max_tokens = min(template.output.max_tokens, MAX_REASON_TOKENS)
    if len(jobs) > 1 and getattr(llm, "supports_batch", False):
        # One decode for all of them: each step writes a token of every reason (llm.stream_many).
        texts = [""] * len(jobs)
        done: set[int] = set()
        failure = None
        try:
            pieces = llm.stream_many([prompt for _, prompt in jobs], max_tokens=max_tokens, stop=stops)
            try:
                for index, piece in pieces:
                    candidate, prompt = jobs[index]
                    if piece is None:
                        done.add(index)
                        yield final(candidate, prompt, texts[index], False)
                    elif len(texts[index]) <= MAX_REASON_CHARS:
                        texts[index] += piece
                        yield ReasonChunk(candidate.item.id, piece, None, "llm")
            finally:
                pieces.close()  # stopping early must end the generation now
        except Exception as exc:  # the backend failed: the rest come from the evidence
            log.warning("LLM reasons failed, using evidence reasons: %s", exc)
            failure = f"{type(exc).__name__}: {exc}"
        for index, (candidate, prompt) in enumerate(jobs):
            if index not in done:
                yield final(candidate, prompt, texts[index], True, failure)
                failure = None  # one notice is enough
        return
    for candidate, prompt in jobs:
        text = ""
        failure = None
        failed = not llm_ok
        if llm_ok:
            try:
                pieces = llm.stream(prompt, max_tokens=max_tokens, stop=stops)
                for piece in _until_stop(pieces, stops, MAX_REASON_CHARS):
                    text += piece
                    yield ReasonChunk(candidate.item.id, piece, None, "llm")
            except Exception as exc:  # the backend failed: stop asking it this turn, keep answering
                log.warning("LLM reason failed, using evidence reasons: %s", exc)
                llm_ok, failed = False, True
                failure = f"{type(exc).__name__}: {exc}"
        yield final(candidate, prompt, text, failed, failure)


# Summaries ------------------------------------------------------------------------------------


def _card_item(card) -> Item:
    """Cards (assistant.events.Card), Candidates or Items all summarise alike."""
    if isinstance(card, Item):
        return card
    if isinstance(card, Candidate):
        return card.item
    return Item(id=card.item_id, title=card.title, categories=list(card.categories), year=card.year, creator=card.creator)


def evidence_summary(cards: Sequence, language: str = "en") -> str:
    """'5 picks, mostly Crime and Drama, from 1972 to 1999.' from the cards alone."""
    items = [_card_item(c) for c in cards]
    zh = is_chinese(language)
    if not items:
        return "暂时没有合适的推荐。" if zh else "Nothing to recommend yet."
    counts = Counter(cat for it in items for cat in it.categories)
    top = [cat for cat, n in counts.most_common(2) if n > 1 or len(items) == 1]
    years = sorted(it.year for it in items if it.year is not None)
    if zh:
        text = f"为你挑选了 {len(items)} 项"
        if top:
            text += f"，以{_join(top, True)}为主"
        if years:
            first, last = (year_text(y, "zh") for y in (years[0], years[-1]))  # -91: 公元前91
            text += f"，年份 {first}–{last}" if years[0] != years[-1] else f"，均为 {first} 年"
        return text + "。"
    text = f"{len(items)} pick{'s' if len(items) != 1 else ''}"
    if top:
        text += f", mostly {_join(top, False)}"
    if years:
        text += f", from {years[0]} to {years[-1]}" if years[0] != years[-1] else f", all from {years[0]}"
    return text + "."


def _generate_checked(llm, template, values: dict, allowed_texts, allowed_titles, known_titles, years, min_overlap=0.5) -> str | None:
    """One generation with the template's limits, cleaned and checked; None if it fails either."""
    stops = template.output.stop or ["\n"]
    try:
        pieces = llm.stream(template.render(**values), max_tokens=template.output.max_tokens, stop=stops)
        out = "".join(_until_stop(pieces, stops, MAX_REASON_CHARS * 2))
    except Exception as exc:
        log.warning("LLM summary failed, using the fallback: %s", exc)
        return None
    text = clean_generated(out)
    if copies_example(text, template, allowed_texts):
        log.info("summary rejected (it repeats the template's example): %r", text)
        return None
    problems = grounding_problems(
        text,
        allowed_texts=allowed_texts,
        allowed_titles=allowed_titles,
        known_titles=known_titles,
        years=years,
        min_overlap=min_overlap,
    )
    if problems:
        log.info("summary rejected (%s): %r", "; ".join(problems), text)
        return None
    return text


def summarize_list(llm, prompts, cards: Sequence, language: str = "en", request: str = "", known_titles: Collection[str] = ()) -> str:
    """One sentence about the shown list; an evidence-only sentence when there is no LLM or it strays."""
    items = [_card_item(c) for c in cards]
    if llm is None or not items:
        return evidence_summary(items, language)
    template = prompts.get("summary")
    values = {"items": [item_line(it) for it in items], "request": request, "language": language_name(language)}
    allowed = [item_line(it) for it in items] + [request, str(len(items))]
    text = _generate_checked(llm, template, values, allowed, [it.title for it in items], known_titles, [it.year for it in items])
    return text or evidence_summary(items, language)


def summarize_item(llm, prompts, item: Item, language: str = "en", known_titles: Collection[str] = ()) -> str:
    """Two sentences about one item from its own description; falls back to that description."""
    if llm is not None:
        template = prompts.get("item_summary")
        values = {"item": item_line(item), "text": item.text, "language": language_name(language)}
        allowed = [item_line(item), item.text, " ".join(item.tags)]
        text = _generate_checked(llm, template, values, allowed, [item.title], known_titles, [item.year])
        if text:
            return text
    if item.text:
        return clean_generated(item.text, max_sentences=2)
    line = item_line(item)
    return f"{line}。" if is_chinese(language) else f"{line}."
