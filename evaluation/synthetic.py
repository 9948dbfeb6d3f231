"""A synthetic platform: a catalog with generated text and a behaviour log shaped like a real one,
written as the files `recassist ingest` (catalog JSONL) and `recassist ingest-events` (events CSV) read.

    python -m evaluation.synthetic --items 50000 --users 100000 --events 1000000 --seed 0 --out DIR

- Items: a title, creator, year, categories, tags and a two-sentence description drawn from a word
  bank per category (so content vectors cluster by category), and the catalog's own popularity
  figure. Items belong to a category "series" ordered by release.
- Popularity is Zipf (weight 1 / rank ** `zipf`, ranks shuffled over the items), drifting over time:
  30% of the catalog exists at the start and the rest is released across the span; a new item is
  hot for its first weeks; every item's appeal takes a log-normal random walk from period to period.
- Users: a taste over categories (a sparse Dirichlet whose mean is each category's share of the
  popularity, so the whole log keeps the Zipf shape), a log-normal activity level, and sessions
  (mean `session_length` events, minutes apart) that stay mostly in one category; one event in
  `sequel` continues the previous item's series, which gives the sequential signal something to find.
- Event types: views, clicks, likes, ratings (1-5, higher in the user's favourite category),
  purchases, comments, dislikes and searches (no item, a word as text).

Users are generated a block at a time and their rows written at once, so memory stays bounded
whatever the size (10M events: ~1 GB file, a few hundred MB of memory). The same seed and sizes
give the same files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATEGORIES = {
    "Mystery": "detective murder clue suspect alibi inspector manor poison secret witness",
    "Romance": "wedding heart marriage kiss letters bride lovers courtship promise ballroom",
    "Science Fiction": "rocket astronaut galaxy planet orbit starship android colony signal reactor",
    "Fantasy": "dragon wizard sword kingdom quest elves sorcery prophecy tower realm",
    "Horror": "ghost vampire crypt haunting curse shadows asylum ritual corpse dread",
    "History": "empire revolution dynasty battle treaty monarch archive century siege chronicle",
    "Biography": "memoir childhood career legacy portrait founder statesman artist letters diary",
    "Cooking": "recipe kitchen chef bread oven flour dinner spices pastry harvest",
    "Travel": "journey railway island desert voyage mountains passport harbour caravan coast",
    "Science": "physics evolution genome climate particle experiment theory laboratory cosmos neuron",
    "Poetry": "verse sonnet ballad stanza rhyme elegy ode lyric meter refrain",
    "Thriller": "spy conspiracy hostage assassin agency chase heist cipher betrayal deadline",
    "Western": "frontier cowboy ranch sheriff outlaw saloon cattle prairie gunslinger stagecoach",
    "Comedy": "farce prank wedding mishap satire butler uncle picnic blunder gossip",
    "Sea Adventure": "sailor whale captain mutiny shipwreck pirate storm compass lighthouse reef",
    "Philosophy": "ethics reason virtue freedom truth logic mind justice being essay",
    "Children": "puppy school treehouse bedtime friendship wizard teddy garden adventure kitten",
    "Sports": "football marathon coach league champion stadium season rookie boxing tennis",
    "Business": "startup market investor strategy leadership merger profit negotiation brand factory",
    "War": "soldier trench regiment front general occupation resistance armistice bomber medal",
}
ADJECTIVES = ("Silent Hidden Last Crimson Golden Broken Distant Secret Burning Frozen Lost Endless Quiet "
              "Wild Bitter Iron Paper Glass Hollow Silver Northern Southern Midnight Scarlet Wandering "
              "Fallen Restless Painted Velvet Shattered Bright Sleeping Little Great Second Final").split()
PLACES = ("Harbor Valley Forest City River Garden Island Mountain Desert Station Castle Village Kingdom "
          "Tower Bridge Coast Moor Market Abbey Lighthouse Orchard Canyon Palace Meadow Frontier "
          "Lagoon Quarry Citadel Marsh Summit").split()
FIRST = ("Ann Bo Cy Di Ed Fay Gus Hal Ida Jo Kit Lev Mae Ned Ola Pia Quin Rae Sol Tam Uma Vic Wes Xia "
         "Yul Zoe Ama Ben Cal Dov").split()
LAST = ("Lee Chen Diaz Eze Fox Gray Hart Ivers Jung Kato Lund Moss Nash Ortiz Park Quade Reyes Shaw "
        "Tran Ueda Vance Wolfe Xu Young Zhao Abara Brandt Costa Dunn Ek").split()
# (type, share of events); a rate event carries a 1-5 value, a search no item.
EVENT_MIX = (("view", 0.50), ("click", 0.15), ("like", 0.10), ("rate", 0.12), ("purchase", 0.05),
             ("comment", 0.03), ("dislike", 0.03), ("search", 0.02))
END = 1_735_689_600  # 2025-01-01 00:00 UTC: the log ends here, whatever the day it is generated
DAY = 86_400
USER_BLOCK = 20_000  # users generated and written at once: bounds memory
AT_START = 0.3  # share of the catalog released before the log starts
HOT_DAYS = 30.0  # a new release's extra appeal fades with this time constant
EVENT_GAP_S = 240.0  # mean seconds between two events of one session
# --news: a story's appeal falls by e every NEWS_DAYS after it is published; few exist before the log.
NEWS_DAYS = 1.0
NEWS_AT_START = 0.02
NEWS_DRIFT = 0.1
NEWS_PERIODS_PER_DAY = 4  # appeal is set per period: a story is readable from the period after it is out


@dataclass(frozen=True)
class Platform:
    """Sizes and shape of a synthetic platform; the same values and seed give the same files."""

    items: int = 2_000
    users: int = 1_000
    events: int = 20_000
    seed: int = 0
    zipf: float = 1.0  # popularity exponent: weight 1 / rank ** zipf
    days: float = 365.0  # span of the log, ending at END
    periods: int = 12  # popularity drifts from one period to the next
    session_length: float = 5.0  # mean events per session
    sequel: float = 0.25  # share of events that continue the previous item's series
    taste_concentration: float = 2.0  # Dirichlet total: lower, more focused tastes
    news: bool = False  # a news platform: items published across the span (published_at), read in their first days


@dataclass
class Written:
    """What `generate` wrote."""

    catalog: Path
    events: Path
    items: int
    users: int
    event_rows: int
    seconds: float


class _Catalog:
    """Per item: category, Zipf weight, release time, next item of its series; per period: weights."""

    def __init__(self, platform: Platform, rng: np.random.Generator):
        n, start = platform.items, END - platform.days * DAY
        n_cat = min(len(CATEGORIES), n)
        self.names = list(CATEGORIES)[:n_cat]
        # Unequal category sizes (a few big genres), every category holding at least one item.
        share = 1.0 / np.arange(1, n_cat + 1) ** 0.7
        category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, size=n - n_cat, p=share / share.sum())])
        self.category = rng.permutation(category).astype(np.int32)
        self.weight = (1.0 / rng.permutation(np.arange(1, n + 1)) ** platform.zipf).astype(np.float64)
        release = np.where(rng.random(n) < (NEWS_AT_START if platform.news else AT_START), start - rng.random(n) * 3650 * DAY, start + rng.random(n) * platform.days * DAY)
        self.members = [np.flatnonzero(self.category == c) for c in range(n_cat)]
        for members in self.members:  # each category's first item exists from the start
            release[members[np.argmin(release[members])]] = start - DAY
        self.release = release
        # Series: the items of a category in release order; an item's sequel is the next one.
        self.sequel = np.arange(n)
        for c, members in enumerate(self.members):
            members = members[np.argsort(release[members], kind="stable")]
            self.members[c] = members
            self.sequel[members[:-1]] = members[1:]
        self.start, self.platform = start, platform
        self.period_s = platform.days * DAY / platform.periods
        drift = np.exp(np.cumsum(rng.normal(0.0, NEWS_DRIFT if platform.news else 0.35, size=(platform.periods, n)), axis=0))
        self.cumulative: list[list[np.ndarray]] = []  # [period][category] cumulative weights over members
        for p in range(platform.periods):
            begins = start + p * self.period_s
            age_days = (begins - release) / DAY
            fade = np.exp(-np.maximum(age_days, 0.0) / NEWS_DAYS) if platform.news else 1.0 + 4.0 * np.exp(-np.maximum(age_days, 0.0) / HOT_DAYS)
            appeal = self.weight * drift[p] * fade
            appeal[release > begins] = 0.0  # released later: nobody can have it yet
            self.cumulative.append([np.cumsum(appeal[m]) for m in self.members])
        mass = np.bincount(self.category, weights=self.weight, minlength=n_cat)
        self.category_share = mass / mass.sum()

    def draw(self, period: np.ndarray, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per event from its period's and category's popularity."""
        out = np.empty(len(period), dtype=np.int64)
        for p in np.unique(period):
            in_period = period == p
            for c in np.unique(category[in_period]):
                rows = np.flatnonzero(in_period & (category == c))
                cum = self.cumulative[p][c]
                picks = np.searchsorted(cum, rng.random(len(rows)) * cum[-1], side="right")
                out[rows] = self.members[c][np.minimum(picks, len(cum) - 1)]
        return out


def generate(platform: Platform, out_dir: str | Path, progress: bool = True) -> Written:
    """Write `catalog.jsonl` and `events.csv` for this platform into `out_dir`."""
    began = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(platform.seed)
    catalog = _Catalog(platform, rng)
    catalog_path, events_path = out / "catalog.jsonl", out / "events.csv"
    _write_catalog(catalog, rng, catalog_path)
    rows, users = _write_events(catalog, rng, events_path, progress, began)
    return Written(catalog_path, events_path, platform.items, users, rows, time.perf_counter() - began)


def _write_catalog(catalog: _Catalog, rng: np.random.Generator, path: Path) -> None:
    n = len(catalog.category)
    pairs = len(FIRST) * len(LAST)
    creators = [f"{FIRST[k % len(FIRST)]} {chr(65 + k // pairs % 26)}. {LAST[k // len(FIRST) % len(LAST)]}"
                for k in range(max(len(catalog.names), n // 20))]
    creator_of = rng.integers(0, len(creators), n)
    years = np.where(catalog.release < catalog.start, 1900 + rng.integers(0, 120, n),
                     [time.gmtime(t).tm_year for t in catalog.release.tolist()])
    # The platform's own figure (0..1), on a log scale as view counts are shown: rank 1 near 1, rank 10,000 near 0.
    figure = np.round(np.clip((1.0 + np.log10(catalog.weight / catalog.weight.max()) / 4.0) * rng.lognormal(0.0, 0.2, n), 0.0, 1.0), 3)
    words = {name: CATEGORIES[name].split() for name in catalog.names}
    picks = rng.integers(0, 1 << 30, size=(n, 8))
    titles: dict[str, int] = {}
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            name = catalog.names[catalog.category[i]]
            bank, k = words[name], picks[i]
            w = [bank[(k[5] + step) % len(bank)] for step in (0, 1, 3, 4, 6, 7)]  # six distinct words
            title = f"The {ADJECTIVES[k[0] % len(ADJECTIVES)]} {bank[k[1] % len(bank)].title()} of the {PLACES[k[2] % len(PLACES)]}"
            titles[title] = titles.get(title, 0) + 1
            if titles[title] > 1:
                title += f" {titles[title]}"  # titles stay distinct: the retriever keeps one id per work
            second = catalog.names[k[3] % len(catalog.names)]
            categories = [name] if k[4] % 3 else [name, second] if second != name else [name]
            tags = sorted(w[:2])
            text = (f"A {ADJECTIVES[k[7] % len(ADJECTIVES)].lower()} {name.lower()} story of {w[0]}, {w[1]} and {w[2]} "
                    f"in the {PLACES[k[2] % len(PLACES)].lower()}. {creators[creator_of[i]]} follows a {w[3]} "
                    f"through {w[4]} and {w[5]}.")
            row = {"id": f"i{i}", "title": title, "text": text, "categories": categories, "tags": tags,
                   "year": int(years[i]), "creator": creators[creator_of[i]], "popularity": float(figure[i])}
            if catalog.platform.news:
                row["published_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(catalog.release[i]))
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _event_counts(platform: Platform, rng: np.random.Generator) -> np.ndarray:
    """Events per user: log-normal activity, at least one each when there are enough events."""
    activity = rng.lognormal(0.0, 1.0, platform.users)
    activity /= activity.sum()
    if platform.events < platform.users:
        return rng.multinomial(platform.events, activity)
    return 1 + rng.multinomial(platform.events - platform.users, activity)


def _write_events(catalog: _Catalog, rng: np.random.Generator, path: Path, progress: bool, began: float) -> tuple[int, int]:
    platform = catalog.platform
    counts = _event_counts(platform, rng)
    types = [t for t, _ in EVENT_MIX]
    type_p = np.array([p for _, p in EVENT_MIX])
    rate, search = types.index("rate"), types.index("search")
    item_ids = [f"i{i}" for i in range(platform.items)]
    written, users, shown = 0, 0, 0.0
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("user_id,item_id,type,timestamp,value,text\n")
        for first in range(0, platform.users, USER_BLOCK):
            block = _block(catalog, rng, counts[first : first + USER_BLOCK], first, type_p, rate, search)
            user, item, kind, ts, value, text = block
            handle.write("".join(
                f"u{u},{item_ids[i] if i >= 0 else ''},{types[k]},{t},{v},{w}\n"
                for u, i, k, t, v, w in zip(user.tolist(), item.tolist(), kind.tolist(), ts.tolist(), value, text)
            ))
            written += len(user)
            users += int(np.count_nonzero(counts[first : first + USER_BLOCK]))
            if progress and (time.perf_counter() - shown > 1.0 or written == platform.events):
                shown = time.perf_counter()
                print(f"\rsynthetic: {written:,} / {platform.events:,} events ({written / max(platform.events, 1):.0%}), "
                      f"{users:,} users, {shown - began:.0f} s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return written, users


def _block(catalog: _Catalog, rng, counts: np.ndarray, first_user: int, type_p, rate: int, search: int):
    """The events of one block of users, as columns (user, item or -1, type, timestamp, value text, text)."""
    platform = catalog.platform
    n_users, n = len(counts), int(counts.sum())
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, [], []
    tastes = rng.dirichlet(platform.taste_concentration * catalog.category_share + 1e-3, size=n_users)
    local = np.repeat(np.arange(n_users), counts)
    starts_user = np.r_[True, local[1:] != local[:-1]]
    new_session = starts_user | (rng.random(n) < 1.0 / platform.session_length)
    session = np.cumsum(new_session) - 1
    session_user = local[new_session]
    n_sessions = len(session_user)
    gaps = rng.exponential(EVENT_GAP_S, n)
    gaps[new_session] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[np.flatnonzero(new_session)][session]
    session_start = catalog.start + rng.random(n_sessions) * platform.days * DAY
    ts = np.minimum(session_start[session] + elapsed, END - 1).astype(np.int64)
    # A session keeps to one category drawn from the user's taste; one event in five strays.
    cumulative = np.cumsum(tastes, axis=1)
    def from_taste(rows: np.ndarray) -> np.ndarray:
        drawn = (cumulative[rows] < rng.random(len(rows))[:, None] * cumulative[rows, -1:]).sum(axis=1)
        return np.minimum(drawn, len(catalog.names) - 1)
    category = from_taste(session_user)[session]
    stray = rng.random(n) < 0.2
    category[stray] = from_taste(local[stray])
    period = np.minimum(((ts - catalog.start) // catalog.period_s).astype(np.int64), platform.periods - 1)
    item = catalog.draw(period, category, rng)
    # A sequel follows the previous event's item, once it is out.
    follows = np.flatnonzero(~new_session & (rng.random(n) < platform.sequel))
    sequel = catalog.sequel[item[follows - 1]]
    released = catalog.release[sequel] <= catalog.start + period[follows] * catalog.period_s
    item[follows[released]] = sequel[released]
    kind = rng.choice(len(type_p), size=n, p=type_p)
    favourite = np.argmax(tastes, axis=1)[local] == catalog.category[item]
    stars = np.clip(np.rint(rng.normal(3.3 + 1.0 * favourite, 1.0)), 1, 5).astype(np.int64)
    value = ["" if k != rate else str(s) for k, s in zip(kind.tolist(), stars.tolist())]
    bank = [CATEGORIES[name].split() for name in catalog.names]
    word = rng.integers(0, 1 << 30, n)
    text = ["" if k != search else bank[c][w % len(bank[c])] for k, c, w in zip(kind.tolist(), category.tolist(), word.tolist())]
    item[kind == search] = -1
    return local + first_user, item, kind, ts, value, text


def news_periods(days: float) -> int:
    """Periods for a news platform: a few a day, so a story's appeal follows its age."""
    return max(1, int(round(days * NEWS_PERIODS_PER_DAY)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=Platform.items)
    parser.add_argument("--users", type=int, default=Platform.users)
    parser.add_argument("--events", type=int, default=Platform.events)
    parser.add_argument("--seed", type=int, default=Platform.seed)
    parser.add_argument("--zipf", type=float, default=Platform.zipf, help="popularity exponent (default %(default)s)")
    parser.add_argument("--days", type=float, default=Platform.days, help="span of the log in days (default %(default)s)")
    parser.add_argument("--news", action="store_true", help="a news platform: published_at per item, interest in its first days")
    parser.add_argument("--out", type=Path, required=True, help="folder for catalog.jsonl and events.csv")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if min(args.items, args.users) < 1 or args.events < 0:
        parser.error("--items and --users must be at least 1, --events at least 0")
    platform = Platform(items=args.items, users=args.users, events=args.events, seed=args.seed, zipf=args.zipf, days=args.days,
                        news=args.news, periods=news_periods(args.days) if args.news else Platform.periods)
    written = generate(platform, args.out, progress=not args.quiet)
    print(f"wrote {written.items:,} items to {written.catalog} and {written.event_rows:,} events of "
          f"{written.users:,} users to {written.events} in {written.seconds:.1f} s")


if __name__ == "__main__":
    main()
