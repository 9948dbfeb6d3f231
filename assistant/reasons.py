"""The explain step: a reason for each shown card (the model's, streamed, or the evidence's), and
the list's summary. Cards are values: the final ones are new cards with the reasons in them."""

from __future__ import annotations

import time
from collections.abc import Collection, Generator, Sequence
from dataclasses import replace

from assistant.events import Card, NoticeEvent, ReasonDelta, ReasonEvent, TurnEvent
from assistant.evidence import evidence_reason
from assistant.explain import OUT_OF_TIME, evidence_reasons, llm_reasons, summarize_list
from assistant.replies import reply
from assistant.turn import Explained, Plan, prompt_request
from retrieval.records import Candidate, Evidence


def card_of(c: Candidate, language: str = "en") -> Card:
    """A candidate as shown: with the reason its evidence gives until a better one arrives."""
    return Card(
        item_id=c.item.id,
        title=c.item.title,
        score=round(float(c.score), 4),
        year=c.item.year,
        creator=c.item.creator,
        categories=list(c.item.categories),
        reason=evidence_reason(c, language),
        reason_source="evidence",
        evidence=c.evidence.to_dict(),
    )


def with_reasons(cards: Sequence[Card], explained: Explained) -> list[Card]:
    """New cards carrying the explain step's final reasons."""
    out = []
    for card in cards:
        text, source = explained.reasons.get(card.item_id, (card.reason, card.reason_source))
        out.append(replace(card, reason=text, reason_source=source))
    return out


def explain(
    llm,
    prompts,
    shown: Sequence[Candidate],
    plan: Plan,
    language: str,
    *,
    settings,
    known_titles: Collection[str],
    noticed: bool = False,
    remembered=None,
    wait_s: float = 0.0,
) -> Generator[TurnEvent, None, Explained]:
    """Yield reason events for `shown`; return every item's final reason, tokens and trace.

    noticed: the turn already told the user about a model problem (one notice per turn is enough).
    remembered: the model's earlier generations (llm/memo.RememberedFor), used even when `llm` is None.
    wait_s: how long the turn may wait for a reason a concurrent turn is having the model write."""
    reasons: dict[str, tuple[str, str]] = {}
    tokens: dict[str, int] = {}
    trace: list[dict] = []

    def final(item_id: str, text: str, source: str) -> ReasonEvent:
        reasons[item_id] = (text, source)
        return ReasonEvent(item_id, text, source)

    fallback = evidence_reasons(shown, language)
    if (llm is None and remembered is None) or not settings.llm_reasons:
        for c in shown:
            yield final(c.item.id, fallback[c.item.id], "evidence")
        return Explained(reasons)
    # A reserved share of a busy local model says how many reasons it may write (none when the
    # model turned the turn away); what it wrote earlier for the same prompt costs nothing; the
    # other cards keep their evidence reasons.
    deadline = time.monotonic() + settings.llm_timeout_s
    # A reserved share ends with the turn's budget (ReservedLLM.deadline): what is not written by
    # then is not waited for, or a turn on a busy machine answers well past its budget.
    until = getattr(llm, "deadline", None)
    quota = 0 if llm is None else getattr(llm, "granted", None)
    request = prompt_request(plan.note.get("topic", ""), plan.note.get("context"))
    chunks = llm_reasons(llm, prompts, shown, request, language, known_titles=known_titles, liked_titles=plan.liked_titles,
                         remembered=remembered, quota=quota, fallback=fallback, wait_s=wait_s, until=until)
    late = False
    for chunk in chunks:
        if chunk.final is None:
            yield ReasonDelta(chunk.item_id, chunk.delta or "")
        else:
            if chunk.prompt is not None:
                trace.append({
                    "stage": "reason", "item_id": chunk.item_id, "prompt": chunk.prompt, "raw": chunk.raw,
                    "kept": chunk.source == "llm", "reason": chunk.final, "problems": list(chunk.problems),
                    "earlier": chunk.earlier,
                })
            if chunk.failure == OUT_OF_TIME:
                late = True
            elif chunk.failure and not noticed:
                yield NoticeEvent(reply("reasons_failed", language, failure=chunk.failure[:160]), "warning")
            if chunk.source == "llm" and not chunk.earlier:
                tokens["completion"] = tokens.get("completion", 0) + llm.count_tokens(chunk.final)
            yield final(chunk.item_id, chunk.final, chunk.source)
        if time.monotonic() > deadline:
            # Out of time: the remaining cards keep their evidence-based reasons.
            chunks.close()
            yield NoticeEvent(reply("model_slow", language), "info")
            break
    for c in shown:
        if c.item.id not in reasons:
            yield final(c.item.id, fallback[c.item.id], "evidence")
    if late:  # the turn's time ended before some reasons were written
        yield NoticeEvent(reply("model_slow", language), "info")
    return Explained(reasons, tokens, tuple(trace))


def summary(llm, prompts, cards: Sequence[Card], plan: Plan, language: str, *, settings, known_titles: Collection[str]) -> str:
    """The list's summary: the model's when summaries are on, else one written from the evidence."""
    return summarize_list(
        llm if settings.effective_llm_summary else None, prompts, cards, language, request=plan.topic, known_titles=known_titles
    )


def evidence_from_dict(data: dict) -> Evidence:
    """The Evidence a stored card carried (cards are persisted as JSON in the conversation)."""
    return Evidence(
        near_history=[(h["item_id"], h["title"], float(h["similarity"])) for h in data.get("near_history", [])],
        matched_words=list(data.get("matched_words", [])),
        shared_categories=list(data.get("shared_categories", [])),
        shared_creators=list(data.get("shared_creators", [])),
        signals=dict(data.get("signals", {})),
        said_liked=list(data["said_liked"]) if "said_liked" in data else None,
        said_liked_categories=list(data["said_liked_categories"]) if "said_liked_categories" in data else None,
        said_liked_creators=list(data["said_liked_creators"]) if "said_liked_creators" in data else None,
    )
