"""recassist from LangChain and LangChain inside recassist (`pip install 'recassist[langchain]'`).

- `RecassistRetriever`: a user's recommendations for a query, as LangChain Documents.
- `recassist_tools(engine, user_id)`: recommend, record feedback, read the profile, for one user.
- `LangChainLLM` / `create(settings)`: any LangChain chat model as recassist's LLM.
- `RecassistEmbeddings` / `content_vectorstore(engine)`: recassist's embedder and Chroma collection.

Names load on first use, so importing this package imports no LangChain module.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "RecassistRetriever": "retriever",
    "recassist_tools": "tools",
    "first_call_uses": "tools",
    "LangChainLLM": "llm",
    "create": "llm",
    "RecassistEmbeddings": "embeddings",
    "content_vectorstore": "embeddings",
    "write_item_texts": "embeddings",
}
__all__ = sorted(_WHERE)
INSTALL_HINT = "pip install 'recassist[langchain]'"


def require(module: str, what: str):
    """Import an optional LangChain package, or say which one is missing and how to install it."""
    from core.errors import ConfigError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs the {module!r} package ({exc}); install it with {INSTALL_HINT}") from None


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
