"""The turns that are not a new list: small talk, "why that one?", "tell me about it", feedback in words.

Each is a plain function of the understood message that yields its events and records the
assistant's answer in the conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from assistant.events import MessageEvent, TurnEvent
from assistant.evidence import evidence_reason, is_chinese
from assistant.explain import hook_of, summarize_item
from assistant.reasons import evidence_from_dict
from assistant.replies import quoted, reply, year_text
from assistant.turn import Understood
from retrieval.records import CHAT_SOURCE, Candidate


def smalltalk(understood: Understood, *, store, memory, users, picks: bool = False) -> Iterator[TurnEvent]:
    """A greeting, thanks, or a question off the subject. picks: a list follows (a greeting that
    opens the conversation), so the text leads into it."""
    u, conv = understood.understanding, understood.conversation
    zh = u.language == "zh"
    if u.acknowledgement and understood.last:
        text = (
            "不客气！接下来想要什么？可以说“更多像第一部那样的”，或者换个方向。"
            if zh
            else "Glad to help! What next: more like one of these, or something different?"
        )
        kind = "smalltalk"
    elif (not store.events_for_user(conv.user_id, limit=1) and not users.overrides(conv.user_id).get("onboarding")
          and not any(t.role == "assistant" and t.payload.get("kind") == "onboarding" for t in conv.turns)):
        text = (  # a new user, asked once a conversation
            "你好！先告诉我：最近你喜欢过哪些作品？有没有不想看的类型？"
            if zh
            else "Hi! To get you started: which titles have you loved lately, and is there anything you'd rather avoid? "
            "You can also just say what you're in the mood for."
        )
        if picks:
            text += "先看看大家最近喜欢的：" if zh else " Meanwhile, here is what people enjoy most right now."
        kind = "onboarding"
    elif picks:
        text = (
            "你好！这几部是照你以往喜欢的挑的；也可以直接告诉我你想要什么。"
            if zh
            else "Hi again! Here are a few picks from what you've enjoyed; or tell me what you're in the mood for."
        )
        kind = "smalltalk"
    else:
        text = (
            "我专门帮你找值得一读/一看的作品。想要什么样的？"
            if zh
            else "I'm here to help you find your next favourite. Ask for something, e.g. 'a gothic novel, nothing too long'."
        )
        kind = "smalltalk"
    yield MessageEvent(text, kind)
    conv.add(memory, "assistant", text, {"kind": kind})


def opens_with_picks(understood: Understood, settings) -> bool:
    """A greeting that opens the conversation (no list shown in it yet) is answered with picks too:
    a person saying hello to a recommender expects something to look at (human recommenders in
    ReDial name a film after "Hi! How are you?")."""
    return bool(settings.greeting_picks and understood.understanding.greeting and not understood.conversation.shown_ids())


def why(understood: Understood, *, store, memory) -> Iterator[TurnEvent]:
    """Why a card was shown: its evidence, after what the model said the item is."""
    u, conv, last, target = understood.understanding, understood.conversation, understood.last, understood.target
    card = next((c for c in last if c["item_id"] == target), None) or (last[0] if last and target is None else None)
    if card is None:
        text = reply("why_which", u.language)
    else:
        item = store.get_item(card["item_id"])
        because = evidence_reason(Candidate(item, card["score"], evidence_from_dict(card.get("evidence") or {})), u.language) if item else ""
        title, colon = quoted(card["title"], u.language), "：" if is_chinese(u.language) else ": "
        text = f"{title}{colon}{because}"
        reason = card.get("reason") or ""
        if reason and card.get("reason_source") == "llm":
            # A hook reason ("A crew hunted by a creature; it is close to Alien, ...") ends with
            # an evidence fact `because` already states: say what the item is, then why.
            hook = hook_of(reason)
            stop = "。" if is_chinese(u.language) else ". "
            text = f"{title}{colon}{hook}{stop}{because}" if hook else text + f" ({reason})"
    yield MessageEvent(text, "answer")
    conv.add(memory, "assistant", text, {"kind": "why", "item_id": card and card["item_id"]})


def about(understood: Understood, *, store, memory, model: Callable, prompts, settings, known_titles) -> Iterator[TurnEvent]:
    """What an item is about: its own description, or the model's summary of it when summaries are on.

    model: a context manager giving the LLM for this turn (None when there is none or it is busy)."""
    u, conv, target = understood.understanding, understood.conversation, understood.target
    item = store.get_item(target) if target else None
    if item is None:
        text = reply("about_which", u.language)
    else:
        if not settings.effective_llm_summary:  # the item's own description, the model not asked
            text = summarize_item(None, prompts, item, u.language)
        else:
            with model() as llm:
                text = summarize_item(llm, prompts, item, u.language, known_titles=known_titles)
        if u.language == "zh":
            text = quoted(item.title, "zh") + (f"（{year_text(item.year, 'zh')}）" if item.year is not None else "") + f"：{text}"
        else:
            text = f"{item.title}" + (f" ({item.year})" if item.year is not None else "") + f": {text}"
    yield MessageEvent(text, "answer")
    conv.add(memory, "assistant", text, {"kind": "about", "item_id": target})


def feedback_in_words(understood: Understood, *, store, users) -> Iterator[TurnEvent]:
    """"Loved X but Y was meh": each named title gets what was said about it; else the message's verdict."""
    u, conv, target = understood.understanding, understood.conversation, understood.target
    targets = [target] if target else []
    if u.item_ids and u.feedback:
        targets = list(dict.fromkeys(targets + u.item_ids))
    if not targets:
        yield MessageEvent(reply("feedback_which", u.language), "feedback")
        return
    stance_of = {m["item_ids"][0]: m["stance"] for m in u.mentions}
    said = {"liked": "like", "disliked": "dislike", "seen": "seen"}
    for item_id in targets:
        if conv.persist:
            users.feedback(conv.user_id, item_id, said.get(stance_of.get(item_id, ""), u.feedback or "like"),
                           source=f"{CHAT_SOURCE}{conv.session_id}")
    items = [store.get_item(i) for i in targets]
    titles = ("" if u.language == "zh" else ", ").join(quoted(item.title, u.language) for item in items if item)
    yield MessageEvent(reply(f"feedback_{u.feedback or 'like'}", u.language, titles=titles), "feedback")
