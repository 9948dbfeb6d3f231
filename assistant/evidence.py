"""Reasons built from the retrieval evidence alone: always available, always true.

The fallback for every model-written sentence, and the whole answer when no model is asked.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Sequence

from assistant.replies import year_text
from retrieval.records import Candidate, Item

log = logging.getLogger(__name__)





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
            "said_kind" if name == "category"  # a genre the user named while talking (retrieval's preference mark)
            else "said_era" if name == "era"  # an era the user named ("old movies")
            else "collab" if "collab" in name or name in {"cf", "als"}
            else "sequence" if "seq" in name or "next" in name or "session" in name
            else "popular" if "pop" in name
            else "asked" if name == "asked"
            else ""
        )
        if kind and kind not in kinds:
            kinds.append(kind)
    return kinds


def _join(words: Sequence[str], zh: bool) -> str:
    if zh:
        return "、".join(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def predicates(candidate: Candidate, zh: bool, history_first: bool = False) -> list[str]:
    """The evidence as predicates ("is close to Heat, which you liked"), the request match first
    (or, with `history_first`, the liked items the item is close to)."""
    ev = candidate.evidence
    preds: list[str] = []
    if ev.matched_words:
        words = _join(ev.matched_words[:3], zh)
        preds.append(f"符合你的要求（{words}）" if zh else f"matches what you asked for ({words})")
    if ev.near_history:
        titles = [t for _, t, _ in ev.near_history[:2]]
        if ev.liked_near():
            near = "与你喜欢的" + "".join(f"《{t}》" for t in titles) + "相近" if zh else f"is close to {_join(titles, False)}, which you liked"
        else:  # only had (viewed, bought, seen): history, not a verdict
            near = "与你看过的" + "".join(f"《{t}》" for t in titles) + "相近" if zh else f"is close to {_join(titles, False)} from your history"
        preds.insert(0 if history_first else len(preds), near)
    if ev.shared_creators:
        names = _join(ev.shared_creators[:2], zh)
        if ev.liked_creators():
            preds.append(f"出自你欣赏的 {names}" if zh else f"is by {names}, whose work you have enjoyed")
        else:  # the user only had their work (viewed, bought): history, not a verdict
            preds.append(f"和你看过的作品出自同一作者（{names}）" if zh else f"is by {names}, whose work is in your history")
    if ev.shared_categories:
        cats = _join(ev.shared_categories[:3], zh)
        if ev.liked_categories():
            preds.append(f"和你喜欢的作品同属{cats}类" if zh else f"shares {cats} with your favourites")
        else:  # found among items the user only had
            preds.append(f"和你看过的作品同属{cats}类" if zh else f"shares {cats} with your history")
    for kind in _signal_kinds(ev.signals):
        preds.append(
            {
                "collab": ("也受到口味相近的用户喜爱", "is liked by people with similar taste"),
                "sequence": ("常在你最近喜欢的作品之后被选择", "often comes next after what you enjoyed recently"),
                "popular": ("很受其他用户欢迎", "is popular with other users"),
                "asked": ("常被提出类似要求的人选中", "was chosen by people who asked for something similar"),
                "said_kind": ("属于你提到的类型", "is of a kind you mentioned"),
                "said_era": ("来自你提到的年代", "is from the years you mentioned"),
            }[kind][0 if zh else 1]
        )
    return preds


def evidence_reason(candidate: Candidate, language: str = "en") -> str:
    """A deterministic one-sentence reason built only from the candidate's evidence."""
    zh = is_chinese(language)
    preds = predicates(candidate, zh)[:2]
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
    facts = [f"you {'liked' if ev.may_call_liked(i) else 'had'} {t}" for i, t, _ in ev.near_history[:2]]
    if ev.shared_creators:
        facts.append(f"by {_join(ev.shared_creators[:2], False)}, whose work you {'liked' if ev.liked_creators() else 'had'} before")
    if ev.shared_categories:
        facts.append(f"shares {_join(ev.shared_categories[:3], False)} with your {'favourites' if ev.liked_categories() else 'history'}")
    if ev.matched_words:
        facts.append(f"matches your request: {', '.join(ev.matched_words[:3])}")
    facts += [
        {"collab": "liked by people with similar taste", "sequence": "often chosen next after your recent items",
         "popular": "popular with other users", "asked": "chosen by people who asked for something similar",
         "said_kind": "of a kind you mentioned", "said_era": "from the years you mentioned"}[k]
        for k in _signal_kinds(ev.signals)
    ]
    return facts


_DANGLING = frozenset("a an the and or but of to in on at by for with from who whom whose which that where when as his her their its he she they".split())
ABOUT_WORDS = 20  # the first sentence of a description, cut here: enough for a phrase to draw on


def without_dangling(words: list[str]) -> str:
    """The words joined, without a trailing "the", "who", "and" (or comma) left by a cut."""
    words = list(words)
    while words and words[-1].lower().strip(",;") in _DANGLING:
        words.pop()
    return " ".join(words).rstrip(",;")


def first_sentence(item: Item) -> str:
    """The first sentence of the item's description ("" without one)."""
    text = re.sub(r"\s+", " ", item.text or "").strip()
    first = re.match(r".+?(?:(?<!\b[A-Z])[.!?](?=\s|$)|[。！？]|$)", text)
    return (first.group(0) if first else text).strip()


def item_about(item: Item) -> str:
    """The first sentence of the item's description, cut to a clause of at most ABOUT_WORDS words.

    A longer sentence is cut at its last comma or semicolon past 3/5 of the limit (or at the limit,
    without a dangling "the" or "who"), so a model that copies it copies a whole phrase.
    """
    sentence = first_sentence(item)
    words = sentence.split()
    if len(words) <= ABOUT_WORDS:
        return sentence
    head = " ".join(words[:ABOUT_WORDS])
    cut = max(head.rfind(","), head.rfind(";"))
    if cut >= 0 and len(head[:cut].split()) >= ABOUT_WORDS * 3 // 5:
        return head[:cut]
    return without_dangling(words[:ABOUT_WORDS])


# Grounding check ---------------------------------------------------------------------------------




def card_item(card) -> Item:
    """Cards (assistant.events.Card), Candidates or Items all summarise alike."""
    if isinstance(card, Item):
        return card
    if isinstance(card, Candidate):
        return card.item
    return Item(id=card.item_id, title=card.title, categories=list(card.categories), year=card.year, creator=card.creator)


def evidence_summary(cards: Sequence, language: str = "en") -> str:
    """'5 picks, mostly Crime and Drama, from 1972 to 1999.' from the cards alone."""
    items = [card_item(c) for c in cards]
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


