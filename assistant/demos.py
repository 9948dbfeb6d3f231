"""The shipped demos: an English book catalog and a Chinese one, each with readers and their histories.

Each demo is a folder under `assistant/demo_data` with `books.jsonl`, `events.jsonl` and
`users.json`, in the formats `recassist ingest-catalog` / `ingest-events` read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from core.errors import ConfigError


@dataclass(frozen=True)
class Demo:
    """One shipped demo: where its files are and what it needs to run."""

    name: str
    folder: str  # under assistant/demo_data; "" for the English demo, which predates the others
    description: str
    example: str  # a first request to try, shown in the UI's message box
    loading: str  # what the first load does, for the start-up line
    # The embedder its language needs when the configured one cannot read it (MiniLM is English only).
    embedding: str = ""
    # Keep its store and vectors in DATA_DIR/demo-NAME, so it never mixes with your own catalog or
    # with the English demo (which loads into the data dir itself, as it always has).
    own_data: bool = False

    @property
    def path(self) -> Path:
        base = Path(str(files("assistant.demo_data")))
        return base / self.folder if self.folder else base

    def files(self) -> tuple[Path, Path]:
        """The catalog and events files."""
        return self.path / "books.jsonl", self.path / "events.jsonl"

    def users(self) -> list[dict]:
        """The demo readers: user_id, name and a one-line blurb."""
        return json.loads((self.path / "users.json").read_text(encoding="utf-8"))

    def first_item(self) -> tuple[str, str]:
        """(id, title) of the catalog's first item: its presence in a store tells that this demo is loaded."""
        with open(self.files()[0], encoding="utf-8") as f:
            row = json.loads(f.readline())
        return row["id"], row["title"]


DEMOS = {
    "en": Demo(
        "en", "", "English: 302 classic public-domain books, six readers",
        "e.g. something like Dracula, but shorter", "the first run embeds the 302 books once",
    ),
    "zh": Demo(
        "zh", "zh", "中文：211 部中国古典与现代文学作品，五位读者 (Chinese)",
        "例如：想读点关于江南水乡的散文", "the first run embeds the 211 works once, with the multilingual e5",
        embedding="e5", own_data=True,
    ),
}


def get_demo(name: str) -> Demo:
    """The demo called `name`, or an error that lists the ones there are."""
    try:
        return DEMOS[name]
    except KeyError:
        raise ConfigError(f"unknown demo {name!r}; use one of: {', '.join(DEMOS)} (e.g. `recassist serve --demo zh`)") from None
