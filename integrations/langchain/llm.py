"""Any LangChain chat model as recassist's LLM (RECASSIST_LLM_BACKEND=langchain).

Capabilities come from the model: label log-probabilities when it is set to return them
(ChatOpenAI(logprobs=True), ChatLlamaCpp(logprobs=N, logits_all=True)); otherwise the ranker
asks for structured output, a JSON schema whose enum holds the candidate labels, through
`with_structured_output`; text streams through `.stream`.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Iterator, Sequence
from urllib.parse import urlparse

from core.errors import ConfigError, LLMError
from assistant.llm.base import Prompt
from assistant.llm.openai_compat import map_top_logprobs

TOP_LOGPROBS = 20
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")  # OpenAI models that take no temperature and no logprobs
DEFAULT_CONTEXT = 8192


class LangChainLLM:
    """recassist's LLM contract (assistant/llm/base.py) around a LangChain `BaseChatModel`."""

    backend = "langchain"
    prompt_style = "chat"  # chat models get the chat templates; a text prompt becomes one user message

    def __init__(
        self,
        chat_model,
        *,
        name: str | None = None,
        context_window: int | None = None,
        supports_logprobs: bool | None = None,
        supports_json_schema: bool | None = None,
        remote: bool | None = None,
        timeout_s: float = 60.0,
        tiktoken_cache_dir: str | None = None,
    ):
        self.chat_model = chat_model
        self.model = name or _model_name(chat_model)
        self.context_window = int(context_window or _context_window(chat_model) or DEFAULT_CONTEXT)
        self.supports_logprobs = _returns_logprobs(chat_model) if supports_logprobs is None else supports_logprobs
        self.supports_json_schema = _has_structured_output(chat_model) if supports_json_schema is None else supports_json_schema
        self.supports_streaming = _overrides(chat_model, "_stream")
        in_process = _runs_in_process(chat_model)
        # A GGUF loaded in this process is one model and one KV cache: turns queue for it.
        self.remote = (not in_process) if remote is None else remote
        self.one_call_at_a_time = in_process
        self.timeout_s = timeout_s
        self._tiktoken_cache_dir = tiktoken_cache_dir
        self._encoding = None

    def __repr__(self) -> str:
        return f"LangChainLLM({type(self.chat_model).__name__}, {self.model!r})"

    # The contract ----------------------------------------------------------------------------

    def stream(
        self,
        prompt: Prompt,
        *,
        max_tokens: int,
        stop: Sequence[str] | None = None,
        temperature: float = 0.0,
        json_schema: dict | None = None,
    ) -> Iterator[str]:
        messages = _messages(prompt)
        model = self._configured(max_tokens, temperature, logprobs=False)
        if json_schema:
            yield self._structured(model, messages, json_schema)
            return
        options = {"stop": _stops(self.chat_model, stop)} if stop else {}
        deadline = time.monotonic() + self.timeout_s
        with self._errors("stream"):
            if not self.supports_streaming:
                yield _text(model.invoke(messages, **options))
                return
            for chunk in model.stream(messages, **options):
                if time.monotonic() > deadline:
                    raise LLMError(f"{self._where()} did not finish its answer within {self.timeout_s:.0f}s")
                text = _text(chunk)
                if text:
                    yield text

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        if not self.supports_logprobs:
            raise LLMError(f"{self._where()} does not return log-probabilities; rank with structured output instead")
        model = self._configured(1, 0.0, logprobs=True)
        with self._errors("label_logprobs"):
            message = model.invoke(_messages(prompt), top_logprobs=TOP_LOGPROBS)
        pairs = _first_token_top_logprobs(message)
        if not pairs:
            # The model said it would and did not (a server that ignores the option): from now on
            # the ranker asks for structured output instead of failing every turn.
            self.supports_logprobs = False
            raise LLMError(
                f"{self._where()} returned no log-probabilities; ranking falls back to structured output from now on"
            )
        return map_top_logprobs(pairs, labels, where=self._where())

    def count_tokens(self, text: str) -> int:
        tokenize = getattr(getattr(self.chat_model, "client", None), "tokenize", None)
        if callable(tokenize):  # a llama.cpp model counts with its own tokenizer
            return len(tokenize(text.encode("utf-8"), add_bos=False, special=True))
        if self._encoding is None:
            from assistant.tokens import encoding_name_for_model, get_encoding

            # Offline tiktoken: exact for OpenAI models, a close estimate for the others. LangChain's
            # own get_num_tokens would download a tokenizer here.
            self._encoding = get_encoding(encoding_name_for_model(self.model), self._tiktoken_cache_dir)
        return len(self._encoding.encode(text, disallowed_special=()))

    # Helpers -----------------------------------------------------------------------------------

    def _configured(self, max_tokens: int, temperature: float, *, logprobs: bool):
        """A shallow copy of the chat model with this call's limits (its clients are shared).

        Set on the model rather than passed per call: `with_structured_output` drops call arguments.
        """
        fields = type(self.chat_model).model_fields
        update: dict = {}
        if "max_tokens" in fields:
            update["max_tokens"] = max_tokens
        if "temperature" in fields and not _is_reasoning(self.model):
            update["temperature"] = temperature
        if "logprobs" in fields:
            update["logprobs"] = True if logprobs else None  # off unless this call reads them (llama.cpp: slower)
        base_url = getattr(self.chat_model, "openai_api_base", None)
        if _speaks_openai(self.chat_model) and base_url and not (urlparse(base_url).hostname or "").endswith("openai.com"):
            # langchain-openai sends max_completion_tokens, which llama.cpp's and other servers ignore.
            update["extra_body"] = {**(self.chat_model.extra_body or {}), "max_tokens": max_tokens}
        return self.chat_model.model_copy(update=update) if update else self.chat_model

    def _structured(self, model, messages: list, json_schema: dict) -> str:
        """The answer as JSON text, constrained to the schema (enums included) by the provider's structured output."""
        # A tool or response format needs a name; the schema's own title wins.
        schema = {"title": "answer", "description": "The answer, in exactly this form.", **json_schema}
        with self._errors("structured output"):
            try:
                runnable = model.with_structured_output(schema, method="function_calling", include_raw=True)
            except (TypeError, ValueError):  # a model without that method name (ChatLlamaCpp): its default
                runnable = model.with_structured_output(schema, include_raw=True)
            result = runnable.invoke(messages)
        if result.get("parsed") is not None:
            return json.dumps(result["parsed"], ensure_ascii=False)
        # Cut off mid-list (max_tokens) or otherwise unparsable: the caller's parser reads what it can.
        raw = _raw_arguments(result.get("raw"))
        if raw:
            return raw
        raise LLMError(f"{self._where()} gave no structured answer ({result.get('parsing_error')})")

    def _where(self) -> str:
        return f"the LangChain model {self.model} ({type(self.chat_model).__name__})"

    @contextlib.contextmanager
    def _errors(self, what: str):
        """Any provider's exception becomes an LLMError that says which model failed, doing what."""
        try:
            yield
        except LLMError:
            raise
        except Exception as exc:  # providers raise their own types: httpx, openai, anthropic, llama.cpp...
            raise LLMError(
                f"{self._where()} failed in {what}: {type(exc).__name__}: {str(exc)[:300]}. "
                "Check RECASSIST_LANGCHAIN_MODEL and the provider's server or credentials"
            ) from None


# Reading a LangChain model -----------------------------------------------------------------------


def _model_name(chat_model) -> str:
    for field in ("model_name", "model", "model_id"):
        value = getattr(chat_model, field, None)
        if isinstance(value, str) and value:
            return value
    path = getattr(chat_model, "model_path", None)
    if path:
        return str(path).rsplit("/", 1)[-1]
    return type(chat_model).__name__


def _context_window(chat_model) -> int | None:
    profile = getattr(chat_model, "profile", None) or {}
    window = profile.get("max_input_tokens") if isinstance(profile, dict) else None
    return window or getattr(chat_model, "n_ctx", None)


def _returns_logprobs(chat_model) -> bool:
    """Set to return log-probabilities: ChatOpenAI(logprobs=True), ChatLlamaCpp(logprobs=N, logits_all=True)."""
    # llama.cpp computes them only with logits_all (3x slower prompt reading): without it, it refuses.
    return bool(getattr(chat_model, "logprobs", None)) and getattr(chat_model, "logits_all", True) is not False


def _overrides(chat_model, method: str) -> bool:
    from langchain_core.language_models import BaseChatModel

    return getattr(type(chat_model), method, None) is not getattr(BaseChatModel, method)


def _has_structured_output(chat_model) -> bool:
    """Structured output works where the model binds tools (the base class's version needs them) or has its own."""
    return _overrides(chat_model, "bind_tools") or _overrides(chat_model, "with_structured_output")


def _runs_in_process(chat_model) -> bool:
    return bool(getattr(chat_model, "model_path", None))  # ChatLlamaCpp: a GGUF in this process


def _is_reasoning(name: str) -> bool:
    return name.lower().rsplit("/", 1)[-1].startswith(REASONING_PREFIXES)


def _speaks_openai(chat_model) -> bool:
    """ChatOpenAI and its kin (they have an OpenAI base URL field)."""
    return "openai_api_base" in type(chat_model).model_fields


def _stops(chat_model, stop: Sequence[str]) -> list[str]:
    return list(stop)[:4] if _speaks_openai(chat_model) else list(stop)  # OpenAI's API takes at most four


def _messages(prompt: Prompt) -> list:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _text(message) -> str:
    return str(message.text)  # a str subclass in langchain-core 1.x


def _first_token_top_logprobs(message) -> list[tuple[str, float]]:
    """(token, logprob) pairs for the first generated token, in the OpenAI format both providers use."""
    logprobs = (message.response_metadata or {}).get("logprobs") or {}
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return []
    first = content[0]
    top = first.get("top_logprobs") if isinstance(first, dict) else getattr(first, "top_logprobs", None)
    pairs = []
    for entry in top or []:
        token = entry.get("token") if isinstance(entry, dict) else getattr(entry, "token", None)
        logprob = entry.get("logprob") if isinstance(entry, dict) else getattr(entry, "logprob", None)
        if token is not None and logprob is not None:
            pairs.append((token, float(logprob)))
    return pairs


def _raw_arguments(message) -> str:
    """The text of a structured answer that did not parse: the tool call's arguments, else the content."""
    if message is None:
        return ""
    for call in getattr(message, "invalid_tool_calls", None) or []:
        if call.get("args"):
            return str(call["args"])
    for call in getattr(message, "tool_calls", None) or []:
        return json.dumps(call.get("args") or {})
    return _text(message).strip()


# The backend's factory ---------------------------------------------------------------------------


def create(settings) -> LangChainLLM:
    """The chat model settings.langchain_model names ("provider:model"), as recassist's LLM.

    Providers are langchain's `init_chat_model` ones (openai, anthropic, ollama, ...). For `openai:`
    the OpenAI settings (base URL, key) apply and log-probabilities are asked for, so a llama.cpp
    or vLLM server works too. `llamacpp:PATH` (PATH empty: the embedded Gemma) runs a GGUF in this
    process through ChatLlamaCpp, which init_chat_model does not offer.
    """
    spec = (getattr(settings, "langchain_model", None) or "").strip()
    provider, _, name = spec.partition(":")
    if not provider or (not name and provider != "llamacpp"):
        raise ConfigError(
            f"RECASSIST_LANGCHAIN_MODEL must be 'provider:model' (e.g. 'openai:gpt-4o-mini', "
            f"'anthropic:claude-sonnet-4-5', 'llamacpp:/models/qwen.gguf'), not {spec!r}"
        )
    timeout = float(getattr(settings, "llm_timeout_s", 30.0))
    tiktoken_dir = str(settings.data_dir / "tiktoken") if getattr(settings, "data_dir", None) else None
    if provider == "llamacpp":
        return LangChainLLM(_llama_cpp_model(settings, name), timeout_s=timeout, tiktoken_cache_dir=tiktoken_dir)
    chat_models = _require("langchain.chat_models", "RECASSIST_LLM_BACKEND=langchain")
    kwargs: dict = {"timeout": timeout, "max_retries": 0}  # every caller has a fallback; a retry doubles the wait
    if provider == "openai":
        base_url = getattr(settings, "openai_base_url", "") or "https://api.openai.com/v1"
        api_key = getattr(settings, "openai_api_key", "")
        if not api_key and (urlparse(base_url).hostname or "").endswith("openai.com"):
            raise ConfigError(f"{base_url} needs an API key; set RECASSIST_OPENAI_API_KEY")
        kwargs.update(base_url=base_url, api_key=api_key or "not-needed")  # local servers take any key
        if not _is_reasoning(name):
            kwargs.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
    try:
        chat_model = chat_models.init_chat_model(spec, **kwargs)
    except ImportError as exc:
        raise ConfigError(f"RECASSIST_LANGCHAIN_MODEL={spec!r} needs the provider's package: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"RECASSIST_LANGCHAIN_MODEL={spec!r}: {exc}") from None
    return LangChainLLM(chat_model, context_window=getattr(settings, "llm_context", None), timeout_s=timeout,
                        tiktoken_cache_dir=tiktoken_dir)


def _llama_cpp_model(settings, path: str):
    """ChatLlamaCpp on a GGUF file; the embedded Gemma (a base model without a chat template) speaks Gemma's format."""
    module = _require("langchain_community.chat_models", "RECASSIST_LANGCHAIN_MODEL=llamacpp:...")
    from assistant.llm.llama import ensure_embedded_model

    model_kwargs = {}
    if not path:
        path = str(getattr(settings, "llm_model_path", None) or ensure_embedded_model(settings.models_dir))
        if not getattr(settings, "llm_model_path", None):
            model_kwargs["chat_format"] = "gemma"
    threads = getattr(settings, "llm_threads", 0) or None
    try:
        return module.ChatLlamaCpp(
            model_path=path, n_ctx=int(getattr(settings, "llm_context", 2048)), n_threads=threads, n_batch=512,
            temperature=0.0, max_tokens=256, verbose=False, model_kwargs=model_kwargs,
        )
    except ValueError as exc:  # ChatLlamaCpp's "Could not load Llama model from path"
        raise ConfigError(f"RECASSIST_LANGCHAIN_MODEL=llamacpp:{path}: {exc}") from None


def _require(module: str, what: str):
    from integrations.langchain import require

    return require(module, what)
