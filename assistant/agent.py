"""The agent: one chat turn as a pipeline (understand -> retrieve -> rank -> explain) of events."""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterable, Iterator, Sequence

from core.errors import InputError, NotFoundError, RecassistError
from assistant.events import (
    Card,
    CardsEvent,
    DoneEvent,
    MessageEvent,
    NoticeEvent,
    ReasonDelta,
    ReasonEvent,
    TurnEvent,
)
from assistant.memory import Conversation
from assistant.profile import apply_patch, derive_profile, profile_query
from assistant.replies import REPLIES, quoted, reply, year_text
from assistant.understand import (
    CatalogVocabulary,
    Understanding,
    apply_context,
    detect_language,
    merge_constraints,
    parse_message,
    read_context,
    understand_with_llm,
)
from retrieval.records import FEEDBACK_TYPES, Candidate, Event, Evidence, item_length

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4000
TOPIC_CHARS = 200  # a refinement carries the earlier request's words; this much of them at most
_WORDY = re.compile(r"[A-Za-z\u4e00-\u9fff]")  # a message with letters or Chinese characters shows its language
# ASCII only: an id is a key, and look-alike letters from other scripts would make look-alike users.
def liked_titles(history: Iterable[Event], title_of: dict[str, str]) -> set[str]:
    """What a reason may say the user liked: items they clearly liked (a like, a purchase, a good
    rating; a view is not enough) and never disliked. Nothing else."""
    net: dict[str, float] = {}
    for e in history:
        if e.item_id in title_of:
            net[e.item_id] = net.get(e.item_id, 0.0) + (e.weight if e.weight > 0 else float("-inf"))
    return {title_of[i] for i, w in net.items() if w >= 1.0}


_USER_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,128}")
MODEL_BUSY = REPLIES["model_busy"]["en"]


MAX_PRIOR_TURNS = 100


def validate_turns(turns: Sequence[dict]) -> list[dict]:
    """Earlier turns as [{"role", "content"}]: user and assistant kept, system turns skipped."""
    if len(turns) > MAX_PRIOR_TURNS:
        raise InputError(f"history has {len(turns)} turns; send at most the last {MAX_PRIOR_TURNS}")
    out = []
    for n, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in ("user", "assistant", "system") or not isinstance(content, str):
            raise InputError(f"history[{n}]: each turn needs a role (user, assistant or system) and a text content")
        if role != "system" and content.strip():
            out.append({"role": role, "content": content[:MAX_MESSAGE_CHARS]})
    return out


def validate_user_id(user_id: str) -> str:
    """User ids are 1-128 ASCII letters, digits and . _ - @ :"""
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise InputError(
            f"invalid user_id {user_id!r}: use 1-128 ASCII letters, digits or . _ - @ : characters"
        )
    return user_id


class _Timer:
    def __init__(self):
        self.marks: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = round(self.marks.get(name, 0.0) + (now - self._t) * 1000, 1)
        self._t = now


class ModelTurns:
    """Whole turns take a one-call-at-a-time model in turn, so one answer finishes before the next starts.

    At most `seats` turns wait for it, each for up to `wait_s`; any other turn goes without the model
    at once. Under load, an answer now beats a better one after every turn queued ahead of it.
    """

    def __init__(self, seats: int = 1):
        self._model = threading.Lock()
        self._count = threading.Lock()
        self._admitted = 0  # turns holding or waiting for the model
        self._limit = seats + 1

    @contextmanager
    def take(self, wait_s: float) -> Iterator[bool]:
        """True while this turn holds the model; False if it is busy (the turn goes on without it)."""
        with self._count:
            admitted = self._admitted < self._limit
            if admitted:
                self._admitted += 1
        got = admitted and self._model.acquire(timeout=wait_s)
        try:
            yield got
        finally:
            if got:
                self._model.release()
            if admitted:
                with self._count:
                    self._admitted -= 1


class Agent:
    """Answers chat turns for any user from the engine's components."""

    def __init__(self, engine):
        self.engine = engine
        self.settings = engine.settings
        self._vocab: CatalogVocabulary | None = None
        self._vocab_size = -1
        self._model_turns = ModelTurns()
        self._rank_priors: dict = {}  # calibration answers of the loaded model, reused every turn

    @property
    def store(self):
        return self.engine.store

    @property
    def memory(self):
        return self.engine.memory

    def vocabulary(self) -> CatalogVocabulary:
        """Catalog titles/creators/categories, rebuilt when the catalog size changes."""
        size = self.store.item_count()
        if self._vocab is None or size != self._vocab_size:
            self._vocab = CatalogVocabulary(self.store.iter_items())
            self._vocab_size = size
        return self._vocab

    def warm_up(self) -> None:
        """Before serving a local model: the ranking's calibration call, so the first user does not wait for it.

        Hosted models are not asked at start-up (a slow server would hold the start); their first turn asks.
        """
        llm = self.engine.llm
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

    # --- one chat turn ------------------------------------------------------------------

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
        """
        validate_user_id(user_id)
        timer = _Timer()
        notices: list[str] = []
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
        u = parse_message(message, self.vocabulary(), has_last_list=bool(last))
        if not _WORDY.search(message):  # "2?" or an emoji says nothing of the language: keep the conversation's
            u.language = conv.language() or u.language
        llm = self._llm()
        if llm is not None and llm.prompt_style == "chat" and llm.supports_json_schema:
            # Instruction-tuned models read the message too; base models would babble here.
            with self._model() as model:
                if model is not None:
                    u = understand_with_llm(model, self._prompts(prompt_overrides), message, last, self.vocabulary(), u)
        timer.lap("understand")
        conv.add(self.memory, "user", message, {"understanding": u.to_dict(), "context": context or {}})
        for text in notices:
            yield NoticeEvent(text, "warning")

        target = self._target_item(u, last)
        state = {"tokens": {}, "request": {}}
        if u.intent == "smalltalk":
            yield from self._smalltalk(conv, u)
        elif u.intent == "why":
            yield from self._why(conv, u, target, last)
        elif u.intent == "about_item":
            yield from self._about(conv, u, target)
        else:
            if u.intent == "feedback" or (u.feedback and u.item_ids):
                yield from self._feedback_in_words(conv, u, target)
            yield from self._recommend(conv, u, target, last, context, k, prompt_overrides, trace, timer, state)
        timer.lap("finish")
        yield DoneEvent(conv.session_id, u.intent, timer.marks, state["tokens"], state["request"])

    def _import_turns(self, conv: Conversation, prior: Sequence[dict]) -> None:
        """Earlier turns from elsewhere, stored as if said here: the user's with their reading, the
        assistant's with the titles it named (its suggestions)."""
        vocab = self.vocabulary()
        for n, turn in enumerate(validate_turns(prior)):
            if turn["role"] == "user":
                u = parse_message(turn["content"], vocab)
                conv.add(self.memory, "user", turn["content"], {"understanding": u.to_dict(), "imported": True})
            else:
                named = list(dict.fromkeys(m.item_id for m in vocab.find_mentions(turn["content"])))
                conv.add(self.memory, "assistant", turn["content"], {"suggested": named, "imported": True})

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
            u.item_ids = parsed.item_ids
            u.mentions = parsed.mentions
            u.language = parsed.language
        conv = Conversation(user_id, "", persist=False)
        timer, state = _Timer(), {"tokens": {}, "request": {}}
        cards: list[dict] = []
        summary = ""
        notices: list[str] = []
        extra_exclude = set(filters.get("exclude_ids", []))
        for event in self._recommend(conv, u, None, [], None, k, None, None, timer, state, exclude=extra_exclude):
            if isinstance(event, CardsEvent):
                cards = [c.to_dict() for c in event.cards]
            elif isinstance(event, ReasonEvent):
                for card in cards:
                    if card["item_id"] == event.item_id:
                        card["reason"], card["reason_source"] = event.text, event.source
            elif isinstance(event, MessageEvent):
                summary = event.text
            elif isinstance(event, NoticeEvent):
                notices.append(event.text)
        return {"items": cards, "summary": summary, "notices": notices, "timings_ms": timer.marks, "tokens": state["tokens"]}

    # --- intents ----------------------------------------------------------------------------

    def _target_item(self, u: Understanding, last: list[dict]) -> str | None:
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

    def _smalltalk(self, conv: Conversation, u: Understanding) -> Iterator[TurnEvent]:
        zh = u.language == "zh"
        if not self.store.events_for_user(conv.user_id, limit=1) and not self._overrides(conv.user_id).get("onboarding"):
            text = (
                "你好！先告诉我：最近你喜欢过哪些作品？有没有不想看的类型？"
                if zh
                else "Hi! To get you started: which titles have you loved lately, and is there anything you'd rather avoid? "
                "You can also just say what you're in the mood for."
            )
            kind = "onboarding"
        else:
            text = (
                "我专门帮你找值得一读/一看的作品。想要什么样的？"
                if zh
                else "I'm here to help you find your next favourite. Ask for something, e.g. 'a gothic novel, nothing too long'."
            )
            kind = "smalltalk"
        yield MessageEvent(text, kind)
        conv.add(self.memory, "assistant", text, {"kind": kind})

    def _why(self, conv: Conversation, u: Understanding, target: str | None, last: list[dict]) -> Iterator[TurnEvent]:
        from assistant.explain import evidence_reason, hook_of, is_chinese

        card = next((c for c in last if c["item_id"] == target), None) or (last[0] if last and target is None else None)
        if card is None:
            text = reply("why_which", u.language)
        else:
            item = self.store.get_item(card["item_id"])
            because = evidence_reason(Candidate(item, card["score"], _evidence_from_dict(card.get("evidence") or {})), u.language) if item else ""
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
        conv.add(self.memory, "assistant", text, {"kind": "why", "item_id": card and card["item_id"]})

    def _about(self, conv: Conversation, u: Understanding, target: str | None) -> Iterator[TurnEvent]:
        from assistant.explain import summarize_item

        item = self.store.get_item(target) if target else None
        if item is None:
            text = reply("about_which", u.language)
        else:
            if not self.settings.effective_llm_summary:  # the item's own description, the model not asked
                text = summarize_item(None, self._prompts(), item, u.language)
            else:
                with self._model() as llm:
                    text = summarize_item(llm, self._prompts(), item, u.language, known_titles=set(self.vocabulary().title_of.values()))
            if u.language == "zh":
                text = quoted(item.title, "zh") + (f"（{year_text(item.year, 'zh')}）" if item.year is not None else "") + f"：{text}"
            else:
                text = f"{item.title}" + (f" ({item.year})" if item.year is not None else "") + f": {text}"
        yield MessageEvent(text, "answer")
        conv.add(self.memory, "assistant", text, {"kind": "about", "item_id": target})

    def _feedback_in_words(self, conv: Conversation, u: Understanding, target: str | None) -> Iterator[TurnEvent]:
        targets = [target] if target else []
        if u.item_ids and u.feedback:
            targets = list(dict.fromkeys(targets + u.item_ids))
        if not targets:
            yield MessageEvent(reply("feedback_which", u.language), "feedback")
            return
        # Each named title gets what was said about it ("loved X but Y was meh"); else the message's verdict.
        stance_of = {m["item_ids"][0]: m["stance"] for m in u.mentions}
        said = {"liked": "like", "disliked": "dislike", "seen": "seen"}
        for item_id in targets:
            if conv.persist:
                self.feedback(conv.user_id, item_id, said.get(stance_of.get(item_id, ""), u.feedback or "like"),
                              source=f"chat {conv.session_id}")
        items = [self.store.get_item(i) for i in targets]
        titles = ("" if u.language == "zh" else ", ").join(quoted(item.title, u.language) for item in items if item)
        yield MessageEvent(reply(f"feedback_{u.feedback or 'like'}", u.language, titles=titles), "feedback")

    def _recommend(self, conv, u, target, last, context, k, overrides, trace, timer, state, exclude=None):
        from retrieval.candidates import Request, words

        k = max(1, min(int(k or self.settings.top_k), 20))
        vocab = self.vocabulary()
        last_years = [vocab.years.get(c["item_id"]) for c in last]
        constraints = merge_constraints(conv.constraints(), u, last_years)
        if "<last>" in constraints["exclude_creators"]:
            constraints["exclude_creators"].remove("<last>")
            ref = target or (last[0]["item_id"] if last else None)
            creator = vocab.creator_of.get(ref) if ref else None
            if creator and creator not in constraints["exclude_creators"]:
                constraints["exclude_creators"].append(creator)
        # The whole conversation is evidence: works named in any turn (this one newest), verdicts on them.
        said = conv.evidence()
        said_no = said.said_no | {i for m in u.mentions if m["stance"] == "disliked" for i in m["item_ids"]}
        named = said.named | {i for m in u.mentions for i in m["item_ids"]}  # every id of every named work
        seeds = [i for i in said.seeds if i not in said_no] + [i for i in u.item_ids if i not in said_no and i not in said.seeds]
        if u.more_like and target and target not in said_no:
            seeds = [i for i in seeds if i != target] + [target]
        history = self.store.events_for_user(conv.user_id)
        state["liked_titles"] = liked_titles(history, vocab.title_of)
        profile = self.get_profile(conv.user_id, history)
        if not history and u.query and conv.persist and not profile["onboarding"]:
            # A new user's first words about their taste are profile signals at once.
            profile = self.update_profile(conv.user_id, {"onboarding": [u.query]})
        ctx = read_context(context, vocab)
        # The turn sees the context's filters too; the conversation remembers only its own.
        turn = apply_context(constraints, ctx)
        topic = u.query
        if u.intent == "refine" or (u.intent == "feedback" and not u.item_ids):
            # "shorter", "not that one": still about what was asked for before ("江南水乡的散文").
            topic = " ".join(filter(None, [conv.last_request().get("topic", ""), u.query]))[-TOPIC_CHARS:].strip()
        prefer = list(u.prefer_categories)
        if not (u.item_ids or u.categories or u.prefer_categories or u.creators) and len(words(u.query)) <= 1:
            # "What should I read tonight?" after "I only read gothic horror": the taste said before
            # (in this session or the turns a client sent) is what this turn is about.
            earlier_topic, earlier_categories = conv.taste_so_far()
            topic = " ".join(filter(None, [earlier_topic, topic]))[-TOPIC_CHARS:].strip()
            prefer += [c for c in earlier_categories if c not in prefer]
        query = " ".join(filter(None, [topic, ctx.words, profile_query(profile) if not topic else ""]))
        avoid = [d for d in profile.get("dislikes", []) if d in vocab.categories.values() and d not in turn["categories"]]
        exclude_ids = set(exclude or ()) | set(seeds) | named
        if u.intent == "refine" or u.feedback:
            exclude_ids |= set(conv.shown_ids())
        request = Request(
            query=query,
            categories=turn["categories"],
            exclude_categories=list(dict.fromkeys(turn["exclude_categories"] + avoid)),
            creators=turn["creators"],
            exclude_creators=turn["exclude_creators"],
            year_min=turn["year_min"],
            year_max=turn["year_max"],
            exclude_ids=exclude_ids,
            exclude_terms=turn.get("exclude_terms", []),
            extra_filters=ctx.extra_filters,
            max_length=ctx.max_length,
            seed_item_ids=seeds,
            avoid_item_ids=sorted(said_no - set(seeds)),
            prefer_categories=[c for c in prefer if c not in turn["exclude_categories"] and c not in turn["categories"]],
            diversity=0.3,
        )
        state["request"] = {
            **turn, "query": query, "topic": topic, "seed_item_ids": seeds, "avoid_categories": avoid,
            "context": ctx.note, "extra_filters": ctx.extra_filters, "max_length": ctx.max_length,
        }
        n = max(self.settings.candidates, k)
        candidates = self.engine.retriever.candidates(conv.user_id, request, k=n, history=history)
        if not candidates and exclude_ids - set(seeds):
            request.exclude_ids = set(seeds) | set(exclude or ())
            candidates = self.engine.retriever.candidates(conv.user_id, request, k=n, history=history)
        if not candidates and avoid:
            request.exclude_categories = turn["exclude_categories"]
            candidates = self.engine.retriever.candidates(conv.user_id, request, k=n, history=history)
        if constraints.get("shorter") or ctx.prefer_shorter:
            candidates, note = _prefer_shorter(candidates, u.language)
            if note:
                yield NoticeEvent(note)
        timer.lap("retrieve")
        if not candidates and self.store.item_count() == 0:
            text = reply("catalog_empty", u.language)
            yield MessageEvent(text, "answer")
            return
        if not candidates:
            text = reply("nothing_matches", u.language)
            yield MessageEvent(text, "answer")
            conv.add(self.memory, "assistant", text, {"cards": [], "constraints": constraints})
            return
        yield CardsEvent([_card(c, u.language) for c in candidates[:k]], "retrieved")

        with self._model() as llm:
            if llm is None and self._llm() is not None:
                yield NoticeEvent(reply("model_busy", u.language), "info")
            ranked, rank_note = self._rank(llm, conv, candidates, history, u, context, overrides, trace, state)
            timer.lap("rank")
            if rank_note:
                state["model_noticed"] = True  # one notice per turn about the model is enough
                yield NoticeEvent(rank_note, "warning")
            shown = ranked[:k]
            cards = [_card(c, u.language) for c in shown]
            yield CardsEvent(cards, "ranked")

            by_id = {card.item_id: card for card in cards}
            for event in self._reasons(llm, shown, profile, u, context, overrides, trace, state):
                if isinstance(event, ReasonEvent):
                    by_id[event.item_id].reason, by_id[event.item_id].reason_source = event.text, event.source
                yield event
            timer.lap("explain")
            from assistant.explain import summarize_list

            summary = summarize_list(
                llm if self.settings.effective_llm_summary else None, self._prompts(overrides), cards, u.language, request=topic,
                known_titles=set(vocab.title_of.values()),
            )
        timer.lap("summary")
        yield MessageEvent(summary, "summary")
        conv.add(
            self.memory,
            "assistant",
            summary,
            {"cards": [c.to_dict() for c in cards], "constraints": constraints, "request": state["request"]},
        )

    # --- LLM stages, each with a fallback that never leaves the user empty-handed ----------

    def _llm(self):
        return self.engine.llm

    @contextmanager
    def _model(self):
        """The LLM for this turn's stages: None when there is none, or when it stays busy with
        other turns (a backend that runs one call at a time is taken by whole turns, see ModelTurns)."""
        llm = self._llm()
        if llm is None or not llm.one_call_at_a_time:
            yield llm
            return
        with self._model_turns.take(self.settings.llm_timeout_s) as got:
            yield llm if got else None

    def _prompts(self, overrides: dict | None = None):
        """The templates for the loaded model's prompt style; the prompt lab may override some."""
        from prompts import Prompts, parse_template

        prompts = Prompts.for_llm(self._llm(), self.settings.prompt_variant, self.settings.prompt_variants_dir)
        for key, text in (overrides or {}).items():
            template = parse_template(text, f"<prompt lab: {key}>")
            prompts.override(template)
        return prompts

    def _rank(self, llm, conv, candidates, history, u, context, overrides, trace, state):
        if llm is None:  # no note when it is off on purpose or busy (the turn said so)
            error = self.engine.llm_error
            note = f"The language model is unavailable ({error}); showing retrieval order." if error else None
            return candidates, note
        from assistant.ranking import rank

        items = self.store.get_items([e.item_id for e in history if e.item_id and e.weight > 0][-20:])
        history_items = [items[e.item_id] for e in history if e.item_id in items and e.weight > 0][-10:]
        blend = self.settings.effective_rank_blend
        try:
            result = rank(
                llm,
                self._prompts(overrides),
                history_items,
                candidates,
                shuffles=self.settings.rank_shuffles,
                blend=blend,
                priors=self._rank_priors,
                request=_prompt_request(state["request"].get("query", u.query), state["request"].get("context")),
            )
        except RecassistError as exc:
            log.warning("ranking failed, using retrieval order: %s", exc)
            return candidates, "The ranking model failed; showing retrieval order."
        state["tokens"]["rank_prompt"] = result.total_prompt_tokens
        state["tokens"]["prompt"] = state["tokens"].get("prompt", 0) + result.total_prompt_tokens
        if trace is not None:
            unasked = (
                f"(not asked: rank_blend is 0 for {llm.model}, the weight the evaluation chose for it; "
                f"set RECASSIST_RANK_BLEND=0.3 to rank with this template)"
            )
            asked = [call["prompt"] for call in result.raw if not call.get("calibration")]
            trace.append({
                "stage": "rank",
                "method": result.method,
                "prompt": asked[0] if asked else (unasked if blend <= 0 else None),
                "raw": result.raw,
                "fallback": result.fallback,
            })
        note = _rank_note(result.fallback) if result.fallback else None
        # Cards show the blended score, so the order and the numbers agree.
        ranked = [replace(c, score=result.scores.get(c.item.id, c.score)) for c in result.candidates]
        return ranked or candidates, note

    def _reasons(self, llm, shown: list[Candidate], profile, u, context, overrides, trace, state) -> Iterator[TurnEvent]:
        from assistant.explain import evidence_reason, llm_reasons

        if llm is None or not self.settings.llm_reasons:
            for c in shown:
                yield ReasonEvent(c.item.id, evidence_reason(c, u.language), "evidence")
            return
        known_titles = set(self.vocabulary().title_of.values())
        deadline = time.monotonic() + self.settings.llm_timeout_s
        done: set[str] = set()
        request = _prompt_request(state["request"].get("topic", u.query), state["request"].get("context"))
        chunks = llm_reasons(
            llm, self._prompts(overrides), shown, request, u.language,
            known_titles=known_titles, liked_titles=state.get("liked_titles", ()),
        )
        for chunk in chunks:
            if chunk.final is None:
                yield ReasonDelta(chunk.item_id, chunk.delta or "")
            else:
                done.add(chunk.item_id)
                if trace is not None and chunk.prompt is not None:
                    trace.append({
                        "stage": "reason", "item_id": chunk.item_id, "prompt": chunk.prompt, "raw": chunk.raw,
                        "kept": chunk.source == "llm", "reason": chunk.final, "problems": list(chunk.problems),
                    })
                if chunk.failure and not state.get("model_noticed"):
                    yield NoticeEvent(reply("reasons_failed", u.language, failure=chunk.failure[:160]), "warning")
                if chunk.source == "llm":
                    state["tokens"]["completion"] = state["tokens"].get("completion", 0) + llm.count_tokens(chunk.final)
                yield ReasonEvent(chunk.item_id, chunk.final, chunk.source)
            if time.monotonic() > deadline:
                # Out of time: the remaining cards keep their evidence-based reasons.
                chunks.close()
                yield NoticeEvent(reply("model_slow", u.language), "info")
                break
        for c in shown:
            if c.item.id not in done:
                yield ReasonEvent(c.item.id, evidence_reason(c, u.language), "evidence")

    # --- feedback and profile --------------------------------------------------------------

    def feedback(self, user_id: str, item_id: str, kind: str, source: str | None = None) -> None:
        """Store a card's like/dislike/not-interested/seen as an event; the next answer reflects it.

        source: where it was said ("chat <session id>"), kept as the event's text so that what a
        conversation taught can be traced to it."""
        validate_user_id(user_id)
        if kind not in FEEDBACK_TYPES:
            raise InputError(f"feedback kind {kind!r} is not one of {', '.join(FEEDBACK_TYPES)}")
        if self.store.get_item(item_id) is None:
            raise NotFoundError(f"item {item_id!r} is not in the catalog")
        self.store.add_events([Event(user_id=user_id, type=kind, timestamp=time.time(), item_id=item_id, text=source)])

    def _overrides(self, user_id: str) -> dict:
        return (self.memory.get_profile(user_id) or {}).get("overrides", {})

    def get_profile(self, user_id: str, events: list[Event] | None = None) -> dict:
        """The user's profile: derived from every event so far (or `events`, when the caller
        already read them), plus their own corrections."""
        validate_user_id(user_id)
        events = self.store.events_for_user(user_id) if events is None else events
        items = self.store.get_items([e.item_id for e in events if e.item_id])
        return derive_profile(user_id, events, items, self._overrides(user_id))

    def update_profile(self, user_id: str, patch: dict) -> dict:
        """Apply a user's correction (interests, summary, dislikes) and return the new profile."""
        validate_user_id(user_id)
        allowed = {"interests", "dislikes", "summary", "removed_interests", "removed_dislikes", "onboarding"}
        unknown = set(patch) - allowed
        if unknown:
            raise InputError(f"unknown profile fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        stored = self.memory.get_profile(user_id) or {}
        stored["overrides"] = apply_patch(stored.get("overrides", {}), patch)
        self.memory.save_profile(user_id, stored)
        return self.get_profile(user_id)

    def delete_user(self, user_id: str) -> dict:
        """Remove the user from every store: events, conversations, profile, and what was fitted on them."""
        validate_user_id(user_id)
        removed = {**self.store.delete_user(user_id), **self.memory.delete_user(user_id)}
        if removed.get("events") and "retriever" in self.engine.__dict__:
            # Popularity, transitions and the collaborative vectors (in process and in Chroma) were
            # fitted on this user's events too; refit now so nothing derived from them survives.
            self.engine.retriever.refit(self.store)
        return removed

    def sessions(self, user_id: str) -> list[dict]:
        validate_user_id(user_id)
        return self.memory.list_sessions(user_id)

    def messages(self, user_id: str, session_id: str) -> list[dict]:
        validate_user_id(user_id)
        return self.memory.get_messages(user_id, session_id)


def _card(c: Candidate, language: str = "en") -> Card:
    from assistant.explain import evidence_reason

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


def _rank_note(fallback: str) -> str:
    """One short notice for a ranking that fell back: why, then what the user sees instead."""
    return f"Showing retrieval order: the model's ranking was unusable ({fallback[:160]})."


def _prompt_request(query: str, context_note: str | None) -> str:
    """The request as the prompts see it: the message's words plus the platform's context."""
    return f"{query} (context: {context_note})".strip() if context_note else query


def _prefer_shorter(candidates: list[Candidate], language: str = "en") -> tuple[list[Candidate], str | None]:
    """Keep the shorter half when the catalog knows lengths; otherwise say we can't tell."""
    lengths = [item_length(c.item) for c in candidates]
    known = [n for n in lengths if n is not None]
    if not known:
        return candidates, reply("no_lengths", language)
    median = sorted(known)[len(known) // 2]
    return [c for c, n in zip(candidates, lengths) if (n or median) <= median], None


def _evidence_from_dict(data: dict) -> Evidence:
    """The Evidence a stored card carried (cards are persisted as JSON in the conversation)."""
    return Evidence(
        near_history=[(h["item_id"], h["title"], float(h["similarity"])) for h in data.get("near_history", [])],
        matched_words=list(data.get("matched_words", [])),
        shared_categories=list(data.get("shared_categories", [])),
        shared_creators=list(data.get("shared_creators", [])),
        signals=dict(data.get("signals", {})),
    )
