"""A platform's past conversations as behaviour: each work a person named in a chat becomes an event.

The documented format is ReDial's (one JSON dialog a line): `messages` whose text names movies as
`@<id>`, `movieMentions` {id: "Title (Year)"}, `initiatorWorkerId` (the seeker) and
`initiatorQuestions` {id: {liked: 0 | 1 | 2}}. Each dialog is one user (`<prefix><conversationId>`):
a conversation is a short history of works talked about together, which is what the co-mention
signal learns from. A work the seeker said they liked is a `like`, disliked a `dislike`, any other
work named by either side a `mention`. Ids that are not catalog ids are linked by title and year.
Each of the seeker's messages is also a `search` event whose text is what they wrote (works named
as their "Title (Year)"), just before the works named after it: what people who asked in similar
words went on to have (retrieval.asked) learns from these.

Event ids are deterministic (the base time is fixed per file), so loading the same file again
stores nothing twice, and a load cut short can simply be run again. The file dates no dialog: each
is logged a second after the one above it (LINE_SPACING_S), so file order makes no recency.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from retrieval.records import Event
from retrieval.titles import TitleIndex

_MENTION = re.compile(r"@([A-Za-z0-9][\w-]*)")
_USER_CHARS = re.compile(r"[^A-Za-z0-9_.@:-]")
VERDICTS = {1: "like", 0: "dislike"}
MAX_SAID = 2000  # characters of one message kept as a search event
# A ReDial file dates no dialog: its dialogs are logged at the file's time, a second apart in file
# order. An hour apart (before), a 10,000-dialog file spanned 14 months of made-up time, and trending
# (half-life 180 days) weighed its first dialogs at a fifth of its last: file order, not recency.
LINE_SPACING_S = 1.0


def said_time(start: float, named: int, since: int) -> float:
    """When a seeker's message is logged: after the `named` works named so far (their times are
    start + 0, 1, 2..., as before messages were logged: loading a file again stores nothing twice)
    and before the next, the `since`-th message since the last work a little later."""
    return start + named - 0.5 + 0.001 * min(since, 400)


@dataclass
class DialogLoad:
    """What one dialog file gave: events, and what was skipped and why (with line numbers)."""

    dialogs: int = 0
    events: list[Event] = field(default_factory=list)
    linked_by_title: int = 0
    not_in_catalog: int = 0
    rejects: list[str] = field(default_factory=list)  # "FILE:LINE: why; how to fix"


def redial_events(path: Path, catalog_ids: set[str], titles: TitleIndex, base_time: float,
                  user_prefix: str = "dialog:") -> Iterator[tuple[int, tuple[list[Event], int] | str]]:
    """(line number, (the dialog's events, works not found in the catalog) or why the line was skipped)."""
    with Path(path).open(encoding="utf-8") as src:
        for line_no, line in enumerate(src, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                yield line_no, _dialog_events(raw, catalog_ids, titles, base_time + line_no * LINE_SPACING_S, user_prefix)
            except json.JSONDecodeError as exc:
                yield line_no, f"not JSON ({exc.msg} at column {exc.colno}); each line must be one dialog object"
            except (KeyError, TypeError, AttributeError) as exc:
                yield line_no, (f"not a ReDial dialog (missing or malformed {exc}); a dialog needs conversationId, "
                                "messages [{text, senderWorkerId}], initiatorWorkerId and movieMentions")


def load_redial(path: Path, catalog_ids: set[str], titles: TitleIndex, base_time: float, user_prefix: str = "dialog:") -> DialogLoad:
    """Every dialog of a file as events (bad lines reported, good ones kept)."""
    out = DialogLoad()
    for line_no, result in redial_events(path, catalog_ids, titles, base_time, user_prefix):
        if isinstance(result, str):
            out.rejects.append(f"{path}:{line_no}: {result}")
            continue
        events, missed = result
        out.dialogs += 1
        out.events += events
        out.not_in_catalog += missed
        out.linked_by_title += sum(1 for e in events if e.text and e.text.endswith("(linked by title)"))
    return out


def _dialog_events(raw: dict, catalog_ids: set[str], titles: TitleIndex, start: float, user_prefix: str) -> tuple[list[Event], int]:
    conversation = str(raw["conversationId"])
    names = raw.get("movieMentions") or {}
    names = names if isinstance(names, dict) else {}
    answers = raw.get("initiatorQuestions") or {}
    answers = answers if isinstance(answers, dict) else {}
    seeker = raw["initiatorWorkerId"]  # a KeyError names the missing field
    user = _USER_CHARS.sub("_", f"{user_prefix}{conversation}")[:128]
    events: list[Event] = []
    said: list[Event] = []
    since = 0  # seeker messages since the last work named
    seen: set[str] = set()
    missed: set[str] = set()
    for message in raw["messages"]:
        words = _said(message, seeker, names)
        if words:
            said.append(Event(user_id=user, type="search", timestamp=said_time(start, len(events), since), text=words))
            since += 1
        for movie in _MENTION.findall(message["text"]):
            if movie not in names and movie not in catalog_ids:
                continue  # an "@" that names no work
            item_id, how = _link(movie, names.get(movie), catalog_ids, titles)
            if item_id is None:
                missed.add(movie)
            if item_id is None or item_id in seen:
                continue
            seen.add(item_id)
            answer = answers.get(movie) if isinstance(answers.get(movie), dict) else {}
            kind = VERDICTS.get(answer.get("liked"), "mention")
            events.append(Event(user_id=user, type=kind, timestamp=start + len(events), item_id=item_id,
                                text=f"dialog {conversation}" + (" (linked by title)" if how == "title" else "")))
            since = 0
    return sorted(said + events, key=lambda e: e.timestamp), len(missed)


def _said(message: dict, seeker, names: dict) -> str:
    """A seeker's message as they wrote it, "@<id>" as the work's name; "" for the recommender's."""
    if message.get("senderWorkerId") != seeker or not isinstance(message.get("text"), str):
        return ""

    def name(match: re.Match) -> str:
        return " ".join(str(names[match[1]]).split()) if match[1] in names else match[0]

    return " ".join(_MENTION.sub(name, message["text"]).split())[:MAX_SAID]


def _link(movie: str, name: str | None, catalog_ids: set[str], titles: TitleIndex) -> tuple[str | None, str]:
    if movie in catalog_ids:
        return movie, "id"
    if name:
        found = titles.find(" ".join(str(name).split()))
        if found:
            return found[0].item_id, "title"
    return None, ""
