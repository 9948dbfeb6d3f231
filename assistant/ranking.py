"""LLM re-ranking of retrieved candidates: one forward pass per order, read as label probabilities.

The prompt labels candidates A, B, C...; the LLM's next-token probabilities over those labels
score every candidate at once (LlamaRec), instead of generating a ranked list token by token.
Position bias (LLMRank) is countered twice: contextual calibration divides out the label
probabilities the model gives when every candidate is "N/A" and there is no history or request
(its bias for "A" and for the first slot; asked once per model), and the same candidates are read
in several orders and averaged. The LLM score is then
blended with the retrieval order, so a weak model can nudge the list but not wreck it. Gemma 3
270M, measured: with all candidates "N/A" label A still gets ~35% and the first four ~70%.

Blend, chosen for robustness to scale:
    final = (1 - blend) * retrieval_rank_score + blend * llm_score
    retrieval_rank_score = 1 - rank / (n - 1)        (retrieval scores have arbitrary scale)
    llm_score = p / max(p)  over the candidates the LLM saw (0 for any it did not see)
so the LLM's favourite gains `blend`, items it is unsure about keep their retrieval order.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Sequence

from prompts.loader import Lines
from retrieval.records import Candidate, Item

log = logging.getLogger(__name__)

LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # single tokens in Gemma's and OpenAI's tokenizers
_ALL_FACTS = Lines()  # year, two categories, creator, evidence


@dataclass
class RankResult:
    """The re-ranked candidates and everything the prompt lab wants to see about how."""

    candidates: list[Candidate]  # best first; the same objects that came in
    scores: dict[str, float]  # item_id -> final blended score
    llm_scores: dict[str, float]  # item_id -> LLM probability averaged over orders (items it saw)
    prompt_tokens: int = 0  # tokens of one prompt
    passes: int = 0  # orders read (one forward pass each; an uncached calibration adds one more call)
    method: str = "retrieval"  # "logprobs", "generation" or "retrieval"
    fallback: str | None = None  # why the LLM order was not used (the retrieval order stands), if it was not
    raw: list[dict] = field(default_factory=list)  # per call: order, prompt, model output (calibration first)
    elapsed_ms: float = 0.0

    @property
    def total_prompt_tokens(self) -> int:
        """Prompt tokens of every call this ranking made (an uncached calibration included; an upper bound)."""
        return self.prompt_tokens * sum(1 for call in self.raw if not call.get("cached"))


def item_line(item: Item, *, label: str | None = None, evidence: str = "", lines: Lines | None = None) -> str:
    """A compact candidate/history line: 'B. Title (1997; Drama, Crime) by X - near: Heat'.

    `lines` (a template's `lines:` block) says which facts to keep; the default keeps them all.
    """
    lines = lines or _ALL_FACTS
    facts = [str(item.year)] if lines.year and item.year is not None else []
    if item.categories and lines.categories:
        facts.append(", ".join(item.categories[: lines.categories]))
    line = item.title + (f" ({'; '.join(facts)})" if facts else "")
    if item.creator and lines.creator:
        line += f" by {item.creator}"
    if evidence and lines.evidence:
        line += f" - {evidence}"
    return f"{label}. {line}" if label else line


def evidence_hint(candidate: Candidate) -> str:
    """The shortest useful evidence for a rank prompt: the closest liked item, or matched words."""
    ev = candidate.evidence
    if ev.near_history:
        return "near: " + ev.near_history[0][1]
    if ev.matched_words:
        return "matches: " + ", ".join(ev.matched_words[:3])
    return ""


def rank(
    llm,
    prompts,
    history_items: Sequence[Item],
    candidates: Sequence[Candidate],
    *,
    request: str = "",
    shuffles: int = 2,
    blend: float = 0.3,
    seed: int = 0,
    budget_tokens: int | None = None,
    max_history: int = 20,
    calibrate: bool = True,
    priors: dict | None = None,
) -> RankResult:
    """Re-rank `candidates` (any order) with the LLM; `history_items` oldest first. Never returns fewer items.

    `priors` caches the calibration call across turns (keep one dict per loaded model).
    """
    started = time.perf_counter()
    ordered = sorted(candidates, key=lambda c: -c.score)  # stable: ties keep the caller's order
    result = RankResult(candidates=list(ordered), scores={}, llm_scores={})
    if len(ordered) < 2 or blend <= 0:
        return _finish(result, ordered, {}, blend, started)
    if llm is None:
        result.fallback = "no LLM configured"
        return _finish(result, ordered, {}, blend, started)
    try:
        if llm.supports_logprobs:
            result.method = "logprobs"
            llm_scores = _rank_by_logprobs(
                llm, prompts, history_items, ordered, request, shuffles, seed, budget_tokens, max_history, calibrate, priors, result
            )
        else:
            result.method = "generation"
            llm_scores = _rank_by_generation(llm, prompts, history_items, ordered, request, budget_tokens, max_history, result)
    except Exception as exc:  # any backend failure: keep the retrieval order and say why
        log.warning("LLM ranking failed, keeping retrieval order: %s", exc)
        result.method = "retrieval"
        result.fallback = f"{type(exc).__name__}: {exc}"
        llm_scores = {}
    if not llm_scores:
        result.method = "retrieval"
        result.fallback = result.fallback or "the LLM gave no usable ranking"
    return _finish(result, ordered, llm_scores, blend, started)


# The two ways to ask ---------------------------------------------------------------------------


def _rank_by_logprobs(llm, prompts, history, ordered, request, shuffles, seed, budget, max_history, calibrate, priors, result) -> dict[str, float]:
    template = prompts.get("rank")
    history_lines, shown, hints = _fit(llm, template, history, ordered, request, budget, max_history, result)
    sums = dict.fromkeys((c.item.id for c in shown), 0.0)
    labels = LABELS[: len(shown)]
    prior = dict.fromkeys(labels, 0.0)
    if calibrate:
        prompt, prior, cached = _label_prior(llm, template, labels, priors)
        result.raw.append({"order": [], "prompt": prompt, "output": prior, "calibration": True, "cached": cached})
    for order in _orders(len(shown), max(1, shuffles), seed):
        lines = [item_line(shown[i].item, label=labels[k], evidence=hints[i], lines=template.lines) for k, i in enumerate(order)]
        prompt = template.render(history=history_lines, request=request, candidates=lines)
        logprobs = llm.label_logprobs(prompt, labels)
        result.passes += 1
        result.raw.append({"order": [shown[i].item.id for i in order], "prompt": prompt, "output": logprobs})
        probabilities = _softmax([logprobs[label] - prior[label] for label in labels])
        if probabilities is None:
            raise ValueError(f"the model returned non-finite label log-probabilities: {logprobs}")
        for k, i in enumerate(order):
            sums[shown[i].item.id] += probabilities[k]
    return {item_id: total / result.passes for item_id, total in sums.items()}


def warm_up(llm, prompts, n_candidates: int, priors: dict) -> None:
    """Ask the calibration question before the first turn: its answer lands in `priors`, and the
    template's instructions in the model's prompt cache, so a first turn costs what later ones do."""
    _label_prior(llm, prompts.get("rank"), LABELS[: max(2, min(n_candidates, len(LABELS)))], priors)


def _label_prior(llm, template, labels, priors: dict | None) -> tuple[str | list, dict[str, float], bool]:
    """What the model answers when every input is "N/A": its bias for the labels and slots themselves.

    Contextual calibration (Zhao et al. 2021) with a content-free input: the template's own
    instructions and examples, no history, no request, every candidate "N/A". That prompt is the
    same for every user and turn, so `priors` (a dict the caller keeps) holds it after the first
    call and a turn spends its forward passes on the candidates only. Returns the prompt, the
    label log-probabilities and whether they came from `priors`.
    """
    prompt = template.render(history=[], request="", candidates=[f"{label}. N/A" for label in labels])
    key = (getattr(llm, "model", ""), json.dumps(prompt, sort_keys=True))  # the prompt spells the labels
    if priors is not None and key in priors:
        return prompt, priors[key], True
    prior = llm.label_logprobs(prompt, labels)
    if _softmax(list(prior.values())) is None:
        raise ValueError(f"the model returned non-finite label log-probabilities: {prior}")
    if priors is not None:
        priors[key] = prior
    return prompt, prior, False


def _rank_by_generation(llm, prompts, history, ordered, request, budget, max_history, result) -> dict[str, float]:
    template = prompts.get("rank_list")
    history_lines, shown, hints = _fit(llm, template, history, ordered, request, budget, max_history, result)
    labels = list(LABELS[: len(shown)])
    lines = [item_line(c.item, label=labels[k], evidence=hints[k], lines=template.lines) for k, c in enumerate(shown)]
    prompt = template.render(history=history_lines, request=request, candidates=lines)
    schema = None
    if llm.supports_json_schema:
        schema = {
            "type": "object",
            "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": labels}}},
            "required": ["ranking"],
            "additionalProperties": False,
        }
    out = "".join(
        llm.stream(prompt, max_tokens=template.output.max_tokens, stop=template.output.stop or None, json_schema=schema)
    )
    result.passes = 1
    result.raw.append({"order": [c.item.id for c in shown], "prompt": prompt, "output": out})
    ranking = parse_ranking(out, labels)
    if not ranking:
        result.fallback = f"the LLM's ranking could not be read ({out[:80]!r})"
        return {}
    # Listed first = 1, listed last = 1/m, unlisted = 0.
    m = len(ranking)
    return {shown[labels.index(label)].item.id: (m - k) / m for k, label in enumerate(ranking)}


def parse_ranking(text: str, labels: Sequence[str]) -> list[str]:
    """Labels in the order the model wrote them: JSON {"ranking": [...]} or any text; duplicates dropped."""
    found: list = []
    try:
        data = json.loads(text)
        found = data.get("ranking", []) if isinstance(data, dict) else data
        found = found if isinstance(found, list) else []
    except json.JSONDecodeError:
        found = re.findall(r"\b([A-Z])\b", text)
    wanted = set(labels)
    return list(dict.fromkeys(str(x).strip() for x in found if str(x).strip() in wanted))


# Fitting the prompt into the context -----------------------------------------------------------


def _fit(llm, template, history, ordered, request, budget, max_history, result):
    """Trim whole lines until the prompt fits: oldest history first, then evidence, then the weakest candidates."""
    history_lines = [item_line(item, lines=template.lines) for item in list(history)[-max_history:]] if max_history > 0 else []
    shown = list(ordered[: len(LABELS)])
    hints = [evidence_hint(c) if template.lines.evidence else "" for c in shown]
    if budget is None:
        budget = llm.context_window - template.output.max_tokens - 8  # 8: BOS/chat-format slack

    def measure() -> int:
        lines = [item_line(c.item, label=LABELS[k], evidence=hints[k], lines=template.lines) for k, c in enumerate(shown)]
        return count_prompt_tokens(llm, template.render(history=history_lines, request=request, candidates=lines))

    tokens = measure()
    while tokens > budget:
        if history_lines:
            history_lines.pop(0)
        elif any(hints):
            last = max(k for k, h in enumerate(hints) if h)  # weakest candidate loses its evidence first
            hints[last] = ""
        elif len(shown) > 2:
            shown.pop()
            hints.pop()
        else:
            raise ValueError(f"even two candidates need {tokens} tokens, over the budget of {budget}")
        tokens = measure()
    result.prompt_tokens = tokens
    return history_lines, shown, hints


def count_prompt_tokens(llm, prompt) -> int:
    """Tokens of a completion prompt, or of chat messages plus ~4 tokens of framing each."""
    if isinstance(prompt, str):
        return llm.count_tokens(prompt)
    return sum(llm.count_tokens(m["content"]) + 4 for m in prompt)


def _orders(n: int, shuffles: int, seed: int) -> list[list[int]]:
    """Retrieval order, then reversed (the strongest counter to position bias), then seeded shuffles."""
    orders = [list(range(n))]
    if shuffles >= 2:
        orders.append(list(reversed(range(n))))
    rng = random.Random(seed)
    while len(orders) < shuffles:
        order = list(range(n))
        rng.shuffle(order)
        orders.append(order)
    return orders


def _softmax(logprobs: list[float]) -> list[float] | None:
    if not logprobs or not all(math.isfinite(x) for x in logprobs):
        return None
    top = max(logprobs)
    weights = [math.exp(x - top) for x in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def _finish(result: RankResult, ordered: list[Candidate], llm_scores: dict[str, float], blend: float, started: float) -> RankResult:
    n = len(ordered)
    best = max(llm_scores.values(), default=0.0)
    weight = blend if best > 0 else 0.0
    for rank_, candidate in enumerate(ordered):
        retrieval = 1.0 - rank_ / (n - 1) if n > 1 else 1.0
        llm = llm_scores.get(candidate.item.id, 0.0) / best if best > 0 else 0.0
        result.scores[candidate.item.id] = (1 - weight) * retrieval + weight * llm
    position = {c.item.id: k for k, c in enumerate(ordered)}
    result.candidates = sorted(ordered, key=lambda c: (-result.scores[c.item.id], position[c.item.id]))
    result.llm_scores = llm_scores
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


# The rank step of a turn -----------------------------------------------------------------------


def rank_step(llm, prompts, store, retrieved, plan, settings, *, priors: dict, llm_error: str | None, language: str):
    """The rank step: the retrieved candidates in the model's order (blended), or retrieval's.

    `llm` None: no model, off on purpose, or busy with other turns; only a model that failed to
    load is worth a note (the turn already said when it was busy)."""
    from dataclasses import replace

    from assistant.turn import Ranked, prompt_request
    from core.errors import RecassistError

    candidates = list(retrieved.candidates)
    if llm is None:
        note = f"The language model is unavailable ({llm_error}); showing retrieval order." if llm_error else None
        return Ranked(tuple(candidates), note)
    history = plan.history
    items = store.get_items([e.item_id for e in history if e.item_id and e.weight > 0][-20:])
    history_items = [items[e.item_id] for e in history if e.item_id in items and e.weight > 0][-10:]
    blend = settings.effective_rank_blend
    try:
        result = rank(
            llm, prompts, history_items, candidates,
            shuffles=settings.rank_shuffles, blend=blend, priors=priors,
            request=prompt_request(plan.note.get("query", ""), plan.note.get("context")),
        )
    except RecassistError as exc:
        log.warning("ranking failed, using retrieval order: %s", exc)
        return Ranked(tuple(candidates), "The ranking model failed; showing retrieval order.")
    unasked = (
        f"(not asked: rank_blend is 0 for {llm.model}, the weight the evaluation chose for it; "
        f"set RECASSIST_RANK_BLEND=0.3 to rank with this template)"
    )
    asked = [call["prompt"] for call in result.raw if not call.get("calibration")]
    trace = {
        "stage": "rank",
        "method": result.method,
        "prompt": asked[0] if asked else (unasked if blend <= 0 else None),
        "raw": result.raw,
        "fallback": result.fallback,
    }
    note = f"Showing retrieval order: the model's ranking was unusable ({result.fallback[:160]})." if result.fallback else None
    # Cards show the blended score, so the order and the numbers agree.
    ranked = [replace(c, score=result.scores.get(c.item.id, c.score)) for c in result.candidates]
    tokens = {"rank_prompt": result.total_prompt_tokens, "prompt": result.total_prompt_tokens}
    return Ranked(tuple(ranked or candidates), note, tokens, (trace,))
