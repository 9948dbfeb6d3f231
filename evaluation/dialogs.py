"""Human movie dialogs (ReDial, INSPIRED) as evaluation cases under the "dedup" protocol.

At each recommender message that names a movie nobody mentioned before in that dialog, the
target is that movie and the input is the seeker's words so far (movie ids replaced by names);
movies already mentioned are excluded from any list and never count as hits.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

from core.errors import ConfigError

Role = Literal["seeker", "recommender"]
MAX_MESSAGE_CHARS = 4000  # what POST /v1/chat accepts in one message
_MENTION = re.compile(r"@(\d+)")


@dataclass(frozen=True)
class Message:
    """One utterance, with movie ids replaced by names, and the catalog ids it names (in order)."""

    role: Role
    text: str
    movies: tuple[str, ...] = ()


@dataclass
class Dialog:
    """A conversation between a seeker and a recommender."""

    id: str
    messages: list[Message]
    verdicts: dict[str, str] = field(default_factory=dict)  # movie id -> "like" / "dislike", as the seeker said

    def mentioned(self) -> list[str]:
        """Every catalog id named in the dialog, by either side, in order of first mention."""
        return list(dict.fromkeys(movie for m in self.messages for movie in m.movies))


@dataclass(frozen=True)
class Case:
    """One prediction: which new movie will the recommender name next?"""

    dialog_id: str
    message: int  # index of the recommender message that names the target
    target: str
    seeker_turns: tuple[str, ...]  # the seeker's turns so far (consecutive messages joined)
    mentioned: frozenset[str]  # named before this message: excluded, never a hit

    def one_message(self, limit: int = MAX_MESSAGE_CHARS) -> str:
        """The seeker's words so far as one chat message: the most recent turns that fit in `limit`."""
        kept: list[str] = []
        size = 0
        for turn in reversed(self.seeker_turns):
            size += len(turn) + 1
            if kept and size > limit:
                break
            kept.append(turn)
        return "\n".join(reversed(kept))[-limit:]


def seeker_turns(dialog: Dialog) -> list[tuple[int, str]]:
    """(index of the turn's last message, text) for each run of consecutive seeker messages."""
    turns: list[tuple[int, str]] = []
    previous: Role | None = None
    for i, message in enumerate(dialog.messages):
        if message.role == "seeker":
            if previous == "seeker":
                turns[-1] = (i, turns[-1][1] + " " + message.text)
            else:
                turns.append((i, message.text))
        previous = message.role
    return turns


def dialog_cases(dialog: Dialog, catalog: Callable[[str], bool] | set[str] | None = None) -> tuple[list[Case], Counter]:
    """The dialog's cases, and why other new recommender mentions were not cases."""
    in_catalog = catalog.__contains__ if isinstance(catalog, (set, frozenset)) else catalog
    cases: list[Case] = []
    skipped: Counter = Counter()
    turns = seeker_turns(dialog)
    seen: set[str] = set()
    for i, message in enumerate(dialog.messages):
        if message.role == "recommender":
            said = tuple(text for last, text in turns if last < i)
            for movie in dict.fromkeys(message.movies):
                if movie in seen:
                    continue
                if in_catalog is not None and not in_catalog(movie):
                    skipped["target not in the catalog"] += 1
                elif not said:
                    skipped["no seeker words before it"] += 1
                else:
                    cases.append(Case(dialog.id, i, movie, said, frozenset(seen)))
        seen.update(message.movies)
    return cases, skipped


def report_half(dialog_id: str) -> bool:
    """The deterministic half a dialog belongs to: True = report, False = tune."""
    return int(hashlib.sha1(dialog_id.encode("utf-8")).hexdigest()[:8], 16) % 2 == 1


def split_by_hash(dialogs: Iterable[Dialog]) -> tuple[list[Dialog], list[Dialog]]:
    """(tune, report) halves by a hash of the dialog id: stable across runs, machines and file order."""
    tune: list[Dialog] = []
    report: list[Dialog] = []
    for dialog in dialogs:
        (report if report_half(dialog.id) else tune).append(dialog)
    return tune, report


# Readers ----------------------------------------------------------------------------------------


def read_redial(path: Path, names: dict[str, str] | None = None) -> list[Dialog]:
    """ReDial's dialogs.jsonl: @<movieId> becomes the movie's name (from the dialog, else `names`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: point --data-root at the folder holding redial-dev/, or pass a ReDial-format .jsonl")
    dialogs = []
    with path.open(encoding="utf-8") as src:
        for line_no, line in enumerate(src, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                dialogs.append(_redial_dialog(raw, names or {}))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path}:{line_no}: not a ReDial dialog ({exc!r}); expected conversationId, messages, "
                                  "initiatorWorkerId and movieMentions") from None
    return dialogs


def _redial_dialog(raw: dict, names: dict[str, str]) -> Dialog:
    mentions = raw.get("movieMentions") or {}
    mentions = mentions if isinstance(mentions, dict) else {}

    def name(match: re.Match) -> str:
        movie = match.group(1)
        return " ".join((mentions.get(movie) or names.get(movie) or match.group(0)).split())

    seeker = raw["initiatorWorkerId"]
    messages = [
        Message("seeker" if m["senderWorkerId"] == seeker else "recommender", _MENTION.sub(name, m["text"]),
                tuple(dict.fromkeys(_MENTION.findall(m["text"]))))
        for m in raw["messages"]
    ]
    answers = raw.get("initiatorQuestions")
    verdicts = {movie: {1: "like", 0: "dislike"}[a["liked"]] for movie, a in (answers.items() if isinstance(answers, dict) else [])
                if isinstance(a, dict) and a.get("liked") in (0, 1)}
    return Dialog(str(raw["conversationId"]), messages, verdicts)


def read_inspired(path: Path, link: Callable[[str], str | None]) -> tuple[list[Dialog], Counter]:
    """An INSPIRED .tsv (one utterance a row); `link` maps an annotated "Title (Year)" to a catalog id.

    Returns the dialogs and how many annotated titles did (not) link."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: point --data-root at the folder holding inspired/")
    linked: Counter = Counter()
    by_dialog: dict[str, list[tuple[int, Message]]] = {}
    # csv's field limit is process-wide: raise it for this file only (ingest reports long fields).
    old_limit = csv.field_size_limit(1 << 24)
    with contextlib.ExitStack() as restore, path.open(encoding="utf-8", newline="") as src:
        restore.callback(csv.field_size_limit, old_limit)
        reader = csv.DictReader(src, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"dialog_id", "utt_id", "speaker", "text", "movies"} - set(reader.fieldnames or ())
        if missing:
            raise ConfigError(f"{path} is not an INSPIRED file: no column(s) {', '.join(sorted(missing))}")
        for row in reader:
            ids = []
            for title in filter(None, (t.strip() for t in (row["movies"] or "").split(";"))):
                movie = link(title)
                linked["linked" if movie else "not linked"] += 1
                if movie:
                    ids.append(movie)
            role: Role = "seeker" if row["speaker"].strip().upper() == "SEEKER" else "recommender"
            text = (row["text"] or "").replace("QUOTATION_MARK", '"')  # how the corpus escaped quotes
            by_dialog.setdefault(row["dialog_id"], []).append((int(row["utt_id"]), Message(role, text, tuple(dict.fromkeys(ids)))))
    dialogs = [Dialog(dialog_id, [m for _, m in sorted(rows, key=lambda r: r[0])]) for dialog_id, rows in by_dialog.items()]
    return dialogs, linked
