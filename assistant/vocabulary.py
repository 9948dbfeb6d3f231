"""The catalog as chat reads it: titles (linked through retrieval.titles), creators, categories
and the everyday words for them, years; built once per catalog size and shared by every turn."""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from retrieval.records import Item, item_length
from retrieval.titles import Mention, TitleIndex, normalize_title

_CJK = re.compile(r"[\u4e00-\u9fff]")


ERA_SHARE = {"old": 0.25, "new": 0.10}  # of the catalog's items with a year: what "old" and "new" cover

_ARTICLES = {"the", "a", "an", "le", "la", "les", "der", "die", "das", "el"}


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


class CatalogVocabulary:
    """Titles, creators and categories of the catalog, for linking words in a message to items."""

    def __init__(self, items: Iterable[Item]):
        self.titles: dict[str, list[str]] = {}
        self.creators: dict[str, str] = {}  # normalised name or surname -> display name
        self.categories: dict[str, str] = {}  # lowercase -> display
        self.years: dict[str, int | None] = {}
        self._sorted_years: list[int] | None = None  # era_years' cut points read from these; None after an add
        self.creator_of: dict[str, str | None] = {}
        self.title_of: dict[str, str] = {}
        self.extra_keys: set[str] = set()  # platform metadata fields some item carries
        self.knows_length = False  # does any item say how long it is (pages, runtime...)?
        self.title_index = TitleIndex()
        # As title tokens are read: "sci-fi" is "sci" and "fi" (a title's tokens never hold a hyphen).
        self.title_index.describing.update(w for word in _CATEGORY_WORDS | _SUBJECT_WORDS if word.isascii() for w in normalize_title(word).split())
        for item in items:
            self.add(item)

    def add(self, item: Item) -> None:
        key = normalize_title(item.title)
        if key:
            self.titles.setdefault(key, []).append(item.id)
        self.title_index.add(item.id, item.title, item.year)
        self.years[item.id] = item.year
        self._sorted_years = None
        self.creator_of[item.id] = item.creator
        self.title_of[item.id] = item.title
        if item.creator:
            full = normalize_title(item.creator)
            self.creators.setdefault(full, item.creator)
            surname = full.split()[-1] if full.split() else ""
            if len(surname) > 3:
                self.creators.setdefault(surname, item.creator)
        self.title_index.describe(" ".join([item.text, *item.categories, *item.tags]))
        for cat in item.categories:
            self.categories.setdefault(cat.lower(), cat)
            self.title_index.describing.update(normalize_title(cat).split())
        self.extra_keys.update(item.extra)
        self.knows_length = self.knows_length or item_length(item) is not None

    def era_years(self, era: str) -> tuple[int | None, int | None] | None:
        """The years "old" or "new" means in this catalog: its oldest quarter, or its newest tenth
        (a film catalog's old is not a news archive's); None for no era or no years known."""
        if era not in ERA_SHARE:
            return None
        if self._sorted_years is None:  # once per catalog, not every turn that names an era
            self._sorted_years = sorted(y for y in self.years.values() if y is not None)
        years = self._sorted_years
        if len(years) < 10:
            return None
        if era == "old":
            return None, years[int(ERA_SHARE["old"] * (len(years) - 1))]
        return years[int((1.0 - ERA_SHARE["new"]) * (len(years) - 1))], None

    def find_titles(self, message: str) -> list[str]:
        """Item ids whose title appears in the message, in order (one id per title)."""
        return list(dict.fromkeys(m.item_id for m in self.find_mentions(message)))

    def find_mentions(self, message: str) -> list[Mention]:
        """Titles named in the message with their twins and what was said about them (retrieval.titles)."""
        return self.title_index.find(message)

    def find_creators(self, text: str) -> list[str]:
        norm = " " + normalize_title(text) + " "
        hits = [name for key, name in self.creators.items() if f" {key} " in norm]
        return list(dict.fromkeys(hits))

    def find_categories(self, text: str, subjects: bool = True) -> list[str]:
        """Categories named in the text, longest phrase first ("science fiction" is not "fiction").
        subjects: also those a subject suggests ("zombies": Horror); not for a refusal."""
        lowered = " " + re.sub(r"[^\w\s-]", " ", text.lower()) + " "
        forms: dict[str, tuple[str, ...]] = {}
        for key, name in self.categories.items():
            for form in (key, key + "s", _SYNONYM_OF.get(key, key)):
                forms[form] = (name,)
        for word, cat in (_CATEGORY_WORDS | _SUBJECT_WORDS if subjects else _CATEGORY_WORDS).items():
            if cat.lower() in self.categories:
                forms[word] = (self.categories[cat.lower()],)
            elif len(word) >= 2 and _CJK.search(word):
                # A Chinese catalog files its novels under 现代小说 and 古典小说: "小说" names them all.
                kinds = tuple(name for key, name in self.categories.items() if key.endswith(word) and key != word)
                if kinds:
                    forms.setdefault(word, kinds)
        hits = []
        for form in sorted(forms, key=len, reverse=True):
            cjk = bool(_CJK.search(form))
            pattern = re.escape(form) if cjk else rf"(?<![\w-]){re.escape(form)}(?![\w-])"
            if re.search(pattern, lowered):
                hits.extend(forms[form])
                lowered = re.sub(pattern, " ", lowered)
        return list(dict.fromkeys(hits))


# Everyday words (English and Chinese) that name a category of the catalog.
_CATEGORY_WORDS = {
    "scary": "Horror", "creepy": "Horror", "horror": "Horror", "恐怖": "Horror", "鬼": "Horror",
    "slasher": "Horror", "slashers": "Horror", "spooky": "Horror", "gory": "Horror", "frightening": "Horror", "鬼片": "Horror",
    "sci-fi": "Science Fiction", "sci fi": "Science Fiction", "scifi": "Science Fiction", "science fiction": "Science Fiction",
    "科幻": "Science Fiction",
    "detective": "Mystery", "whodunit": "Mystery", "mystery": "Mystery", "mysteries": "Mystery",
    "侦探": "Mystery", "推理": "Mystery", "悬疑": "Mystery",
    "romantic": "Romance", "chick flick": "Romance", "chick flicks": "Romance", "love story": "Romance", "love stories": "Romance", "爱情": "Romance",
    "funny": "Comedy", "comedies": "Comedy", "rom com": "Comedy", "rom-com": "Comedy", "romcom": "Comedy", "喜剧": "Comedy", "搞笑": "Comedy",
    "adventure": "Adventure", "冒险": "Adventure",
    "poems": "Poetry", "poetry": "Poetry", "诗": "Poetry",
    "philosophical": "Philosophy", "哲学": "Philosophy",
    "fantasy": "Fantasy", "奇幻": "Fantasy", "魔幻": "Fantasy",
    "kids": "Children", "children": "Children", "儿童": "Children",
    "war": "War", "战争": "War",
    "history": "History", "historical": "History", "历史": "History",
    "gothic": "Gothic", "哥特": "Gothic",
    "drama": "Drama", "plays": "Drama", "戏剧": "Drama",
    "thriller": "Thriller", "suspense": "Thriller", "suspenseful": "Thriller", "惊悚": "Thriller",
    "psychological": "Thriller", "mind bender": "Thriller", "mind benders": "Thriller", "mind-bending": "Thriller",
    "animated": "Animation", "animation": "Animation", "cartoon": "Animation", "cartoons": "Animation", "动画": "Animation",
    "documentary": "Documentary", "documentaries": "Documentary", "纪录片": "Documentary",
    "crime": "Crime", "犯罪": "Crime", "gangster": "Crime", "gangsters": "Crime", "mafia": "Crime", "mob": "Crime",
    "heist": "Crime", "heists": "Crime", "黑帮": "Crime",
    "martial arts": "Action", "kung fu": "Action", "动作": "Action", "武打": "Action",
    "tearjerker": "Drama", "tear jerker": "Drama", "tearjerkers": "Drama",
    "feel good": "Comedy", "feel-good": "Comedy", "romcoms": "Comedy", "rom coms": "Comedy", "rom-coms": "Comedy",
    "western": "Western", "westerns": "Western", "musical": "Musical", "musicals": "Musical", "歌舞": "Musical", "satire": "Satire", "讽刺": "Satire",
    "tragedy": "Tragedy", "悲剧": "Tragedy",
    # How people say them in conversation ("I love to laugh", "family friendly").
    "hilarious": "Comedy", "laugh": "Comedy", "laughs": "Comedy", "comedic": "Comedy", "goofy": "Comedy",
    "lighthearted": "Comedy", "light-hearted": "Comedy", "fun movie": "Comedy", "fun movies": "Comedy", "fun film": "Comedy",
    "fun films": "Comedy", "好笑": "Comedy", "action packed": "Action", "action-packed": "Action",
    "family friendly": "Family", "family-friendly": "Family", "family movie": "Family",
    "family movies": "Family", "family films": "Family", "合家欢": "Family",
    "dramas": "Drama", "thrillers": "Thriller", "romances": "Romance",
    # A kind of novel is that kind, not fiction at large (the longer phrase is read first).
    "科幻小说": "Science Fiction", "侦探小说": "Mystery", "推理小说": "Mystery", "爱情小说": "Romance",
    "恐怖小说": "Horror", "冒险小说": "Adventure", "奇幻小说": "Fantasy", "短篇小说": "Short Stories",
    "小说": "Fiction", "传记": "Biography", "游记": "Travel", "随笔": "Essays",
}
# Subjects that say a kind when wanted ("zombies" -> Horror, a preference) but, when refused, refuse
# only themselves: "no vampires" leaves out vampire stories, not all of horror.
_SUBJECT_WORDS = {
    "zombie": "Horror", "zombies": "Horror", "haunted": "Horror", "ghosts": "Horror", "ghost stories": "Horror",
    "vampire": "Horror", "vampires": "Horror", "丧尸": "Horror", "僵尸": "Horror",
    "superhero": "Action", "superheroes": "Action", "super hero": "Action", "超级英雄": "Action",
    "disney": "Animation", "pixar": "Animation", "spy": "Thriller", "spies": "Thriller",
}
_SYNONYM_OF = {"science fiction": "sci-fi", "mystery": "mysteries", "comedy": "comedies"}
