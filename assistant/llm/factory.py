"""Build the configured LLM backend from Settings."""

from __future__ import annotations

from assistant.errors import ConfigError, LLMError
from assistant.llm.base import LLM


def create_llm(settings) -> LLM | None:
    """The backend named by settings.llm_backend; None for "none" (retrieval order, evidence reasons)."""
    backend = settings.llm_backend
    if backend == "none":
        return None
    if backend == "fake":
        from assistant.llm.fake import FakeLLM

        return FakeLLM()
    if backend == "llama":
        return _local_llm(settings)
    if backend == "openai":
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
    raise ConfigError(f"unknown RECASSIST_LLM_BACKEND {backend!r}; use llama, openai, fake or none")


def _local_llm(settings) -> LLM:
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
                           prompt_style=settings.llm_prompt_style, lock_timeout_s=queue_timeout_s)
    from assistant.llm.process import ModelProcessLLM, ModelSupervisor

    supervisor = ModelSupervisor(path, n_ctx=settings.llm_context, threads=settings.llm_threads,
                                 prompt_style=settings.llm_prompt_style, queue_timeout_s=queue_timeout_s)
    info = supervisor.start()  # LLMError, saying why, when the model cannot load or run here
    return ModelProcessLLM(supervisor.socket_path, timeout_s=settings.llm_timeout_s, queue_timeout_s=queue_timeout_s,
                           supervisor=supervisor, info=info)
