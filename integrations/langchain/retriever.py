"""recassist's recommendations for one user as a LangChain retriever."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from assistant.turn import validate_user_id


class RecassistRetriever(BaseRetriever):
    """The items recassist recommends to `user_id` for a query, best first, as Documents.

    The same call as `recassist recommend` and `POST /v1/recommendations`: the user's history
    shapes the list, seen and disliked items are left out, and each Document carries the
    reason and the evidence behind it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(exclude=True)  # assistant.engine.Engine
    user_id: str
    k: int = Field(default=5, ge=1, le=20)
    filters: dict | None = None  # categories, exclude_categories, creators, year_min, year_max, exclude_ids

    @field_validator("user_id")
    @classmethod
    def _valid_user(cls, user_id: str) -> str:
        return validate_user_id(user_id)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        result = self.engine.agent.recommend(self.user_id, query=query, k=self.k, filters=self.filters)
        return documents_from(self.engine, result["items"])


def documents_from(engine, cards: list[dict]) -> list[Document]:
    """Cards from `Agent.recommend` as Documents: the item's description as text, the rest as metadata."""
    items = engine.store.get_items([card["item_id"] for card in cards])
    documents = []
    for rank, card in enumerate(cards, 1):
        item = items.get(card["item_id"])
        text = (item.text or item.document()) if item is not None else card["title"]
        metadata = {
            "id": card["item_id"],
            "title": card["title"],
            "rank": rank,
            "score": card["score"],
            "reason": card.get("reason", ""),
            "reason_source": card.get("reason_source", ""),
            "evidence": card.get("evidence") or {},
            "year": card.get("year"),
            "creator": card.get("creator"),
            "categories": list(card.get("categories") or []),
        }
        if item is not None:
            metadata["tags"] = list(item.tags)
            # The platform's own columns, without overwriting the fields above.
            metadata.update({k: v for k, v in item.extra.items() if k not in metadata})
        documents.append(Document(id=card["item_id"], page_content=text, metadata=metadata))
    return documents
