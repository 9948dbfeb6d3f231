"""The platform's request context (mood, device, minutes available, filters): soft words for
retrieval and the prompts, hard filters for this turn only."""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant.vocabulary import CatalogVocabulary
from core.errors import InputError


_SMALL_SCREENS = {"phone", "mobile", "smartphone", "watch", "smartwatch"}
_MINUTES_KEYS = ("available_minutes", "minutes", "time_available")
_FILTER_KEYS = ("categories", "exclude_categories", "exclude_terms", "year_min", "year_max")
_SOFT_KEYS = ("mood", "occasion", "genre")


@dataclass
class ContextReading:
    """What a turn's request context does: hard filters, soft query words and a line for prompts."""

    filters: dict = field(default_factory=dict)  # merged into the turn's constraints (not persisted)
    extra_filters: dict = field(default_factory=dict)  # catalog metadata equality: {"language": "en"}
    max_length: float | None = None
    prefer_shorter: bool = False
    words: str = ""  # soft words added to the retrieval query
    note: str = ""  # "evening; on a phone; mood: cosy", for the prompts


def read_context(context: dict | None, vocab: CatalogVocabulary) -> ContextReading:
    """Turn the platform's request context into filters, query words and a prompt note.

    Known keys: mood, occasion, genre (soft words); with ("kids" becomes the catalog's children's
    category when it has one); device (a phone or watch prefers shorter items when lengths are
    known); time_of_day (prompt only); available_minutes (a hard length limit when lengths are
    known); categories, exclude_categories, exclude_terms, year_min, year_max (platform-enforced
    filters, e.g. a kids' profile); any key that is a metadata field of the catalog (equality
    filter, e.g. language). Other keys only reach the prompts.
    """
    reading = ContextReading()
    if not context:
        return reading
    words, note = [], []

    def text(value) -> str:
        return " ".join(str(value).split())[:60]

    for key, value in context.items():
        if value in (None, "", [], {}):
            continue
        key = str(key)
        if key in _SOFT_KEYS:
            words.append(text(value))
            note.append(f"{key}: {text(value)}")
        elif key == "with":
            cats = vocab.find_categories(str(value))
            if cats:
                reading.filters.setdefault("categories", []).extend(cats)
            else:
                words.append(text(value))
            note.append(f"with {text(value)}")
        elif key == "device":
            note.append(f"on a {text(value)}")
            reading.prefer_shorter = str(value).lower() in _SMALL_SCREENS and vocab.knows_length
        elif key == "time_of_day":
            note.append(text(value))
        elif key in _MINUTES_KEYS:
            try:
                minutes = float(value)
            except (TypeError, ValueError):
                raise InputError(f"context.{key} must be a number of minutes, not {value!r}") from None
            if vocab.knows_length:
                reading.max_length = minutes
            note.append(f"{minutes:g} minutes available")
        elif key in _FILTER_KEYS:
            reading.filters[key] = _context_filter(key, value)
        elif key in vocab.extra_keys and isinstance(value, (str, int, float, bool)):
            reading.extra_filters[key] = value
        elif isinstance(value, (str, int, float, bool)):
            note.append(f"{key}: {text(value)}")
    reading.words = " ".join(words)[:200]
    reading.note = "; ".join(note)[:300]
    return reading


def _context_filter(key: str, value):
    if key in ("year_min", "year_max"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"context.{key} must be a whole year, not {value!r}")
        return value
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InputError(f"context.{key} must be a string or a list of strings, not {value!r}")
    return [v for v in values if v.strip()][:20]


def apply_context(constraints: dict, reading: ContextReading) -> dict:
    """The turn's constraints with the context's filters added (the conversation keeps its own)."""
    merged = {key: list(value) if isinstance(value, list) else value for key, value in constraints.items()}
    for key, value in reading.filters.items():
        if key == "year_min":
            merged[key] = value if merged.get(key) is None else max(merged[key], value)
        elif key == "year_max":
            merged[key] = value if merged.get(key) is None else min(merged[key], value)
        else:
            merged[key] = list(dict.fromkeys(merged.get(key, []) + value))
    return merged
