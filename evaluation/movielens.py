"""Turn MovieLens-small (+ TMDB 5000 overviews) into a catalog CSV and an events CSV the public ingest reads.

The files go to a work directory outside the repository: the data's terms allow research use,
not redistribution inside the product.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError

# What the prepared files call each of our fields ({our_field: file_column}), passed to
# retrieval.ingest exactly as a platform would pass its own mapping.
CATALOG_MAPPING = {
    "id": "movie_id",
    "title": "title",
    "text": "overview",
    "categories": "genres",
    "tags": "tags",
    "year": "year",
}
EVENTS_MAPPING = {
    "user_id": "user_id",
    "item_id": "movie_id",
    "type": "type",
    "value": "rating",
    "timestamp": "timestamp",
}
LIST_SEPARATOR = "|"  # genres and tags inside one CSV cell
MAX_TAGS = 12

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
# "Usual Suspects, The" -> "The Usual Suspects"; also before an alternative title in brackets.
_ARTICLE = re.compile(r"^(?P<body>.+?), (?P<article>The|A|An)(?P<rest>\s*\(.*\))?$")


@dataclass
class Prepared:
    """Where the prepared files are and how to read them."""

    catalog: Path
    events: Path
    catalog_mapping: dict[str, str] = field(default_factory=lambda: dict(CATALOG_MAPPING))
    events_mapping: dict[str, str] = field(default_factory=lambda: dict(EVENTS_MAPPING))
    stats: dict = field(default_factory=dict)


def split_title(raw: str) -> tuple[str, int | None]:
    """'American President, The (1995)' -> ('The American President', 1995)."""
    raw = raw.strip()
    year = None
    match = _YEAR.search(raw)
    if match:
        year = int(match.group(1))
        raw = raw[: match.start()].strip()
    article = _ARTICLE.match(raw)
    if article:
        raw = f"{article['article']} {article['body']}{article['rest'] or ''}"
    return raw, year


def find_data_root(repo_root: Path | None = None) -> Path | None:
    """The shared data folder: /work/shared/data or ../shared/data next to the repository."""
    repo_root = repo_root or Path(__file__).resolve().parents[1]
    for candidate in (repo_root.parent / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "movielens-small" / "ratings.csv").is_file():
            return candidate
    return None


def prepare(data_root: Path, work_dir: Path, *, force: bool = False) -> Prepared:
    """Write catalog.csv and events.csv into work_dir (once; reused unless force)."""
    ml = Path(data_root) / "movielens-small"
    tmdb_file = Path(data_root) / "tmdb-5000" / "tmdb_5000_movies.csv"
    for needed in ("movies.csv", "links.csv", "tags.csv", "ratings.csv"):
        if not (ml / needed).is_file():
            raise ConfigError(
                f"{ml / needed} is missing: point --data-root at the folder holding movielens-small/"
            )
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    prepared = Prepared(catalog=work_dir / "movielens_catalog.csv", events=work_dir / "movielens_events.csv")
    stats_file = work_dir / "movielens_stats.json"
    if not force and prepared.catalog.is_file() and prepared.events.is_file() and stats_file.is_file():
        prepared.stats = json.loads(stats_file.read_text(encoding="utf-8"))
        return prepared

    overviews = _read_tmdb(tmdb_file) if tmdb_file.is_file() else {}
    tmdb_of = _read_links(ml / "links.csv")
    tags_of = _read_tags(ml / "tags.csv")
    with_overview = 0
    with (ml / "movies.csv").open(encoding="utf-8", newline="") as src, prepared.catalog.open(
        "w", encoding="utf-8", newline=""
    ) as dst:
        writer = csv.DictWriter(dst, fieldnames=list(CATALOG_MAPPING.values()))
        writer.writeheader()
        movies = 0
        for row in csv.DictReader(src):
            movies += 1
            title, year = split_title(row["title"])
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            overview, keywords = overviews.get(tmdb_of.get(row["movieId"], ""), ("", []))
            with_overview += bool(overview)
            tags = _merge_tags(tags_of.get(row["movieId"], []), keywords)
            fields = {
                "id": row["movieId"],
                "title": title,
                # Without an overview the item keeps title, year, genres and tags (the
                # embedded document is built from those); the text field says what it is.
                "text": overview or _fallback_text(genres, year),
                "categories": LIST_SEPARATOR.join(genres),
                "tags": LIST_SEPARATOR.join(tags),
                "year": "" if year is None else str(year),
            }
            writer.writerow({CATALOG_MAPPING[k]: v for k, v in fields.items()})
    ratings = 0
    with (ml / "ratings.csv").open(encoding="utf-8", newline="") as src, prepared.events.open(
        "w", encoding="utf-8", newline=""
    ) as dst:
        writer = csv.DictWriter(dst, fieldnames=list(EVENTS_MAPPING.values()))
        writer.writeheader()
        for row in csv.DictReader(src):
            ratings += 1
            writer.writerow(
                {
                    EVENTS_MAPPING["user_id"]: row["userId"],
                    EVENTS_MAPPING["item_id"]: row["movieId"],
                    EVENTS_MAPPING["type"]: "rate",
                    EVENTS_MAPPING["value"]: row["rating"],
                    EVENTS_MAPPING["timestamp"]: row["timestamp"],
                }
            )
    prepared.stats = {"movies": movies, "movies_with_overview": with_overview, "ratings": ratings}
    stats_file.write_text(json.dumps(prepared.stats), encoding="utf-8")
    return prepared


def _fallback_text(genres: list[str], year: int | None) -> str:
    kind = " / ".join(genres).lower() + " film" if genres else "film"
    when = f" from {year}" if year else ""
    return f"A {kind}{when}."


def _merge_tags(user_tags: list[str], keywords: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for tag in [*user_tags, *keywords]:
        clean = tag.strip().replace(LIST_SEPARATOR, "/")
        if clean and clean.lower() not in seen:
            seen.add(clean.lower())
            out.append(clean)
    return out[:MAX_TAGS]


def _read_tmdb(path: Path) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    with path.open(encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            try:
                keywords = [k["name"] for k in json.loads(row.get("keywords") or "[]")]
            except (json.JSONDecodeError, KeyError, TypeError):
                keywords = []
            out[row["id"]] = ((row.get("overview") or "").strip(), keywords[:6])
    return out


def _read_links(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as src:
        # tmdbId is written as "862" or, in some copies, "862.0".
        return {r["movieId"]: r["tmdbId"].split(".")[0] for r in csv.DictReader(src) if r["tmdbId"]}


def _read_tags(path: Path) -> dict[str, list[str]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    with path.open(encoding="utf-8", newline="") as src:
        for row in csv.DictReader(src):
            counts[row["movieId"]][row["tag"].strip()] += 1
    return {movie: [t for t, _ in c.most_common()] for movie, c in counts.items()}
