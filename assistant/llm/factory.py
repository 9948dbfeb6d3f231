"""The built-in LLM backends' factories; which one runs is the registry's business (registry.py)."""

from __future__ import annotations

from core.errors import LLMError
from assistant.llm.base import LLM


def create_llm(settings) -> LLM | None:
    """The backend named by settings.llm_backend; None for "none" (retrieval order, evidence reasons)."""
    from assistant.llm.registry import create_llm as create

    return create(settings)


def fake_llm(settings) -> LLM:
    """A FakeLLM with no answers queued (tests enqueue theirs)."""
    from assistant.llm.fake import FakeLLM

    return FakeLLM()


def openai_llm(settings) -> LLM:
    """The OpenAI-compatible server the openai_* settings name (built without contacting it)."""
    from assistant.llm.openai_compat import OpenAICompatLLM

    style = "chat" if settings.llm_prompt_style == "auto" else settings.llm_prompt_style
    return OpenAICompatLLM(
        settings.openai_base_url,
        settings.openai_api_key,
        settings.openai_model,
        settings.llm_timeout_s,
        prompt_style=style,
        context_window=settings.llm_context,
        tiktoken_cache_dir=str(settings.data_dir / "tiktoken"),
    )


def local_llm(settings) -> LLM:
    """A GGUF model: in a supervised process of its own (default), a shared one, or inline."""
    import importlib.util

    from assistant.llm.llama import INSTALL_HINT, ensure_embedded_model

    queue_timeout_s = max(settings.llm_timeout_s, 1.0) * 4
    if settings.llm_socket:  # a model process another process runs: nothing of llama.cpp is needed here
        from assistant.llm.process import ModelProcessLLM

        return ModelProcessLLM(settings.llm_socket, timeout_s=settings.llm_timeout_s, queue_timeout_s=queue_timeout_s)
    if importlib.util.find_spec("llama_cpp") is None:  # say so here, before starting a process
        raise LLMError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
    path = settings.llm_model_path or ensure_embedded_model(settings.models_dir)
    if settings.llm_process == "inline":
        from assistant.llm.llama import LlamaCppLLM

        return LlamaCppLLM(path, n_ctx=settings.llm_context, n_threads=settings.llm_threads,
                           prompt_style=settings.llm_prompt_style, lock_timeout_s=queue_timeout_s,
                           batching=settings.llm_batching)
    from assistant.llm.process import ModelProcessLLM, ModelSupervisor

    supervisor = ModelSupervisor(path, n_ctx=settings.llm_context, threads=settings.llm_threads,
                                 prompt_style=settings.llm_prompt_style, queue_timeout_s=queue_timeout_s,
                                 batching=settings.llm_batching)
    try:
        info = supervisor.start()  # LLMError, saying why, when the model cannot load or run here
    except LLMError:
        supervisor.stop()  # no restarts, and its socket's folder goes
        raise
    return ModelProcessLLM(supervisor.socket_path, timeout_s=settings.llm_timeout_s, queue_timeout_s=queue_timeout_s,
                           supervisor=supervisor, info=info)
