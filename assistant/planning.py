"""The plan step: from what a message asks, in its conversation, to the retrieval request.

The whole conversation is evidence: works named in any turn are seeds unless said no to; said-no
titles and turned-down suggestions count against; every id of a named work is excluded; a vague
turn ("What should I read tonight?") is about the taste said before. Constraints said in earlier
turns stay in force until changed; the platform's context adds filters for this turn only.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from assistant.profile import profile_query
from assistant.turn import Plan, Understood, liked_titles
from assistant.context import apply_context, read_context
from assistant.understand import merge_constraints
from assistant.vocabulary import CatalogVocabulary
from retrieval.asked import CONTEXT_CHARS
from retrieval.request import Request, words

TOPIC_CHARS = 200  # a refinement carries the earlier request's words; this much of them at most

# The MMR trade-off of a turn's list (retrieval.fusion.mmr; 0 = relevance only). On the ReDial tuning
# folds 0 > 0.1 > 0.3 (evaluation/reports/dialogs-tuning.md); 0 would let five cards be one series.
DIVERSITY = 0.1


def said_once(*parts: str) -> str:
    """Request words joined, each word once (a refinement of a refinement repeated the first
    request's words once per turn), the latest TOPIC_CHARS of them."""
    words = " ".join(dict.fromkeys(" ".join(filter(None, parts)).split()))
    return words[-TOPIC_CHARS:].strip()


def conversation_words(conv) -> str:
    """The user's messages in this conversation, this one included, the newest CONTEXT_CHARS of them
    (a request reads like the past contexts retrieval.asked matches it with)."""
    said = " ".join(" ".join(t.content.split()) for t in conv.turns if t.role == "user")
    return said[-CONTEXT_CHARS:].strip()


def plan(
    understood: Understood,
    *,
    vocab: CatalogVocabulary,
    store,
    users,
    settings,
    context: dict | None,
    k: int | None,
    exclude: Collection[str] = (),
) -> Plan:
    """The request for this turn, the looser ones to fall back on, and what later steps need."""
    u, conv, last, target = understood.understanding, understood.conversation, understood.last, understood.target
    k = max(1, min(int(k or settings.top_k), 20))
    last_years = [vocab.years.get(c["item_id"]) for c in last]
    constraints = merge_constraints(conv.constraints(), u, last_years)
    if "<last>" in constraints["exclude_creators"]:
        constraints["exclude_creators"].remove("<last>")
        ref = target or (last[0]["item_id"] if last else None)
        creator = vocab.creator_of.get(ref) if ref else None
        if creator and creator not in constraints["exclude_creators"]:
            constraints["exclude_creators"].append(creator)
    # Works named in any turn (this one newest) and the verdicts on them.
    said = conv.evidence()
    said_no = said.said_no | {i for m in u.mentions if m["stance"] == "disliked" for i in m["item_ids"]}
    named = said.named | {i for m in u.mentions for i in m["item_ids"]}  # every id of every named work
    seeds = [i for i in said.seeds if i not in said_no] + [i for i in u.item_ids if i not in said_no and i not in said.seeds]
    if u.more_like and target and target not in said_no:
        seeds = [i for i in seeds if i != target] + [target]
    history = store.events_for_user(conv.user_id)
    profile = users.get_profile(conv.user_id, history)
    if not any(e.item_id for e in history) and u.query and conv.persist and not profile["onboarding"]:
        # A new user's first words about their taste are profile signals at once (what they asked
        # in words before, kept as searches, is no behaviour yet).
        profile = users.update_profile(conv.user_id, {"onboarding": [u.query]})
    ctx = read_context(context, vocab)
    # The turn sees the context's filters too; the conversation remembers only its own.
    turn = apply_context(constraints, ctx)
    topic = u.query
    if u.intent == "refine" or (u.intent == "feedback" and not u.item_ids):
        # "shorter", "not that one": still about what was asked for before ("江南水乡的散文").
        topic = said_once(conv.last_request().get("topic", ""), u.query)
    prefer = list(u.prefer_categories)
    # The kind asked for before, no longer a filter after a new request that names none (merge_constraints).
    prefer += [c for c in conv.constraints().get("categories", []) if c not in constraints["categories"] and c not in prefer]
    if not (u.item_ids or u.categories or u.prefer_categories or u.creators) and len(words(u.query)) <= 1:
        # "What should I read tonight?" after "I only read gothic horror": the taste said before
        # (in this session or the turns a client sent) is what this turn is about.
        earlier_topic, earlier_categories = conv.taste_so_far()
        topic = said_once(earlier_topic, topic)
        prefer += [c for c in earlier_categories if c not in prefer]
    query = " ".join(filter(None, [topic, ctx.words, profile_query(profile) if not topic else ""]))
    avoid = [d for d in profile.get("dislikes", []) if d in vocab.categories.values() and d not in turn["categories"]]
    exclude_ids = set(exclude) | set(seeds) | named
    if u.others or u.shorter or u.older or u.newer:
        # Asked for others, or for shorter / older / newer ones than those in view. After "I've seen
        # that one" or "no horror" the rest of the list may still be the best answer (leaving out
        # everything shown after any reaction to the list cost R@10 0.030 / 0.017 on the ReDial
        # tuning folds, replayed turn by turn).
        exclude_ids |= set(conv.shown_ids())
    request = Request(
        query=query,
        conversation=conversation_words(conv),
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
        # "I like old movies" said once is a preference for the rest of the conversation; a year
        # range said now ("from the 80s") is the filter instead.
        prefer_years=None if turn["year_min"] is not None or turn["year_max"] is not None
        else vocab.era_years(u.era or conv.era_so_far()),
        diversity=DIVERSITY,
    )
    # Nothing found: first allow what was shown or named before, then the profile's dislikes.
    fallbacks = []
    if exclude_ids - set(seeds):
        fallbacks.append(replace(request, exclude_ids=set(seeds) | set(exclude)))
    if avoid:
        last_try = fallbacks[-1] if fallbacks else request
        fallbacks.append(replace(last_try, exclude_categories=turn["exclude_categories"]))
    note = {
        **turn, "query": query, "topic": topic, "seed_item_ids": seeds, "avoid_categories": avoid,
        "prefer_categories": request.prefer_categories, "prefer_years": request.prefer_years,
        "context": ctx.note, "extra_filters": ctx.extra_filters, "max_length": ctx.max_length,
    }
    return Plan(
        request=request,
        fallbacks=tuple(fallbacks),
        k=k,
        note=note,
        topic=topic,
        constraints=constraints,
        history=tuple(history),
        profile=profile,
        liked_titles=liked_titles(history, vocab.title_of),
        prefer_shorter=bool(constraints.get("shorter") or ctx.prefer_shorter),
    )
