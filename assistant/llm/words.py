"""Generations that may write only given words: the token ids a greedy step chooses among.

A small model asked to sum up an item "using only words from its About line" still paraphrases
("a dedicated engineer" for "a devoted engineer", "a ship" where the description has none), and
the reason check then refuses the phrase for words the item's data does not hold. A local model
can be held to the words instead of asked: each step takes the most likely token among those that
spell the given words (in the spellings a phrase uses them: as written, lower case, capitalised,
after a space or not; Chinese also character by character), punctuation, the stop strings and the
end of text. The model still chooses which words and in what order; it can no longer reach for
others. Pieces of the allowed words may still join into a word none of them is, which the check
catches as before.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Callable, Iterable, Sequence

import numpy as np

PUNCTUATION = (",", ".", ";", ":", "'", "’", "-", "(", ")", "!", "?", '"', "'s", "’s", "，", "。", "、", "；", "：")
_PIECES = re.compile(r"[\u3400-\u9fff]+|[^\W_]+(?:['’][^\W\d_]+)?|[^\w\s]", re.UNICODE)
_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")


def word_forms(text: str) -> list[str]:
    """The spellings in which a phrase may use the words of `text` (see the module docstring)."""
    forms: set[str] = set(PUNCTUATION)
    for piece in _PIECES.findall(text):
        if _CJK_RUN.fullmatch(piece):
            for part in {piece, *piece}:  # each character too: the phrase may cut the run anywhere
                forms |= {part, " " + part}  # the first word of an answer comes after a space
            continue
        for spelling in {piece, piece.lower(), piece[:1].upper() + piece[1:]}:
            forms.add(spelling)
            forms.add(" " + spelling)
    return sorted(forms)


class AllowedTokens:
    """Token-id arrays for word lists, by text, with the least recently used dropped past `limit`."""

    def __init__(self, tokenize: Callable[[str], Sequence[int]], always: Iterable[int] = (), limit: int = 2048,
                 containing: Callable[[str], Iterable[int]] | None = None):
        """`containing(stop)`: every token whose text holds `stop` (a model that ends its line with
        one token for "\n\n" must be let write it, or it goes on copying); looked up once a stop."""
        self._tokenize = tokenize
        self._always = set(int(t) for t in always)
        self._containing = containing
        self._with_stop: dict[str, set[int]] = {}
        self._kept: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def ids(self, text: str, stops: Sequence[str] = ()) -> np.ndarray:
        """The sorted token ids a generation restricted to the words of `text` may write (its stop
        strings and the end-of-text tokens included)."""
        key = (text, tuple(stops))
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                return kept
        ids = set(self._always)
        for form in [*word_forms(text), *(s for s in stops if s)]:
            ids.update(int(t) for t in self._tokenize(form))
        for stop in stops:
            if stop and self._containing is not None:
                if stop not in self._with_stop:
                    self._with_stop[stop] = {int(t) for t in self._containing(stop)}
                ids |= self._with_stop[stop]
        kept = np.fromiter(sorted(ids), dtype=np.int64, count=len(ids))
        with self._lock:
            self._kept[key] = kept
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
        return kept
