"""The dialog protocol's catalog and event log, as files the public ingest reads.

Catalog: ReDial's movies ("Title (Year)"), with TMDB 5000 overview, genres and keywords where the
normalised title and year match (else through MovieLens' own TMDB link), and MovieLens genres and
user tags where the movie links to MovieLens. Events: MovieLens-small ratings of the movies that link
by title + year, plus one event per movie a tuning dialog mentioned, its seeker being the user, and
one `search` event per seeker message with its words, as `recassist ingest-dialogs` logs them.
Both files go to the work directory: the data's terms forbid committing them.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable

from core.errors import ConfigError
from evaluation.dialogs import Dialog
from evaluation.movielens import (
    CATALOG_MAPPING,
    EVENTS_MAPPING,
    LIST_SEPARATOR,
    Prepared,
    _fallback_text,
    _merge_tags,
    _read_links,
    _read_tags,
    _read_tmdb,
    split_title,
)
from retrieval.dialog_log import LINE_SPACING_S, MAX_SAID, said_time

Key = tuple[str, "int | None"]
MENTION_TIME = 1_600_000_000  # mentions come after every MovieLens rating (2018 and before)
# "Seven (a.k.a. Se7en)", "City of Lost Children, The (Cité des enfants perdus, La)": both names link.
_ALTERNATIVE = re.compile(r"^(?P<main>.+?)\s*\((?:a\.k\.a\. )?(?P<alt>[^()]+)\)$")
DIALOG_EVENTS_MAPPING = {**EVENTS_MAPPING, "text": "text"}  # the events file carries the seekers' words
_USER_ID_CHARS = re.compile(r"[^A-Za-z0-9_.@:-]")


def normalise(title: str) -> str:
    """Lower case ASCII words, '&' read as 'and', a leading article dropped: 'The Matrix' == 'Matrix, The'."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower().replace("&", " and ")
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    return re.sub(r"^(the|a|an) ", "", text)


def title_keys(raw: str) -> list[Key]:
    """'Seven (a.k.a. Se7en) (1995)' -> [('seven', 1995), ('se7en', 1995)]."""
    title, year = split_title(raw)
    names = [title]
    alternative = _ALTERNATIVE.match(title)
    if alternative:
        names = [split_title(alternative["main"])[0], split_title(alternative["alt"])[0]]
    return list(dict.fromkeys((normalise(name), year) for name in names if normalise(name)))


class TitleLinker:
    """Maps "Title (Year)" to catalog ids by normalised title and year (every twin of a duplicate)."""

    def __init__(self, names: dict[str, str]):
        self.ids: dict[Key, list[str]] = {}
        for movie_id, raw in names.items():
            for key in title_keys(raw):
                self.ids.setdefault(key, []).append(movie_id)

    def all(self, raw: str) -> list[str]:
        """Every catalog id whose title and year match (a year is required)."""
        found: list[str] = []
        for key in title_keys(raw):
            if key[1] is not None:
                found += [i for i in self.ids.get(key, []) if i not in found]
        return found

    def __call__(self, raw: str) -> str | None:
        found = self.all(raw)
        return found[0] if found else None


def read_movie_names(redial_dir: Path) -> dict[str, str]:
    """ReDial's movies_with_mentions.csv as {movieId: "Title (Year)"} (nbMentions is deliberately not read)."""
    path = Path(redial_dir) / "movies_with_mentions.csv"
    if not path.is_file():
        raise ConfigError(f"{path} is missing: point --data-root at the folder holding redial-dev/")
    with path.open(encoding="utf-8", newline="") as src:
        return {row["movieId"]: " ".join(row["movieName"].split()) for row in csv.DictReader(src)}


def prepare_catalog(data_root: Path, work_dir: Path, names: dict[str, str]) -> tuple[Path, dict]:
    """Write the catalog CSV (once per set of names; reused after) and return it with join statistics."""
    data_root, work_dir = Path(data_root), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    catalog, stats_file = work_dir / "redial_catalog.csv", work_dir / "redial_catalog_stats.json"
    if catalog.is_file() and stats_file.is_file():
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
        if stats.get("movies") == len(names):
            return catalog, stats
    ml_dir, tmdb_file = data_root / "movielens-small", data_root / "tmdb-5000" / "tmdb_5000_movies.csv"
    for needed in (ml_dir / "movies.csv", ml_dir / "links.csv", ml_dir / "tags.csv", tmdb_file):
        if not needed.is_file():
            raise ConfigError(f"{needed} is missing: point --data-root at the folder holding movielens-small/ and tmdb-5000/")
    tmdb_text = _read_tmdb(tmdb_file)
    tmdb_by_key, tmdb_genres = _read_tmdb_titles(tmdb_file)
    ml_by_key, ml_genres = _read_movielens_titles(ml_dir / "movies.csv")
    tmdb_of_ml, tags_of_ml = _read_links(ml_dir / "links.csv"), _read_tags(ml_dir / "tags.csv")
    joined: Counter = Counter()
    with catalog.open("w", encoding="utf-8", newline="") as dst:
        writer = csv.DictWriter(dst, fieldnames=list(CATALOG_MAPPING.values()))
        writer.writeheader()
        for movie_id, raw in names.items():
            title, year = split_title(raw)
            keys = [k for k in title_keys(raw) if k[1] is not None]
            ml = next((ml_by_key[k] for k in keys if k in ml_by_key), None)
            tmdb = next((tmdb_by_key[k] for k in keys if k in tmdb_by_key), None)
            joined["tmdb by title + year"] += tmdb is not None
            if tmdb is None and ml is not None and tmdb_of_ml.get(ml) in tmdb_text:
                tmdb = tmdb_of_ml[ml]
                joined["tmdb through the movielens link"] += 1
            joined["movielens"] += ml is not None
            overview, keywords = tmdb_text.get(tmdb, ("", [])) if tmdb else ("", [])
            joined["with an overview"] += bool(overview)
            genres = (tmdb_genres.get(tmdb) if tmdb else None) or (ml_genres.get(ml) if ml else None) or []
            fields = {
                "id": movie_id,
                "title": title or raw,
                "text": overview or _fallback_text(genres, year),
                "categories": LIST_SEPARATOR.join(g.replace(LIST_SEPARATOR, "/") for g in genres),
                "tags": LIST_SEPARATOR.join(_merge_tags(tags_of_ml.get(ml, []) if ml else [], keywords)),
                "year": "" if year is None else str(year),
            }
            writer.writerow({CATALOG_MAPPING[k]: v for k, v in fields.items()})
    stats = {"movies": len(names), **joined}
    stats_file.write_text(json.dumps(stats), encoding="utf-8")
    return catalog, stats


def write_events(path: Path, data_root: Path, linker: TitleLinker, tune: Iterable[Dialog], source: str) -> dict:
    """MovieLens ratings of linked movies plus the tuning dialogs' mentions, as one events CSV."""
    ml_dir = Path(data_root) / "movielens-small"
    ml_to_catalog: dict[str, list[str]] = {}
    with (ml_dir / "movies.csv").open(encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            ids = linker.all(row["title"])
            if ids:
                ml_to_catalog[row["movieId"]] = ids
    counts: Counter = Counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as dst, (ml_dir / "ratings.csv").open(encoding="utf-8", newline="") as src:
        writer = csv.DictWriter(dst, fieldnames=list(DIALOG_EVENTS_MAPPING.values()))
        writer.writeheader()

        def write(user: str, item: str, kind: str, value: str, timestamp: float, text: str = "") -> None:
            writer.writerow({DIALOG_EVENTS_MAPPING["user_id"]: user, DIALOG_EVENTS_MAPPING["item_id"]: item,
                             DIALOG_EVENTS_MAPPING["type"]: kind, DIALOG_EVENTS_MAPPING["value"]: value,
                             DIALOG_EVENTS_MAPPING["timestamp"]: timestamp, DIALOG_EVENTS_MAPPING["text"]: text})
            counts[kind] += 1

        for row in csv.DictReader(src):
            for item in ml_to_catalog.get(row["movieId"], ()):
                write(f"ml-{row['userId']}", item, "rate", row["rating"], float(row["timestamp"]))
        for ordinal, dialog in enumerate(tune):
            user = _USER_ID_CHARS.sub("_", f"{source}:{dialog.id}")[:128]
            # As `recassist ingest-dialogs` logs a conversation (retrieval/dialog_log.py): each seeker
            # message a search with its words, then the works named after it; a stated verdict is a
            # like or dislike, any other named work a mention (weight 1).
            start, position, since, named = MENTION_TIME + ordinal * LINE_SPACING_S, 0, 0, set()
            for message in dialog.messages:
                if message.role == "seeker" and message.text.strip():
                    write(user, "", "search", "", said_time(start, position, since), " ".join(message.text.split())[:MAX_SAID])
                    since += 1
                for item in message.movies:
                    if item not in named:
                        named.add(item)
                        write(user, item, dialog.verdicts.get(item, "mention"), "", start + position)
                        position, since = position + 1, 0
    return {"movielens_movies_linked": len(ml_to_catalog), **{f"events_{k}": v for k, v in sorted(counts.items())}}


def prepare(data_root: Path, work_dir: Path, names: dict[str, str], tune: list[Dialog], source: str) -> Prepared:
    """Catalog and events files for one dialog source; the events hold only its tuning dialogs."""
    catalog, stats = prepare_catalog(data_root, work_dir, names)
    events = Path(work_dir) / f"events-{_USER_ID_CHARS.sub('_', source)}.csv"
    stats = {**stats, **write_events(events, data_root, TitleLinker(names), tune, source)}
    return Prepared(catalog=catalog, events=events, stats=stats, events_mapping=dict(DIALOG_EVENTS_MAPPING))


def _read_tmdb_titles(path: Path) -> tuple[dict[Key, str], dict[str, list[str]]]:
    """{(normalised title, release year): tmdb id} and {tmdb id: genre names}."""
    by_key: dict[Key, str] = {}
    genres: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            year = row.get("release_date", "")[:4]
            if year.isdigit():
                by_key.setdefault((normalise(row["title"]), int(year)), row["id"])
            try:
                genres[row["id"]] = [g["name"] for g in json.loads(row.get("genres") or "[]")]
            except (json.JSONDecodeError, KeyError, TypeError):
                genres[row["id"]] = []
    return by_key, genres


def _read_movielens_titles(path: Path) -> tuple[dict[Key, str], dict[str, list[str]]]:
    """{(normalised title, year): movieId} (alternative titles too) and {movieId: genres}."""
    by_key: dict[Key, str] = {}
    genres: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            for key in title_keys(row["title"]):
                by_key.setdefault(key, row["movieId"])
            genres[row["movieId"]] = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
    return by_key, genres
