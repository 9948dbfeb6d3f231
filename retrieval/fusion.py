"""Fusing the retrieval signals: each signal's weight for a request, the weighted sum, and the
reordering after it (near copies of disliked items pushed down, maximal marginal relevance).

Each signal returns {item id: score}; scores are divided by the signal's best score (negative
scores count 0) and summed with weights. The constants here were chosen by measurement (MovieLens
validation items, the ReDial tuning dialogs); `python -m evaluation.dialog_tuning --set NAME=VALUE`
tries another value.
"""

from __future__ import annotations

import numpy as np

from retrieval.request import words

DEFAULT_WEIGHTS = {
    "sequential": 1.0,
    "collab": 0.2,
    "history": 0.1,  # grows toward 1.0 when behaviour data is too thin for the two above
    "query": 2.0,
    "seed": 1.0,  # the named titles' content neighbours (1.5 before: R@10 / R@20 lower on both tuning folds)
    "popularity": 0.1,  # 1.0 for a cold-start user with no request text
    # Named items and request text (a conversation): co-mention neighbours of the named items and
    # what is popular lately. Both scale with behaviour confidence. Chosen on the ReDial tuning
    # dialogs (evaluation/reports/dialogs-tuning.md).
    "comention": 1.0,
    "trending": 0.6,
    # A category or an era named while talking about taste: its favourites (candidates._favourites).
    "category_favourites": 0.5,
    # What people who asked in similar words went on to have (retrieval.asked): the conversation's
    # words against every past search or dialog turn in the log. Chosen on the ReDial tuning
    # dialogs: 0.75 and 1.0 gave R@10 +0.025..0.027 on both folds (0.5 less, 1.5 no more).
    "asked": 0.75,
    # Titles a language model proposed by name (llm_proposals), linked to the catalog: a signal
    # like any other, best first. Only present when the agent asked a model.
    "proposed": 1.0,
}
# A request's text steers fully up to this many content words; a longer message says many things
# at once (a chat so far), and its single text vector gets mushy: its weight falls with the square.
FOCUSED_QUERY_WORDS = 6
TRENDING_REPLACES = 0.8  # a cold start's share of all-time popularity that trending takes, at full confidence
QUERY_SHRINK = 0.8
HISTORY_LAST = 20  # liked (and disliked) items a user's history is read from
# Similarity to a disliked item above which a candidate is pushed down: a near copy. At 0.5 a low
# rating pushed down ordinary films of the same genre and cost NDCG@10 0.005 on MovieLens (0.7: 0.002).
DISLIKE_MARGIN = 0.8
DISLIKE_PUSH = 2.0  # penalty at similarity 1.0 (an exact copy), scaled linearly from the margin


def signal_weights(base: dict[str, float], confidence: float, request, seeds: list[str], cold: bool) -> dict[str, float]:
    """Each signal's weight for this request: the base weights shaped by how far behaviour can be
    trusted (confidence 0..1), whether the person is talking (words or named items), and a cold start."""
    weights = dict(base)
    weights["sequential"] *= confidence
    weights["collab"] *= confidence
    weights["history"] += (1.0 - weights["history"]) * (1.0 - confidence)
    weights["comention"] *= confidence
    talking = bool(request.query.strip() or seeds)
    weights["trending"] *= confidence if (talking or cold) else 0.0
    # With a confident log, what people did outranks the words of a chat, which mostly are not
    # about the items ("hi, I'm open to anything"); see evaluation/reports/dialogs-tuning.md.
    weights["query"] *= focus(request.query) * (1.0 - QUERY_SHRINK * confidence)
    if talking:
        # The request steers; behaviour only flavours it.
        for name in ("sequential", "collab", "history"):
            weights[name] *= 0.5
    if cold:
        # Nothing known of this person: what is popular. With a confident log, what is popular
        # lately (trending) rather than of all time; the catalog's own figures otherwise.
        base = 0.3 if request.query.strip() else 1.0
        weights["popularity"] = base * (1.0 - TRENDING_REPLACES * confidence)
        weights["trending"] = max(weights["trending"], base * confidence)
    return weights


def fuse(signals, weights) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Each signal divided by its best score, weighted and summed; and which signals found each item."""
    fused: dict[str, float] = {}
    found_by: dict[str, dict[str, float]] = {}
    for name, scores in signals.items():
        top = max(scores.values(), default=0.0)
        weight = weights.get(name, 0.0)
        if top <= 0 or weight <= 0:
            continue
        for item_id, score in scores.items():
            if score > 0:
                fused[item_id] = fused.get(item_id, 0.0) + weight * score / top
                found_by.setdefault(item_id, {})[name] = float(score)
    return fused, found_by


def push_from_dislikes(pool, pool_vectors, user, vectors, fused, found_by, above_floor=lambda s: s) -> None:
    """Near copies of disliked items lose score, not only the disliked items themselves."""
    disliked = [vectors[i] for i, _ in user.disliked[-HISTORY_LAST:] if i in vectors]
    present = [i for i in pool if i in pool_vectors]
    if not disliked or not present:
        return
    closest = above_floor((np.stack([pool_vectors[i] for i in present]) @ np.stack(disliked).T).max(axis=1))
    for item_id, similarity in zip(present, closest.tolist()):
        if similarity > DISLIKE_MARGIN:
            penalty = DISLIKE_PUSH * (similarity - DISLIKE_MARGIN) / (1.0 - DISLIKE_MARGIN)
            fused[item_id] = fused.get(item_id, 0.0) - penalty
            found_by.setdefault(item_id, {})["near_disliked"] = similarity


def focus(query: str) -> float:
    """1 for a focused request, falling with the square of its length past FOCUSED_QUERY_WORDS."""
    n = len(words(query))
    return 1.0 if n <= FOCUSED_QUERY_WORDS else (FOCUSED_QUERY_WORDS / n) ** 2


def spread(scores: dict[str, float]) -> dict[str, float]:
    """Scores rescaled from their median to their best: the best 1, the lower half 0 (dropped)."""
    low, high = float(np.median(list(scores.values()))), max(scores.values())
    if high - low < 1e-6:
        return {i: 1.0 for i in scores}
    return {i: (s - low) / (high - low) for i, s in scores.items() if s > low}


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def mmr(pool: list[str], scores: dict[str, float], vectors: dict[str, np.ndarray], k: int, diversity: float) -> list[str]:
    """Maximal marginal relevance: each pick trades relevance against similarity to earlier picks."""
    if not pool:
        return []
    relevance = np.array([scores.get(i, 0.0) for i in pool], dtype=np.float64)
    span = relevance.max() - relevance.min()
    relevance = (relevance - relevance.min()) / span if span > 0 else np.ones_like(relevance)
    dim = next((len(v) for v in vectors.values()), 1)
    matrix = np.stack([vectors.get(i, np.zeros(dim, dtype=np.float32)) for i in pool]).astype(np.float64)
    redundancy = np.zeros(len(pool))
    taken = np.zeros(len(pool), dtype=bool)
    chosen: list[int] = []
    for _ in range(min(k, len(pool))):
        value = (1.0 - diversity) * relevance - diversity * redundancy
        value[taken] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        taken[best] = True
        redundancy = np.maximum(redundancy, matrix @ matrix[best])
    return [pool[j] for j in chosen]
