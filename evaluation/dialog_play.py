"""How the agent meets a human dialog in `recassist eval --dialogs`: the engine under test, one
call of the agent (POST /v1/chat's), and the three ways a dialog is put to it.

- "one": a new user sends the seeker's words so far as one message (how the issue measured it);
- "replay": the seeker's turns are sent one by one in one session (the recommender's turns are not:
  the agent's own lists stand in for them, though the seeker never saw those);
- "history": a new session starts from the whole dialog so far as prior turns (the seeker's as the
  user's, the human recommender's as the assistant's, its named titles as its suggestions) and the
  seeker's last turn is the message: how an app that hands a conversation to the assistant midway
  calls it (POST /v1/chat with `prior`, or the OpenAI facade with the history).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.turn import MAX_PRIOR_TURNS
from evaluation.dialogs import MAX_MESSAGE_CHARS, Case, Dialog, seeker_turns

if TYPE_CHECKING:
    from evaluation.dialog_eval import DialogConfig

MAX_CARDS = 20  # the most cards one answer shows (the agent's cap, as POST /v1/chat's k)
MODES = ("one", "replay", "history")
MODE_NAMES = {"one": "agent (one message)", "replay": "agent (replay)", "history": "agent (dialog as prior turns)"}
MODE_DESCRIPTIONS = {
    "one": "a new user sends the seeker's words so far as one message",
    "replay": "the seeker's turns sent one by one in one session; the list in view after the last turn counts "
              "(a turn answered in words keeps the list before it on screen)",
    "history": "a new session starts from the dialog so far (seeker and human recommender turns, titles named) "
               "as prior turns; the seeker's last turn is the message",
}


def proposal_counts(turns: list["Answer"]) -> dict:
    """Titles the model proposed over these turns, how many linked to the catalog, how many were invented."""
    counts = Counter()
    for turn in turns:
        for key, n in turn.request.get("proposals", {}).items():
            counts[key] += n
    return dict(counts)


class ListedRetriever:
    """The engine's Retriever, keeping the candidate list it last returned.

    An answer shows at most 20 cards; the protocol reads the agent's whole candidate list (the cards
    first, in their order, then the other candidates in retrieval order). It only observes."""

    def __init__(self, inner):
        self.inner = inner
        self.last: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def candidates(self, *args, **kwargs):
        self.last = self.inner.candidates(*args, **kwargs)
        return self.last


@dataclass
class Answer:
    """What one agent turn answered: item ids best first, and how it went."""

    ids: list[str]
    ms: float
    timings: dict
    intent: str
    session_id: str | None
    request: dict = field(default_factory=dict)  # the Done event's request note (proposals counted there)


def build_engine(cfg: DialogConfig, prepared, items, vectors, embedder):
    """A fresh Engine loaded through the public ingest; item vectors come from the harness's cache."""
    from assistant.engine import Engine
    from assistant.settings import Settings
    from evaluation.product import CachedEmbedder

    key = hashlib.sha1(f"{prepared.events}|{cfg.embedding}|{cfg.llm}".encode("utf-8")).hexdigest()[:10]
    data_dir = Path(cfg.work_dir) / "dialogs" / f"engine-{key}"
    shutil.rmtree(data_dir, ignore_errors=True)  # the sessions write to the store: every run starts clean
    # live_poll_s 0: the live counters poll before every request, so what a chat-stated like adds
    # reaches the next case whatever the machine's speed (polls on the wall clock made runs differ).
    overrides = {"data_dir": data_dir, "embedding_backend": cfg.embedding, "candidates": cfg.depth, "top_k": MAX_CARDS,
                 "live_poll_s": 0.0}
    if cfg.llm == "none" and cfg.llm_instance is None:
        # The settings the caller gave (dialog_tuning --env) apply here too; nothing from os.environ.
        settings = Settings.load(env=dict(cfg.settings_env or {}), llm_backend="none", **overrides)
    else:
        settings = Settings.load(env=cfg.settings_env, **overrides)
    cached = CachedEmbedder(embedder, [item.document() for item in items], vectors)
    engine = Engine(settings, llm=cfg.llm_instance, embedder=cached)
    engine.ingest_catalog_file(prepared.catalog, prepared.catalog_mapping, progress=False)
    engine.ingest_events_file(prepared.events, prepared.events_mapping, progress=False)
    engine.__dict__["retriever"] = ListedRetriever(engine.retriever)
    return engine


def respond(engine, user_id: str, message: str, session_id: str | None = None, prior: list[dict] | None = None) -> Answer:
    """One turn through Agent.respond (POST /v1/chat's call) with k = 20; the list is cards + the other candidates."""
    from assistant.events import DoneEvent
    from evaluation.conversation import final_cards

    engine.retriever.last = []
    began = time.perf_counter()
    events = list(engine.agent.respond(user_id, message, session_id=session_id, k=MAX_CARDS, prior=prior))
    ms = (time.perf_counter() - began) * 1000
    cards = [c.item_id for c in final_cards(events)]
    rest = [c.item.id for c in engine.retriever.last if c.item.id not in cards] if cards else []
    done = next((e for e in events if isinstance(e, DoneEvent)), None)
    return Answer(cards + rest, ms, dict(done.timings_ms) if done else {}, done.intent if done else "",
                  done.session_id if done else session_id, dict(done.request or {}) if done else {})


def play_one_message(engine, cases: list[Case], dialogs, cfg: DialogConfig) -> tuple[list[Answer], list[Answer]]:
    """Per case, a new user sends the seeker's words so far as one message (same words: one call)."""
    from evaluation.protocols import progress_bar

    asked: dict[tuple[str, int], Answer] = {}
    bar = progress_bar(len(cases), "agent, one message", cfg.progress, unit="case")
    out = []
    for case in cases:
        key = (case.dialog_id, len(case.seeker_turns))
        if key not in asked:
            asked[key] = respond(engine, f"dlg-one-{len(asked)}", case.one_message())
        out.append(asked[key])
        bar.update(1)
    bar.close()
    return out, list(asked.values())


def play_replay(engine, cases: list[Case], dialogs: list[Dialog], cfg: DialogConfig) -> tuple[list[Answer], list[Answer]]:
    """Per dialog, one user and one session: each seeker turn is sent in order, up to the dialog's last case."""
    from evaluation.protocols import progress_bar

    by_dialog: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        by_dialog.setdefault(case.dialog_id, []).append(i)
    out: list[Answer | None] = [None] * len(cases)
    turns: list[Answer] = []
    bar = progress_bar(len(by_dialog), "agent, replay", cfg.progress, unit="dialog")
    for ordinal, dialog in enumerate(d for d in dialogs if d.id in by_dialog):
        needed = max(len(cases[i].seeker_turns) for i in by_dialog[dialog.id])
        answers: list[Answer] = []
        session = None
        for _, text in seeker_turns(dialog)[:needed]:
            answer = respond(engine, f"dlg-replay-{ordinal}", text, session)
            if not answer.ids and answers:
                # "Thanks!" or "why that one?" answers in words; the list in view is the one before
                # (the UI keeps it on screen), so that is the list the person has.
                answer = Answer(answers[-1].ids, answer.ms, answer.timings, answer.intent, answer.session_id)
            answers.append(answer)
            session = answers[-1].session_id
        turns += answers
        for i in by_dialog[dialog.id]:
            out[i] = answers[len(cases[i].seeker_turns) - 1]
        bar.update(1)
    bar.close()
    return out, turns


def play_history(engine, cases: list[Case], dialogs: list[Dialog], cfg: "DialogConfig") -> tuple[list[Answer], list[Answer]]:
    """Per case, a new user and session: the dialog before the seeker's last turn as prior turns, that turn as the message."""
    from evaluation.protocols import progress_bar

    by_id = {d.id: d for d in dialogs}
    asked: dict[tuple[str, int], Answer] = {}
    bar = progress_bar(len(cases), "agent, dialog as prior turns", cfg.progress, unit="case")
    out = []
    for case in cases:
        key = (case.dialog_id, case.message)
        if key not in asked:
            prior, message = dialog_before(by_id[case.dialog_id], case.message)
            asked[key] = respond(engine, f"dlg-history-{len(asked)}", message, prior=prior)
        out.append(asked[key])
        bar.update(1)
    bar.close()
    return out, list(asked.values())


def dialog_before(dialog: Dialog, index: int) -> tuple[list[dict], str]:
    """(prior turns, message): the dialog's messages before `index` as chat turns (consecutive
    messages of one side joined), split at the seeker's last turn."""
    turns: list[dict] = []
    for message in dialog.messages[:index]:
        role = "user" if message.role == "seeker" else "assistant"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += " " + message.text
        else:
            turns.append({"role": role, "content": message.text})
    last = max(i for i, t in enumerate(turns) if t["role"] == "user")
    return turns[:last][-MAX_PRIOR_TURNS:], turns[last]["content"][-MAX_MESSAGE_CHARS:]


PLAYS = {"one": play_one_message, "replay": play_replay, "history": play_history}
