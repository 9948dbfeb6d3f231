"""Any OpenAI-compatible server: OpenAI itself, vLLM, llama.cpp's server, Ollama, LM Studio...

Uses the `openai` SDK directly: it streams, returns logprobs and takes `extra_body`, which is all
this backend needs (langchain's ChatOpenAI would add a layer and rename max_tokens to
max_completion_tokens, which llama.cpp's server ignores).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Sequence
from urllib.parse import urlparse

from core.errors import LLMError
from assistant.llm.base import Prompt

# Reasoning models take max_completion_tokens and no temperature.
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
RETRY_AFTER_S = 30.0  # how long a server that failed is skipped (at least one timeout)


class OpenAICompatLLM:
    """Chat prompts by default; a plain-text prompt goes to the /completions endpoint."""

    backend = "openai"
    remote = True  # even a loopback server is treated as remote: its logs and the prompts are out of our hands
    one_call_at_a_time = False

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        model: str = "gpt-4o-mini",
        timeout: float = 30.0,
        *,
        prompt_style: str = "chat",
        context_window: int = 8192,
        supports_logprobs: bool = True,
        supports_json_schema: bool = True,
        tiktoken_cache_dir: str | None = None,
        retry_after_s: float = RETRY_AFTER_S,
        client=None,
    ):
        if prompt_style not in ("chat", "completion"):
            raise LLMError(f"prompt_style must be chat or completion, not {prompt_style!r}")
        host = urlparse(base_url).hostname or ""
        if not api_key and host.endswith("openai.com"):
            raise LLMError(f"{base_url} needs an API key; set RECASSIST_OPENAI_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.prompt_style = prompt_style
        self.context_window = context_window
        self.supports_logprobs = supports_logprobs
        self.supports_json_schema = supports_json_schema
        self._tiktoken_cache_dir = tiktoken_cache_dir
        self._encoding = None
        self._json_style = "json_schema"  # OpenAI's structured outputs until the server refuses them
        self.retry_after_s = max(retry_after_s, timeout)
        self._down_until = 0.0  # until when a failed server is skipped (monotonic clock), and why
        self._down_reason = ""
        if client is None:
            import openai

            # Local servers accept any key, but the SDK refuses an empty one. No retries: every
            # caller has a fallback, and a retry would double the wait on a dead or slow server.
            client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)
        self._client = client

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
        options = self._options(max_tokens, temperature, stop)
        with self._errors():
            # The read timeout restarts with every chunk: a server that trickles them would hold
            # the turn forever, so the whole answer gets the same time as one read.
            deadline = time.monotonic() + self.timeout
            if isinstance(prompt, str):
                if json_schema:
                    # Not part of OpenAI's /completions API: only servers that read it constrain the text.
                    options["extra_body"] = {"response_format": _response_format(json_schema, self._json_style)}
                chunks = self._client.completions.create(model=self.model, prompt=prompt, stream=True, **options)
                with _closing(chunks):
                    for chunk in chunks:
                        self._check_deadline(deadline)
                        if chunk.choices and chunk.choices[0].text:
                            yield chunk.choices[0].text
            else:
                chunks = self._create_chat(prompt, options, json_schema)
                with _closing(chunks):
                    for chunk in chunks:
                        self._check_deadline(deadline)
                        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                            yield chunk.choices[0].delta.content

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        options = self._options(1, 0.0, None)
        with self._errors():
            if isinstance(prompt, str):
                response = self._client.completions.create(model=self.model, prompt=prompt, logprobs=20, **options)
                logprobs = response.choices[0].logprobs if response.choices else None
                top = (logprobs.top_logprobs or [{}])[0] if logprobs else {}
                pairs = list((top or {}).items())
            else:
                response = self._client.chat.completions.create(
                    model=self.model, messages=prompt, logprobs=True, top_logprobs=20, **options
                )
                logprobs = response.choices[0].logprobs if response.choices else None
                first = logprobs.content[0] if logprobs and logprobs.content else None
                pairs = [(t.token, t.logprob) for t in first.top_logprobs] if first else []
        if not pairs:
            raise LLMError(
                f"{self.base_url} returned no logprobs for model {self.model}; "
                "if this server cannot return them, the ranker falls back to generating a list"
            )
        return map_top_logprobs(pairs, labels, where=f"{self.base_url} (model {self.model})")

    def count_tokens(self, text: str) -> int:
        if self._encoding is None:
            from assistant.tokens import encoding_name_for_model, get_encoding

            # Exact for OpenAI models; a close estimate (cl100k) for anything else.
            self._encoding = get_encoding(encoding_name_for_model(self.model), self._tiktoken_cache_dir)
        return len(self._encoding.encode(text, disallowed_special=()))

    # Helpers -----------------------------------------------------------------------------------

    def _create_chat(self, messages: list[dict], options: dict, json_schema: dict | None):
        """A streaming chat completion; JSON constrained by structured outputs, or the older schema form."""
        import openai

        if not json_schema:
            return self._client.chat.completions.create(model=self.model, messages=messages, stream=True, **options)
        try:
            return self._client.chat.completions.create(
                model=self.model, messages=messages, stream=True, response_format=_response_format(json_schema, self._json_style), **options
            )
        except openai.APIStatusError as exc:
            # llama-cpp-python's server answers 500 with a validation message, others 400 or 422.
            if self._json_style != "json_schema" or "response_format" not in str(exc):
                raise
            # llama.cpp's Python server (and Anyscale-style servers) take {"type": "json_object", "schema": ...}.
            self._json_style = "json_object"
            return self._create_chat(messages, options, json_schema)

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise _TooSlow()

    def _options(self, max_tokens: int, temperature: float, stop: Sequence[str] | None) -> dict:
        name = self.model.lower().rsplit("/", 1)[-1]
        options: dict = {"timeout": self.timeout}
        if name.startswith(_REASONING_PREFIXES):
            options["max_completion_tokens"] = max_tokens
        else:
            options["max_tokens"] = max_tokens
            options["temperature"] = temperature
        if stop:
            options["stop"] = list(stop)[:4]  # OpenAI accepts at most four
        return options

    @contextlib.contextmanager
    def _errors(self):
        """Turn SDK exceptions into LLMError messages that say where and how to fix.

        A server that timed out, could not be reached, failed (5xx) or sent an unreadable answer
        is skipped for `retry_after_s`: a turn makes several calls, and each would wait again.
        """
        import openai

        where = f"{self.base_url} (model {self.model})"
        wait = self._down_until - time.monotonic()
        if wait > 0:
            raise LLMError(f"{self._down_reason} (not retried for another {wait:.0f}s)")
        try:
            yield
        except _TooSlow:
            raise self._down(f"{where} did not finish its answer within {self.timeout:.0f}s; raise RECASSIST_LLM_TIMEOUT_S or check the server") from None
        except openai.APITimeoutError:
            raise self._down(f"{where} did not answer within {self.timeout:.0f}s; raise RECASSIST_LLM_TIMEOUT_S or check the server") from None
        except openai.APIConnectionError as exc:
            raise self._down(f"cannot reach {where}: {str(exc).rstrip('.')}. Is the server running? Check RECASSIST_OPENAI_BASE_URL") from None
        except openai.AuthenticationError:
            raise LLMError(f"{where} refused the API key; check RECASSIST_OPENAI_API_KEY") from None
        except openai.NotFoundError as exc:
            raise LLMError(f"{where} answered 404 ({_detail(exc)}); check RECASSIST_OPENAI_MODEL and the /v1 in the URL") from None
        except openai.APIStatusError as exc:
            message = f"{where} answered HTTP {exc.status_code}: {_detail(exc)}"
            raise (self._down(message) if exc.status_code >= 500 else LLMError(message)) from None
        except (openai.APIResponseValidationError, ValueError) as exc:
            # Not JSON, or JSON of the wrong shape: the server is not speaking the OpenAI API.
            raise self._down(f"{where} sent an answer that is not the OpenAI API's ({type(exc).__name__}: {str(exc)[:200]})") from None
        except openai.OpenAIError as exc:
            raise LLMError(f"{where} failed: {exc}") from None

    def _down(self, message: str) -> LLMError:
        self._down_until = time.monotonic() + self.retry_after_s
        self._down_reason = message
        return LLMError(message)


class _TooSlow(Exception):
    """A streamed answer ran past its deadline (turned into an LLMError by `_errors`)."""


def map_top_logprobs(pairs: Sequence[tuple[str, float]], labels: Sequence[str], where: str = "the model") -> dict[str, float]:
    """{label: logprob} from the server's top tokens (compared stripped); absent labels get a floor below them all.

    None of the labels among the top tokens is an LLMError naming `where`: every label would get
    the same floor, a ranking without information."""
    wanted = {label.strip(): label for label in labels}
    if not any(token.strip() in wanted for token, _ in pairs):
        raise LLMError(
            f"{where} put none of the labels among its {len(pairs)} most likely next tokens; it is not following the rank prompt"
        )
    found: dict[str, float] = {}
    for token, logprob in pairs:
        label = wanted.get(token.strip())
        if label is not None:
            found[label] = max(found.get(label, float("-inf")), float(logprob))
    floor = min(float(lp) for _, lp in pairs) - 1.0
    return {label: found.get(label, floor) for label in labels}


def _closing(chunks):
    """Close the HTTP stream when the caller stops reading early (fakes in tests may lack close())."""
    return contextlib.closing(chunks) if hasattr(chunks, "close") else contextlib.nullcontext()


def _response_format(json_schema: dict, style: str = "json_schema") -> dict:
    if style == "json_object":
        return {"type": "json_object", "schema": json_schema}
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": json_schema, "strict": True}}


def _detail(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        return str(error.get("message", error) if isinstance(error, dict) else error)[:300]
    return str(exc)[:300]
