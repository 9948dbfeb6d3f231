"""User administration: feedback on items, profiles and their corrections, sessions, forgetting."""

from __future__ import annotations

import time

from assistant.profile import apply_patch, derive_profile
from assistant.turn import Parts, validate_user_id
from core.errors import InputError, NotFoundError
from retrieval.records import FEEDBACK_TYPES, Event

PROFILE_FIELDS = {"interests", "dislikes", "summary", "removed_interests", "removed_dislikes", "onboarding"}


class Users:
    """What the assistant keeps about each user, and the ways to correct or remove it."""

    def __init__(self, parts: Parts):
        self.store, self.memory, self._parts = parts.store, parts.memory, parts

    def feedback(self, user_id: str, item_id: str, kind: str, source: str | None = None) -> None:
        """Store a card's like/dislike/not-interested/seen as an event; the next answer reflects it.

        source: where it was said ("chat <session id>"), kept as the event's text so that what a
        conversation taught can be traced to it."""
        validate_user_id(user_id)
        if kind not in FEEDBACK_TYPES:
            raise InputError(f"feedback kind {kind!r} is not one of {', '.join(FEEDBACK_TYPES)}")
        if self.store.get_item(item_id) is None:
            raise NotFoundError(f"item {item_id!r} is not in the catalog")
        self.store.add_events([Event(user_id=user_id, type=kind, timestamp=time.time(), item_id=item_id, text=source)])

    def overrides(self, user_id: str) -> dict:
        """The user's own corrections to their profile."""
        return (self.memory.get_profile(user_id) or {}).get("overrides", {})

    def get_profile(self, user_id: str, events: list[Event] | None = None) -> dict:
        """The user's profile: derived from every event so far (or `events`, when the caller
        already read them), plus their own corrections."""
        validate_user_id(user_id)
        events = self.store.events_for_user(user_id) if events is None else list(events)
        items = self.store.get_items([e.item_id for e in events if e.item_id])
        return derive_profile(user_id, events, items, self.overrides(user_id))

    def update_profile(self, user_id: str, patch: dict) -> dict:
        """Apply a user's correction (interests, summary, dislikes) and return the new profile."""
        validate_user_id(user_id)
        unknown = set(patch) - PROFILE_FIELDS
        if unknown:
            raise InputError(f"unknown profile fields {sorted(unknown)}; allowed: {sorted(PROFILE_FIELDS)}")
        stored = self.memory.get_profile(user_id) or {}
        stored["overrides"] = apply_patch(stored.get("overrides", {}), patch)
        self.memory.save_profile(user_id, stored)
        return self.get_profile(user_id)

    def delete_user(self, user_id: str) -> dict:
        """Remove the user from every store: events, conversations, profile, and what was fitted on them."""
        validate_user_id(user_id)
        removed = {**self.store.delete_user(user_id), **self.memory.delete_user(user_id)}
        if removed.get("events"):
            # Popularity, transitions and the collaborative vectors (published, in process and in
            # Chroma) were fitted on this user's events too: fit again so nothing derived survives.
            self._parts.forget_fitted()
        return removed

    def sessions(self, user_id: str) -> list[dict]:
        validate_user_id(user_id)
        return self.memory.list_sessions(user_id)

    def messages(self, user_id: str, session_id: str) -> list[dict]:
        validate_user_id(user_id)
        return self.memory.get_messages(user_id, session_id)
