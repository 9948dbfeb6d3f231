"""Hybrid retrieval + LLM ranking, on a fixed sample of users, through the product's own rank().

Each (user, stage, protocol) asks the real model once with the most orders any variant needs;
a recording wrapper keeps every answer, so the other variants (one order instead of two, every
blend weight on the grid) replay rank() on those answers at no model cost. The numbers are
therefore exactly what rank() would produce, and the blend can be chosen on validation cheaply.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation import metrics
from evaluation.protocols import Ranking, progress_bar, sampled_candidates
from evaluation.splits import Split, Stage
from retrieval.records import Candidate, Item

RANK_DEPTH = 20  # candidates the LLM sees, as Settings.candidates
HISTORY_ITEMS = 10  # liked history items in the prompt, as the agent sends
SHUFFLES = {"llm": 2, "llm-noshuffle": 1}


class RecordingLLM:
    """Wraps an LLM: answers repeated prompts from memory and times the real calls.

    With `cache_file`, answers also persist as JSON lines keyed by model and prompt, so an
    interrupted run resumes where it stopped and a re-run with a larger user sample only asks
    the model about the new users (a changed prompt template is simply a new key).
    """

    def __init__(self, llm, cache_file: Path | None = None):
        self.inner = llm
        for name in ("backend", "model", "prompt_style", "context_window", "supports_logprobs", "supports_json_schema",
                     "remote", "one_call_at_a_time"):
            setattr(self, name, getattr(llm, name))
        self._answers: dict[str, object] = {}
        self._tokens: dict[str, int] = {}
        self.calls: list[dict] = []  # one per distinct question: kind, ms, prompt_tokens (cached: replayed)
        self.cache_file = cache_file
        self.reused = 0  # answers served from the cache file
        self.replayed_ms = 0.0  # the recorded model time of those answers
        self._recorded: dict[str, dict] = {}  # key -> what the original call cost (ms, tokens)
        if cache_file is not None and cache_file.is_file():
            with cache_file.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        key, answer, cost = json.loads(line)
                    except (json.JSONDecodeError, ValueError):
                        continue  # a line cut short by an interrupted run
                    self._answers[key] = answer
                    self._recorded[key] = cost
        self._from_file = set(self._answers)

    def _key(self, kind: str, prompt, extra) -> str:
        return json.dumps([self.backend, self.model, kind, prompt, extra], sort_keys=True, ensure_ascii=False, default=str)

    def _remember(self, key: str, answer, cost: dict) -> None:
        self._answers[key] = answer
        self.calls.append(cost)
        if self.cache_file is not None:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps([key, answer, cost], ensure_ascii=False) + "\n")

    def _hit(self, key: str) -> bool:
        """True when the answer is known; a first use of a cached answer counts as a (replayed) call."""
        if key in self._from_file:
            self._from_file.discard(key)
            self.reused += 1
            cost = dict(self._recorded.get(key, {}), cached=True)
            self.replayed_ms += cost.get("ms", 0.0)
            self.calls.append(cost)
        return key in self._answers

    def label_logprobs(self, prompt, labels: Sequence[str]) -> dict[str, float]:
        key = self._key("labels", prompt, list(labels))
        if not self._hit(key):
            began = time.perf_counter()
            answer = self.inner.label_logprobs(prompt, labels)
            self._remember(key, answer, {"kind": "label_logprobs", "ms": (time.perf_counter() - began) * 1000,
                                         "prompt_tokens": self.count_tokens(_text(prompt))})
        return dict(self._answers[key])

    def stream(self, prompt, *, max_tokens: int, stop=None, temperature: float = 0.0, json_schema=None):
        key = self._key("stream", prompt, [max_tokens, stop, temperature, json_schema])
        if not self._hit(key):
            began = time.perf_counter()
            text = "".join(self.inner.stream(prompt, max_tokens=max_tokens, stop=stop, temperature=temperature, json_schema=json_schema))
            self._remember(key, text, {"kind": "stream", "ms": (time.perf_counter() - began) * 1000,
                                       "prompt_tokens": self.count_tokens(_text(prompt)),
                                       "output_tokens": self.count_tokens(text)})
        yield self._answers[key]

    def count_tokens(self, text: str) -> int:
        if text not in self._tokens:
            self._tokens[text] = self.inner.count_tokens(text)
        return self._tokens[text]


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m.get("content", "") for m in prompt)


@dataclass
class LLMRun:
    """Everything the LLM stage produced on one stage: per-config ranks and per-call facts."""

    stage: str
    user_ids: list[str]
    # (protocol, variant, blend) -> per-user ranks
    ranks: dict[tuple[str, str, float], np.ndarray] = field(default_factory=dict)
    top: dict[tuple[str, str, float], list[np.ndarray]] = field(default_factory=dict)
    outcomes: list[dict] = field(default_factory=list)  # validity facts per recorded rank() call
    rank_ms: list[float] = field(default_factory=list)  # rank() wall time with all orders, real calls
    prompt_tokens: list[int] = field(default_factory=list)  # tokens of one rank prompt
    reused: int = 0  # model answers taken from the persistent cache instead of the model


def history_items(stage: Stage, row: int, items: list[Item]) -> list[Item]:
    """The user's last liked items, oldest first, as the agent puts them in the rank prompt."""
    hist, weights = stage.histories[row], stage.weights[row]
    liked = [items[i] for i, w in zip(hist, weights) if w > 0]
    return liked[-HISTORY_ITEMS:]


def run_llm_stage(
    *,
    llm,
    prompts,
    split: Split,
    stage: Stage,
    rows: Sequence[int],
    base_scores: np.ndarray,
    keys: np.ndarray,
    negatives: dict[str, np.ndarray],
    variants: Sequence[str],
    protocols: Sequence[str],
    blends: Sequence[float],
    seed: int,
    progress: bool = False,
    cache_file: Path | None = None,
) -> LLMRun:
    """Re-rank the base variant's candidates for each sampled user under each protocol.

    base_scores: (len(rows), n_items) scores of the base (hybrid) variant for these rows.
    """
    from assistant.ranking import rank

    recorder = RecordingLLM(llm, cache_file)
    items = split.items
    run = LLMRun(stage.name, [stage.user_ids[r] for r in rows])
    most_orders = max(SHUFFLES[v] for v in variants)
    lists = {p: {(v, b): [] for v in variants for b in blends} for p in protocols}
    tops = {(v, b): [] for v in variants for b in blends}
    bar = progress_bar(len(rows) * len(protocols), f"LLM ranking [{stage.name}]", progress, unit="call")
    for i, row in enumerate(rows):
        scores = np.asarray(base_scores[i], dtype=np.float64)
        target = stage.targets[row]
        history = history_items(stage, row, items)
        for protocol in protocols:
            if protocol == "a":
                seen = [stage.histories[row]]
                shown = metrics.top_k(scores[None, :], seen, keys, RANK_DEPTH)[0]
                base_rank = metrics.target_ranks(scores[None, :], np.array([target]), seen, keys)[0]
            else:
                shown = sampled_candidates(stage, [row], negatives)[0]
                # Present in the base variant's order (ties by the fixed key) as retrieval would.
                shown = shown[np.lexsort((keys[shown], -scores[shown]))]
                base_rank = metrics.MISSING
            candidates = [Candidate(items[j], float(scores[j])) for j in shown]
            began, calls, replayed = time.perf_counter(), len(recorder.calls), recorder.replayed_ms
            recorded = rank(recorder, prompts, history, candidates, shuffles=most_orders, blend=1.0, seed=seed)
            if len(recorder.calls) > calls:  # first time these prompts were answered in this run
                # Answers replayed from the cache file count with the model time they took when recorded.
                run.rank_ms.append((time.perf_counter() - began) * 1000 + recorder.replayed_ms - replayed)
            run.prompt_tokens.append(recorded.prompt_tokens)
            run.outcomes.append(_outcome(recorded, len(candidates), protocol))
            for variant in variants:
                for blend in blends:
                    result = rank(recorder, prompts, history, candidates, shuffles=SHUFFLES[variant], blend=blend, seed=seed)
                    order = [c.item.id for c in result.candidates]
                    new_rank = _rank_in(order, items[target].id)
                    if protocol == "a" and not math.isfinite(new_rank):
                        new_rank = base_rank  # outside the re-ranked 20: retrieval's rank stands
                    lists[protocol][(variant, blend)].append(new_rank)
                    if protocol == "a":
                        index = {item_id: j for item_id, j in zip((items[j].id for j in shown), shown)}
                        tops[(variant, blend)].append(np.array([index[x] for x in order[:10]], dtype=np.int64))
            bar.update(1)
    bar.close()
    for protocol, per in lists.items():
        for (variant, blend), ranks in per.items():
            run.ranks[(protocol, variant, blend)] = np.array(ranks, dtype=float)
            if protocol == "a":
                run.top[(protocol, variant, blend)] = tops[(variant, blend)]
    run.outcomes.extend({"real_call": c} for c in recorder.calls)
    run.reused = recorder.reused
    return run


def _rank_in(order: list[str], target_id: str) -> float:
    try:
        return float(order.index(target_id) + 1)
    except ValueError:
        return metrics.MISSING


def _outcome(result, expected: int, protocol: str) -> dict:
    """Validity facts of one rank() call: did the model's answer get used, how much of it was usable."""
    mass = []
    parsed = 0
    for entry in result.raw:
        output = entry.get("output")
        if isinstance(output, dict):  # label log-probabilities
            finite = [v for v in output.values() if isinstance(v, (int, float)) and math.isfinite(v)]
            mass.append(sum(math.exp(v) for v in finite))
            parsed = max(parsed, len(finite))
        elif isinstance(output, str):
            from assistant.ranking import LABELS, parse_ranking

            parsed = max(parsed, len(parse_ranking(output, LABELS[:expected])))
    return {
        "protocol": protocol,
        "method": result.method,
        "valid": result.fallback is None and result.method != "retrieval",
        "fallback": result.fallback is not None,
        "fallback_reason": result.fallback,
        "parsed": parsed,
        "expected": min(expected, 26),
        "label_mass": float(np.mean(mass)) if mass else None,
        "passes": result.passes,
        "prompt_tokens": result.prompt_tokens,
    }


def to_ranking(run: LLMRun, protocol: str, variant: str, blend: float, name: str) -> Ranking:
    """One configuration of an LLM run in the same shape as the other variants' results."""
    ranks = run.ranks[(protocol, variant, blend)]
    top = run.top.get((protocol, variant, blend), [])
    return Ranking(name, protocol, run.stage, run.user_ids, ranks, top, np.zeros(0))
