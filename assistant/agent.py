"""The agent: routes one chat turn through its steps and yields their events in order.

understand -> plan -> retrieve -> rank -> explain (see assistant/turn.py for what flows between
them). Intents other than a new list (why, about, feedback, small talk) are in assistant/intents.py;
what is kept about users (feedback, profiles, sessions, forgetting) in assistant/users.py. The agent
gets its parts injected (assistant/turn.py `Parts`) and loads the prompt templates once.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import replace

from assistant import intents
from assistant.events import CardsEvent, DoneEvent, MessageEvent, NoticeEvent, ReasonEvent, TurnEvent
from assistant.llm.memo import Remembered
from assistant.memory import Conversation
from assistant.model_turns import ModelGate
from assistant.planning import plan as plan_turn
from assistant.proposals import Proposals, propose, wants_proposals
from assistant.ranking import rank_step
from assistant.reasons import card_of, explain, summary, with_reasons
from assistant.replies import REPLIES, reply
from assistant.retrieving import retrieve
from assistant.turn import (
    MAX_MESSAGE_CHARS,
    Parts,
    Timer,
    Understood,
    add_tokens,
    validate_turns,
    validate_user_id,
)
from assistant.understand import Understanding, detect_language, parse_message, understand_with_llm
from assistant.vocabulary import CatalogVocabulary
from assistant.users import Users
from core.errors import InputError, RecassistError
from retrieval.asked import terms as asked_terms
from retrieval.dialog_log import MAX_SAID
from retrieval.records import Event

log = logging.getLogger(__name__)

_WORDY = re.compile(r"[A-Za-z\u4e00-\u9fff]")  # a message with letters or Chinese characters shows its language
MODEL_BUSY = REPLIES["model_busy"]["en"]
UNWRITTEN_KEPT = 512  # cards shown without a model-written reason, for the hook writer (assistant/prewrite.py)


class Agent:
    """Answers chat turns for any user from the parts it is given."""

    def __init__(self, parts: Parts):
        self.parts = parts
        self.settings = parts.settings
        self.store = parts.store
        self.memory = parts.memory
        self.users = Users(parts)
        self._vocab: CatalogVocabulary | None = None
        self._vocab_size = -1
        self._gate = ModelGate(parts.llm, self.settings.llm_timeout_s, budget_s=self.settings.llm_turn_budget_s,
                               sequences=self.settings.llm_turn_sequences)
        # The model's reasons by prompt; those about an item alone are kept in the store for every worker.
        self.unwritten: deque[str] = deque(maxlen=UNWRITTEN_KEPT)  # item ids shown with evidence reasons, newest last
        self._remembered = Remembered(self.settings.llm_remember_reasons, store=parts.memory)
        self._rank_priors: dict = {}  # calibration answers of the loaded model, reused every turn
        self._prompt_sets: dict = {}  # per prompt style: the templates, read once

    # --- what every turn shares ---------------------------------------------------------------

    def vocabulary(self) -> CatalogVocabulary:
        """Catalog titles/creators/categories, rebuilt when the catalog size changes."""
        size = self.store.item_count()
        if self._vocab is None or size != self._vocab_size:
            self._vocab = CatalogVocabulary(self.store.iter_items())
            self._vocab_size = size
        return self._vocab

    def _prompts(self, overrides: dict | None = None):
        """The templates for the loaded model's prompt style (read once); the prompt lab may override some."""
        from prompts import Prompts

        llm = self.parts.llm()
        style = getattr(llm, "prompt_style", "completion")
        if style not in self._prompt_sets:
            self._prompt_sets[style] = Prompts.for_llm(llm, self.settings.prompt_variant, self.settings.prompt_variants_dir)
        prompts = self._prompt_sets[style]
        return prompts.with_overrides(overrides) if overrides else prompts

    def _model(self, spent_s: float = 0.0):
        """A context manager: the LLM for this turn's stages, or None (none, or busy with other turns).
        `spent_s`: the turn's time so far, which its budget for the model's share loses."""
        return self._gate.turn(spent_s)

    def idle_s(self) -> float:
        """Seconds since this process's last turn left the model; 0 while one is on its way to it."""
        return self._gate.idle_s()

    def remembered_stats(self) -> dict | None:
        """The remembered reasons' counts (llm/memo.py), or None when the loaded model's are not remembered."""
        return self._remembered.stats() if self._remembered.bind(self.parts.llm()) is not None else None

    def write_ahead_setup(self):
        """(llm, reason template, remembered) when the loaded model's reasons can be written ahead:
        a local model whose generations are remembered and a reason prompt that depends on the item
        alone (assistant/prewrite.py); else None."""
        from assistant.explain import item_only

        llm = self.parts.llm()
        if llm is None or llm.remote or not self.settings.llm_reasons:
            return None
        remembered = self._remembered.bind(llm)
        template = self._prompts().get("reason")
        if remembered is None or template is None or not item_only(template):
            return None
        return llm, template, remembered

    def warm_up(self) -> None:
        """Before serving a local model: the ranking's calibration call, so the first user does not wait for it.

        Hosted models are not asked at start-up (a slow server would hold the start); their first turn asks.
        """
        llm = self.parts.llm()
        if llm is None or llm.remote or not llm.supports_logprobs or self.settings.effective_rank_blend <= 0:
            return
        from assistant.ranking import warm_up

        try:
            warm_up(llm, self._prompts(), self.settings.candidates, self._rank_priors)
        except (RecassistError, ValueError) as exc:  # the first turn tries again, and says so if it fails
            log.warning("ranking warm-up failed: %s", exc)

    def warm_up_turns(self, messages: Sequence[str] = ("recommend me something", "something a little different")) -> None:
        """Dry-run turns before serving (nothing is stored): whatever a turn loads on first use
        (the embedder's first encode, vocabularies, the reason prompt's head in the model's cache)
        loads now, so the first user's turn is as fast as the tenth."""
        first = next(iter(self.store.iter_events()), None)
        user = first.user_id if first is not None else "recassist-warm-up"
        for message in messages:
            try:
                for _ in self.respond(user, message, persist=False):
                    pass
            except RecassistError as exc:  # the first real turn tries again, and says what failed
                log.warning("warm-up turn failed: %s", exc)
                return

    # --- one chat turn ------------------------------------------------------------------------

    def respond(
        self,
        user_id: str,
        message: str,
        session_id: str | None = None,
        context: dict | None = None,
        k: int | None = None,
        prompt_overrides: dict | None = None,
        trace: list | None = None,
        persist: bool = True,
        prior: Sequence[dict] | None = None,
    ) -> Iterator[TurnEvent]:
        """Answer one message; yields cards first, then ranked cards, reasons, a summary, and Done.

        persist=False is a dry run (the prompt lab): nothing is written to the user's history.
        prior: earlier turns ({"role": "user" | "assistant", "content": str}) of a conversation that
        began elsewhere; they start the session when it has no turns yet (a resumed one ignores them).
        trace: a list the turn appends each model call to (prompt, raw output, what was kept).
        """
        validate_user_id(user_id)
        timer = Timer()
        said_at = time.time()
        understood = self._understand(user_id, message, session_id, context, persist, prior, prompt_overrides)
        timer.lap("understand")
        for text in understood.notices:
            yield NoticeEvent(text, "warning")
        u = understood.understanding
        tokens, note = dict(understood.tokens), {}
        if u.intent == "smalltalk":
            picks = intents.opens_with_picks(understood, self.settings)
            yield from intents.smalltalk(understood, store=self.store, memory=self.memory, users=self.users, picks=picks)
            if picks:
                with self._gate.coming():
                    more, note = yield from self._recommend(understood, context, k, prompt_overrides, trace, timer)
                tokens = add_tokens(tokens, more)
        elif u.intent == "why":
            yield from intents.why(understood, store=self.store, memory=self.memory)
        elif u.intent == "about_item":
            yield from intents.about(understood, store=self.store, memory=self.memory, model=self._model,
                                     prompts=self._prompts(), settings=self.settings, known_titles=self._known_titles())
        else:
            if u.intent == "feedback" or (u.feedback and u.item_ids):
                yield from intents.feedback_in_words(understood, store=self.store, users=self.users)
            with self._gate.coming():
                more, note = yield from self._recommend(understood, context, k, prompt_overrides, trace, timer)
            self._learn_request(understood, message, said_at)  # after: this turn answered the user as they were
            tokens = add_tokens(tokens, more)
        timer.lap("finish")
        yield DoneEvent(understood.conversation.session_id, u.intent, timer.marks, tokens, note)

    def _understand(self, user_id, message, session_id, context, persist, prior, overrides) -> Understood:
        """The understand step: the message read against the catalog and the conversation so far."""
        notices = []
        if not isinstance(message, str) or not message.strip():
            raise InputError("message is empty: say what you would like, e.g. 'something like Dracula'")
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS]
            notices.append(reply("long_message", detect_language(message), chars=MAX_MESSAGE_CHARS))
        conv = Conversation.load(self.memory, user_id, session_id)
        conv.persist = persist
        if prior and not conv.turns:
            self._import_turns(conv, prior)
        last = conv.last_cards()
        vocab = self.vocabulary()
        u = parse_message(message, vocab, has_last_list=bool(last))
        if not _WORDY.search(message):  # "2?" or an emoji says nothing of the language: keep the conversation's
            u = replace(u, language=conv.language() or u.language)
        llm = self.parts.llm()
        if llm is not None and llm.prompt_style == "chat" and llm.supports_json_schema:
            # Instruction-tuned models read the message too; base models would babble here.
            with self._model() as model:
                if model is not None:
                    u = understand_with_llm(model, self._prompts(overrides), message, last, vocab, u)
        conv.add(self.memory, "user", message, {"understanding": u.to_dict(), "context": context or {}})
        return Understood(u, conv, tuple(last), target_item(u, last), tuple(notices))

    def _learn_request(self, understood: Understood, message: str, said_at: float) -> None:
        """Keep a request in words as a `search` event at the time it was said (`learn_from_requests`):
        the items the user has after it are what those words led to, for the next fit's `asked`
        signal. A message with no content words, or one about a card shown ("more like the first
        one", "I've read the first one"), teaches nothing."""
        conv, u = understood.conversation, understood.understanding
        if not (conv.persist and self.settings.learn_from_requests) or u.intent == "feedback" or u.reference is not None:
            return
        if not asked_terms(message):
            return
        self.store.add_events([Event(user_id=conv.user_id, type="search", timestamp=said_at, text=message[:MAX_SAID])])

    def _import_turns(self, conv: Conversation, prior: Sequence[dict]) -> None:
        """Earlier turns from elsewhere, stored as if said here: the user's with their reading, the
        assistant's with the titles it named (its suggestions)."""
        vocab = self.vocabulary()
        for turn in validate_turns(prior):
            if turn["role"] == "user":
                u = parse_message(turn["content"], vocab)
                conv.add(self.memory, "user", turn["content"], {"understanding": u.to_dict(), "imported": True})
            else:
                named = list(dict.fromkeys(m.item_id for m in vocab.find_mentions(turn["content"])))
                conv.add(self.memory, "assistant", turn["content"], {"suggested": named, "imported": True})

    def _recommend(self, understood: Understood, context, k, overrides, trace, timer, exclude: Iterable[str] = ()) -> Generator[TurnEvent, None, tuple[dict, dict]]:
        """plan -> retrieve -> rank -> explain; returns the turn's tokens and its request note."""
        u, conv = understood.understanding, understood.conversation
        vocab = self.vocabulary()
        plan = plan_turn(understood, vocab=vocab, store=self.store, users=self.users, settings=self.settings,
                         context=context, k=k, exclude=set(exclude))
        prompts, known_titles = self._prompts(overrides), self._known_titles()
        proposals = self._propose(understood, plan, vocab, prompts)
        _extend(trace, proposals.trace)
        if proposals.item_ids:
            plan = replace(plan, request=replace(plan.request, proposed_item_ids=list(proposals.item_ids)),
                           fallbacks=tuple(replace(r, proposed_item_ids=list(proposals.item_ids)) for r in plan.fallbacks))
        if proposals.lines or proposals.trace:
            plan = replace(plan, note={**plan.note, "proposals": proposals.stats()})
        retrieved = retrieve(self.parts.retriever(), plan, conv.user_id, max(self.settings.candidates, plan.k), u.language)
        for text in retrieved.notices:
            yield NoticeEvent(text)
        timer.lap("retrieve")
        if not retrieved.candidates:
            empty = self.store.item_count() == 0
            # "Loosen a constraint" only where there is one to loosen.
            text = reply("catalog_empty" if empty else "nothing_matches" if plan.request.is_filtered() else "nothing_found", u.language)
            yield MessageEvent(text, "answer")
            if not empty:
                conv.add(self.memory, "assistant", text, {"cards": [], "constraints": plan.constraints})
            return dict(proposals.tokens), dict(plan.note)
        yield CardsEvent([card_of(c, u.language) for c in retrieved.candidates[: plan.k]], "retrieved")

        with self._model(timer.elapsed_s()) as llm:
            if llm is None and self.parts.llm() is not None:
                yield NoticeEvent(reply("model_busy", u.language), "info")
            ranked = rank_step(llm, prompts, self.store, retrieved, plan, self.settings, priors=self._rank_priors,
                               llm_error=self.parts.llm_error(), language=u.language)
            _extend(trace, ranked.trace)
            timer.lap("rank")
            if ranked.note:
                yield NoticeEvent(ranked.note, "warning")
            shown = ranked.candidates[: plan.k]
            cards = [card_of(c, u.language) for c in shown]
            yield CardsEvent(cards, "ranked")
            explained = yield from explain(llm, prompts, shown, plan, u.language, settings=self.settings,
                                           known_titles=known_titles, noticed=bool(ranked.note),
                                           remembered=self._remembered.bind(self.parts.llm()),
                                           wait_s=self.settings.llm_turn_budget_s - timer.elapsed_s())
            # Shown without the model's words (busy, out of time): the hook writer writes them next.
            self.unwritten.extend(i for i, (_, source) in explained.reasons.items() if source == "evidence")
            _extend(trace, explained.trace)
            timer.lap("explain")
            final = with_reasons(cards, explained)
            text = summary(llm, prompts, final, plan, u.language, settings=self.settings, known_titles=known_titles)
        timer.lap("summary")
        yield MessageEvent(text, "summary")
        conv.add(self.memory, "assistant", text,
                 {"cards": [c.to_dict() for c in final], "constraints": plan.constraints, "request": dict(plan.note)})
        return add_tokens(add_tokens(dict(proposals.tokens), ranked.tokens), explained.tokens), dict(plan.note)

    def _propose(self, understood: Understood, plan, vocab, prompts) -> Proposals:
        """The optional propose step: titles the model names, before retrieval (llm_proposals)."""
        if not wants_proposals(self.settings.llm_proposals, self.parts.llm()):
            return Proposals()
        named = [vocab.title_of[i] for i in plan.request.seed_item_ids if i in vocab.title_of]
        with self._model() as llm:
            if llm is None:  # busy with other turns: retrieval alone this time
                return Proposals()
            return propose(llm, prompts, understood, vocab, named)

    def _known_titles(self) -> set[str]:
        return set(self.vocabulary().title_of.values())

    def recommend(self, user_id: str, query: str = "", k: int | None = None, filters: dict | None = None) -> dict:
        """One-shot recommendations (no conversation): items with reasons and a summary."""
        validate_user_id(user_id)
        filters = filters or {}
        u = Understanding(
            intent="recommend",
            query=query,
            categories=list(filters.get("categories", [])),
            exclude_categories=list(filters.get("exclude_categories", [])),
            creators=list(filters.get("creators", [])),
            exclude_creators=list(filters.get("exclude_creators", [])),
            year_min=filters.get("year_min"),
            year_max=filters.get("year_max"),
        )
        if query:
            parsed = parse_message(query, self.vocabulary())
            u = replace(u, item_ids=parsed.item_ids, mentions=parsed.mentions, language=parsed.language)
        understood = Understood(u, Conversation(user_id, "", persist=False), (), None)
        timer = Timer()
        cards: list[dict] = []
        summary_text = ""
        notices: list[str] = []
        steps = self._recommend(understood, None, k, None, None, timer, exclude=filters.get("exclude_ids", []))
        tokens: dict = {}
        while True:
            try:
                event = next(steps)
            except StopIteration as done:
                tokens = done.value[0]
                break
            if isinstance(event, CardsEvent):
                cards = [c.to_dict() for c in event.cards]
            elif isinstance(event, ReasonEvent):
                for card in cards:
                    if card["item_id"] == event.item_id:
                        card["reason"], card["reason_source"] = event.text, event.source
            elif isinstance(event, MessageEvent):
                summary_text = event.text
            elif isinstance(event, NoticeEvent):
                notices.append(event.text)
        return {"items": cards, "summary": summary_text, "notices": notices, "timings_ms": timer.marks, "tokens": tokens}

    # --- users (assistant/users.py) -----------------------------------------------------------

    def feedback(self, user_id: str, item_id: str, kind: str, source: str | None = None) -> None:
        self.users.feedback(user_id, item_id, kind, source)

    def get_profile(self, user_id: str, events=None) -> dict:
        return self.users.get_profile(user_id, events)

    def update_profile(self, user_id: str, patch: dict) -> dict:
        return self.users.update_profile(user_id, patch)

    def delete_user(self, user_id: str) -> dict:
        return self.users.delete_user(user_id)

    def sessions(self, user_id: str) -> list[dict]:
        return self.users.sessions(user_id)

    def messages(self, user_id: str, session_id: str) -> list[dict]:
        return self.users.messages(user_id, session_id)


def target_item(u: Understanding, last: Sequence[dict]) -> str | None:
    """The item a message points at: a named title first, else its reference into the last list."""
    if u.item_ids and not u.more_like:
        return u.item_ids[0]
    if u.reference is not None and last:
        index = u.reference if u.reference >= 0 else len(last) + u.reference
        if 0 <= index < len(last):
            return last[index]["item_id"]
    if u.item_ids:
        return u.item_ids[0]
    return None


def _extend(trace: list | None, entries: Iterable[dict]) -> None:
    """The caller's trace (the prompt lab's record of model calls) gets a step's entries."""
    if trace is not None:
        trace.extend(entries)
