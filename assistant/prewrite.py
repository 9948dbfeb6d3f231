"""Reason hooks written ahead, while the local model has nothing else to do.

The embedded model's reason template asks for a phrase about the item alone ("a spacecraft crew
hunted by a deadly creature"), so the phrase it writes for an item is the same in every user's
turn (llm/memo.py remembers it by its prompt). A turn spends nearly all its time writing those
phrases (five hooks: 1.0-1.6 s of a 1.1-1.7 s turn on 2 cores), and under load a turn the busy
model turns away gets none. The items most turns show are the popular ones, so `serve` has the
model write their hooks while no turn wants it: a later turn that shows them finds them written
(and checks them against its own evidence, as any remembered text). Cards a busy model left
with evidence reasons come first: the next turn that shows them (the same user asking for more,
a neighbour in taste) gets the model's words.

The writer yields to people: it starts only after no turn of this process has come for `idle_s`,
writes `batch` hooks per call, and stops its call at the next written piece once a turn comes; a
local model also stops it when a turn of any worker reserves model time (`stream_many_spare`).
One process of a data dir writes (a file lock); the others read what it wrote from the store
(its `remembered` table: every worker's, on any host).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Callable, Iterator

from assistant.explain import (
    MAX_REASON_CHARS,
    _until_stop,
    about_language,
    marked_if_cut,
    nothing_to_sum_up,
    reason_limits,
    reason_prompt,
    reason_words,
)
from assistant.fitted import file_lock
from core.errors import RecassistError
from retrieval.records import Candidate

log = logging.getLogger(__name__)

IDLE_S = 2.0  # no turn for this long before the writer asks the model
BATCH = 2  # hooks per model call: a turn that comes waits for at most one step of two sequences
LOOK_EVERY_S = 1.0  # how often a waiting writer looks again
REST_WHEN_DONE_S = 30.0  # every popular item's hook is written: look again after new events may have moved popularity
LOCK_RETRY_S = 60.0  # another process writes: try the lock again (it may have stopped)
STOP_WAIT_S = 10.0  # how long stop() waits for the writer's model call to end (a piece takes ~30 ms)


class HookWriter:
    """Writes reason hooks ahead in the model's idle time: of the cards turns showed without one,
    and of the `items` most popular items."""

    def __init__(self, agent, retriever: Callable[[], object], *, items: int, idle_s: float = IDLE_S,
                 batch: int = BATCH, lock_path: Path | None = None):
        self.agent, self.retriever = agent, retriever
        self.items, self.idle_s, self.batch = items, idle_s, max(1, batch)
        self.lock_path = lock_path
        self.written = 0  # hooks this writer had the model write
        self._done: set = set()  # prompts known to be remembered
        self._words: dict[str, str | None] = {}  # the last pending() prompts: the words each may use
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # the background thread, once started

    # One round -----------------------------------------------------------------------------------

    def pending(self, limit: int | None = None) -> list[str]:
        """Hook prompts not remembered yet: first of the cards turns showed without one (newest
        first: the model was busy), then of the most popular items, most popular first."""
        setup = self.agent.write_ahead_setup()
        if setup is None:
            return []
        _llm, template, remembered = setup
        max_tokens, stops = reason_limits(template)
        self._words = {}
        if len(self._done) > 4 * self.items + 1024:  # popularity moved on for days: forget, the store still knows
            self._done.clear()
        shown = list(reversed(self.agent.unwritten))
        ids = list(dict.fromkeys(shown + [item_id for item_id, _ in self.retriever().popular(self.items)]))
        items = self.agent.store.get_items(ids)
        out: list[str] = []
        for item_id in ids:
            item = items.get(item_id)
            if item is None:
                continue
            language = about_language(item)
            if nothing_to_sum_up(item):
                continue
            prompt = reason_prompt(template, Candidate(item, 0.0), "", language)
            if prompt in self._done:
                continue
            if remembered.has(prompt, max_tokens, stops):
                self._done.add(prompt)
                continue
            self._words[prompt] = reason_words(template, Candidate(item, 0.0), "", language)
            out.append(prompt)
            if limit is not None and len(out) >= limit:
                break
        return out

    def write_some(self, n: int | None = None) -> int:
        """Write up to `n` pending hooks (all of them with None) while no turn comes; returns how many."""
        queue = self.pending(limit=n)
        written = 0
        for start in range(0, len(queue), self.batch):
            if self._stop.is_set() or not self._quiet():
                break
            prompts = queue[start:start + self.batch]
            wrote = self._write(prompts)
            written += wrote
            self.written += wrote
            if wrote < len(prompts):  # a turn came, or the model failed: look again later
                break
        return written

    def _quiet(self) -> bool:
        idle = self.agent.idle_s()  # 0 while a turn is on its way
        return idle > 0 and idle >= self.idle_s

    def _write(self, prompts: list[str]) -> int:
        """One model call for `prompts`; what it finished is remembered. Stops when a turn comes."""
        setup = self.agent.write_ahead_setup()
        if setup is None:
            return 0
        llm, template, remembered = setup
        max_tokens, stops = reason_limits(template)
        texts = [""] * len(prompts)
        finished = 0
        try:
            words = [self._words.get(prompt) for prompt in prompts]
            extra = {"words": words} if getattr(llm, "writes_given_words", False) and any(words) else {}
            if hasattr(llm, "stream_many_spare"):  # a turn of any worker that reserves the model stops it
                pieces = llm.stream_many_spare(prompts, max_tokens=max_tokens, stop=stops, **extra)
            elif getattr(llm, "supports_batch", False) and (len(prompts) > 1 or extra):
                pieces = llm.stream_many(prompts, max_tokens=max_tokens, stop=stops, **extra)
            else:
                pieces = _one_by_one(llm, prompts, max_tokens, stops)
            try:
                for index, piece in pieces:
                    if piece is None:
                        if len(texts[index]) <= MAX_REASON_CHARS:
                            remembered.put(prompts[index], max_tokens, stops, marked_if_cut(llm, texts[index], max_tokens))
                        self._done.add(prompts[index])
                        finished += 1
                    elif len(texts[index]) <= MAX_REASON_CHARS:
                        texts[index] += piece
                    if self.agent.idle_s() == 0.0 or self._stop.is_set():
                        break  # a turn came: the model is theirs from the next step
            finally:
                pieces.close()
        except RecassistError as exc:  # busy, restarting, gone: look again later
            log.info("writing reason hooks ahead paused: %s", exc)
        return finished

    # The background thread ---------------------------------------------------------------------

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="recassist-write-ahead", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Stop writing, and wait (up to `wait_s`) for the thread to leave its model call, which it
        does at the next written piece: a store closed right after (at shutdown) is then no longer
        written to ("the remembered reasons could not be read or stored ... is closed")."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    def run(self) -> None:
        """Until stopped: hold the data dir's writer lock, then write whenever the model is idle."""
        while not self._stop.is_set():
            with _writer_lock(self.lock_path) as mine:
                if not mine:
                    self._stop.wait(LOCK_RETRY_S)
                    continue
                while not self._stop.is_set():
                    if not self._quiet():  # people are using the model: look again later, nothing computed
                        self._stop.wait(LOOK_EVERY_S)
                        continue
                    try:
                        wrote = self.write_some()
                    except Exception as exc:  # never let the writer take the server down
                        log.warning("writing reason hooks ahead failed: %s", exc)
                        wrote = 0
                    if wrote:
                        log.info("wrote %d reason hooks ahead (%d in all)", wrote, self.written)
                    # Nothing written while quiet: nothing left to write until popularity moves.
                    self._stop.wait(LOOK_EVERY_S if wrote or not self._quiet() else REST_WHEN_DONE_S)


def _one_by_one(llm, prompts: list[str], max_tokens: int, stops: list[str]) -> Iterator[tuple[int, str | None]]:
    for index, prompt in enumerate(prompts):
        for piece in _until_stop(llm.stream(prompt, max_tokens=max_tokens, stop=stops), stops, MAX_REASON_CHARS):
            yield index, piece
        yield index, None


def _writer_lock(path: Path | None):
    """True while this process is the data dir's writer (always, without a path)."""
    return file_lock(path, wait=False) if path is not None else contextlib.nullcontext(True)
