"""recassist as LangChain tools for one user, who is bound by the caller and never by the model."""

from __future__ import annotations

import json
from typing import Literal

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

from assistant.turn import validate_user_id
from core.errors import InputError, NotFoundError
from integrations.langchain.retriever import documents_from

FeedbackKind = Literal["like", "dislike", "not_interested", "seen"]


class RecommendArgs(BaseModel):
    query: str = Field(default="", description="what the user asked for, in their words; empty for 'surprise me'")
    k: int = Field(default=5, ge=1, le=10, description="how many items to return")


class FeedbackArgs(BaseModel):
    item_id: str = Field(description="the id of an item from a recommend_items result, e.g. 'bk-042'")
    kind: FeedbackKind = Field(description="like, dislike, not_interested or seen")


class NoArgs(BaseModel):
    pass


def recassist_tools(engine, user_id: str) -> list[BaseTool]:
    """recommend_items, record_feedback and read_profile, all acting for `user_id`.

    The tools take no user argument: a model cannot read or change another user's data, whatever
    it writes. Bind the user the way the rest of your application authenticated them.
    """
    validate_user_id(user_id)
    agent = engine.agent

    def recommend_items(query: str = "", k: int = 5):
        result = agent.recommend(user_id, query=query, k=k)
        documents = documents_from(engine, result["items"])
        if not documents:
            return "No item in the catalog matches that request.", []
        lines = [
            f"{d.metadata['rank']}. {d.metadata['title']}{_about(d.metadata)} [id {d.metadata['id']}]: {d.metadata['reason']}"
            for d in documents
        ]
        return "\n".join(lines), documents

    def record_feedback(item_id: str, kind: FeedbackKind) -> str:
        try:
            agent.feedback(user_id, item_id, kind)
        except (InputError, NotFoundError) as exc:  # the model sees the message and can correct itself
            raise ToolException(str(exc)) from None
        title = engine.store.get_item(item_id).title
        return f"Recorded: {kind} for {title} [id {item_id}]. The next recommendations take it into account."

    def read_profile() -> str:
        profile = agent.get_profile(user_id)
        return json.dumps(profile, ensure_ascii=False, default=str)

    return [
        StructuredTool.from_function(
            recommend_items,
            name="recommend_items",
            description="Recommend catalog items for the current user, grounded in their history. "
            "Returns numbered items with their id and the reason each fits.",
            args_schema=RecommendArgs,
            response_format="content_and_artifact",  # the Documents ride along for the application
        ),
        StructuredTool.from_function(
            record_feedback,
            name="record_feedback",
            description="Record the current user's reaction to an item (like, dislike, not_interested, seen).",
            args_schema=FeedbackArgs,
            handle_tool_error=True,
        ),
        StructuredTool.from_function(
            read_profile,
            name="read_profile",
            description="Read the current user's profile: interests, dislikes and a summary of their taste.",
            args_schema=NoArgs,
        ),
    ]


def _about(meta: dict) -> str:
    parts = [str(x) for x in (meta.get("creator"), meta.get("year")) if x]
    return f" ({', '.join(parts)})" if parts else ""


def first_call_uses(tool_name: str):
    """Agent middleware: the model's first call must call `tool_name` (it still writes the arguments).

    Small local models rarely choose a tool on their own; hosted models do not need this.
    """
    from integrations.langchain import require

    middleware = require("langchain.agents.middleware", "first_call_uses")
    from langchain_core.messages import ToolMessage

    @middleware.wrap_model_call(name="FirstCallUses")
    def force_first_tool(request, handler):
        if not any(isinstance(m, ToolMessage) for m in request.messages):
            # The dict form: some chat models (ChatLlamaCpp) ignore a tool named by a bare string.
            request = request.override(tool_choice={"type": "function", "function": {"name": tool_name}})
        return handler(request)

    return force_first_tool
