"""Scripted multi-turn sessions through the real Agent: are constraints and feedback respected?

Each session asks, refines with an exclusion ("no horror", the genre most present in the last
answer), asks for older films, says it has seen the first card, dislikes the second, and asks
again. After every turn the answer's cards are checked against everything said so far. The
checker holds its own reading of the script (it never asks the agent what it understood).
"""

from __future__ import annotations

import logging
import shutil
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from evaluation import bootstrap, metrics

log = logging.getLogger(__name__)

CHECKS = ("excluded category", "older than asked", "seen/disliked not shown", "non-empty answer")


@dataclass
class Expectation:
    """What the user has asked for so far in the session."""

    exclude_categories: set[str] = field(default_factory=set)
    year_before: int | None = None  # every card strictly older than this
    banned: set[str] = field(default_factory=set)  # items said to be seen or disliked


# A step turns the last answer's cards into the next message and updates the expectation.
Step = Callable[[list, Expectation], str]


def ask(cards, exp: Expectation) -> str:
    return "Can you recommend a movie for tonight?"


def exclude_genre(cards, exp: Expectation) -> str:
    genres = Counter(cat for card in cards for cat in card.categories)
    genre = min(genres, key=lambda g: (-genres[g], g)) if genres else "Horror"
    exp.exclude_categories.add(genre)
    return f"No {genre.lower()} please"


def older(cards, exp: Expectation) -> str:
    years = [card.year for card in cards if card.year]
    if years:
        # "Older ones": older than the middle of what was just shown.
        exp.year_before = int(statistics.median_low(years))
    return "Older ones please"


def seen_first(cards, exp: Expectation) -> str:
    if cards:
        exp.banned.add(cards[0].item_id)
    return "I've seen the first one"


def dislike_second(cards, exp: Expectation) -> str:
    if len(cards) > 1:
        exp.banned.add(cards[1].item_id)
    return "I didn't like the second one"


def again(cards, exp: Expectation) -> str:
    return "What else would you suggest?"


SCRIPT: tuple[Step, ...] = (ask, exclude_genre, older, seen_first, dislike_second, again)


def check_turn(cards, exp: Expectation) -> dict[str, bool]:
    """Which expectations this answer meets."""
    return {
        "excluded category": not any(set(card.categories) & exp.exclude_categories for card in cards),
        "older than asked": exp.year_before is None or all(card.year is not None and card.year < exp.year_before for card in cards),
        "seen/disliked not shown": not any(card.item_id in exp.banned for card in cards),
        "non-empty answer": bool(cards),
    }


def final_cards(events) -> list:
    """The cards a turn ended with (the ranked list, or the retrieved one if ranking never came)."""
    from assistant.events import CardsEvent

    cards: list = []
    for event in events:
        if isinstance(event, CardsEvent):
            cards = event.cards
    return cards


def run_session(agent, user_id: str, script=SCRIPT) -> list[dict]:
    """Play the script for one user; one record per turn after the first."""
    from assistant.events import DoneEvent, MessageEvent, ReasonEvent
    from assistant.evidence import evidence_summary

    exp = Expectation()
    cards: list = []
    session = None
    turns = []
    for position, step in enumerate(script):
        message = step(cards, exp)
        events = list(agent.respond(user_id, message, session_id=session))
        done = next((e for e in events if isinstance(e, DoneEvent)), None)
        session = done.session_id if done else session
        cards = final_cards(events)
        reasons = Counter(e.source for e in events if isinstance(e, ReasonEvent))
        summary = next((e.text for e in events if isinstance(e, MessageEvent) and e.kind == "summary"), None)
        record = {
            "user": user_id,
            "turn": position,
            "message": message,
            "cards": [c.item_id for c in cards],
            "timings_ms": dict(done.timings_ms) if done else {},
            "tokens": dict(done.tokens) if done else {},
            "reasons": dict(reasons),
            # the LLM's summary was kept when it is not the one built from the cards
            "summary_llm": None if summary is None else summary != evidence_summary(cards),
        }
        if position > 0:  # the first answer has nothing to respect yet
            record["checks"] = check_turn(cards, exp)
        turns.append(record)
    return turns


def run_conversations(cfg, split, embedder, vectors, results: dict) -> dict:
    """Sessions for a seeded sample of users on an Engine holding their training + validation history."""
    try:
        import assistant.agent  # noqa: F401
        import retrieval.candidates  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"the agent or retriever is not available ({exc})"}
    from evaluation.llm_runner import build_llm
    from evaluation.product import CachedEmbedder, stage_engine

    llm, _, why = build_llm(cfg)
    if llm is None:
        log.warning("conversations run without an LLM: %s", why)
    cached = CachedEmbedder(embedder, [item.document() for item in split.items], vectors)
    # A fresh store: the sessions write feedback events, which must not leak into later runs.
    # Every summary is asked for (whatever `llm_summary` says for this model), so the report
    # measures whether the model's summaries are worth asking for.
    engine = stage_engine(cfg, split, "conversation", cached, llm=llm, fresh=True, llm_summary=True)
    rng = np.random.default_rng([cfg.seed, 3])
    users = sorted(rng.choice([u.user_id for u in split.users], size=min(cfg.conversations, len(split.users)), replace=False),
                   key=lambda u: (len(u), u))
    from evaluation.protocols import progress_bar

    bar = progress_bar(len(users), "conversations", cfg.progress, unit="session")
    turns: list[dict] = []
    try:
        for user_id in users:
            turns.extend(run_session(engine.agent, str(user_id)))
            bar.update(1)
    finally:
        bar.close()
        engine.close()
        shutil.rmtree(engine.settings.data_dir, ignore_errors=True)
    return summarize(turns, cfg, llm)


def summarize(turns: list[dict], cfg, llm) -> dict:
    checked = [t for t in turns if "checks" in t]
    respecting = np.array([all(t["checks"].values()) for t in checked], dtype=float)
    by_check = {name: bootstrap.confidence_interval(np.array([t["checks"][name] for t in checked], dtype=float), seed=cfg.seed).to_dict()
                for name in CHECKS}
    stages = sorted({k for t in turns for k in t["timings_ms"]})
    latency = {s: {"p50": metrics.percentile([t["timings_ms"][s] for t in turns if s in t["timings_ms"]], 50),
                   "p95": metrics.percentile([t["timings_ms"][s] for t in turns if s in t["timings_ms"]], 95)} for s in stages}
    reasons = Counter()
    for t in turns:
        reasons.update(t["reasons"])
    total_reasons = sum(reasons.values())
    tokens = [sum(t["tokens"].values()) for t in turns if t["tokens"]]
    return {
        "sessions": len({t["user"] for t in turns}),
        "turns": len(checked),
        "backend": f"{llm.backend} {llm.model}" if llm is not None else "none (retrieval order, evidence reasons)",
        "respecting": bootstrap.confidence_interval(respecting, seed=cfg.seed).to_dict(),
        "by_check": by_check,
        "script": [step(list(), Expectation()) if step not in (exclude_genre,) else "No <most shown genre> please" for step in SCRIPT],
        "latency_ms": latency,
        "reasons": {"total": total_reasons, "llm_kept": reasons.get("llm", 0), "evidence": reasons.get("evidence", 0),
                    "llm_share": reasons.get("llm", 0) / total_reasons if total_reasons else None},
        "summaries": {"total": sum(t.get("summary_llm") is not None for t in turns),
                      "llm_kept": sum(bool(t.get("summary_llm")) for t in turns)},
        "tokens_per_turn_mean": float(np.mean(tokens)) if tokens else None,
        "examples": checked[:3],
    }
