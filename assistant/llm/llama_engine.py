"""batching.Engine over one llama.cpp context: its KV sequences, forward passes and vocabulary.

Sequence 0 is also what `Llama` itself evaluates into (label_logprobs, sampled streams): its
tokens are `llama.input_ids[:llama.n_tokens]`, which this engine keeps in step when it copies a
shared head there. Those calls use `Llama.eval`, which drops the cells of EVERY sequence past
its position, so they run only while no generation is admitted (scheduler.BatchScheduler.exclusive).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.errors import LLMError


class LlamaEngine:
    def __init__(self, llama, model_name: str):
        import llama_cpp

        self.llama = llama
        self.model_name = model_name
        self.n_ctx = llama.n_ctx()
        self.n_batch = llama.n_batch
        self.n_vocab = llama.n_vocab()
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._pieces: dict[int, bytes] = {}

    def cached(self) -> list[int]:
        return self.llama.input_ids[: self.llama.n_tokens].tolist()

    def keep_cached(self, source: int, tokens: Sequence[int]) -> None:
        import llama_cpp

        memory, n = self.llama._ctx.memory, len(tokens)
        llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
        llama_cpp.llama_memory_seq_cp(memory, source, 0, 0, n)
        self.llama.input_ids[:n] = tokens
        self.llama.n_tokens = n

    def truncate_cached(self, n: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.llama._ctx.memory, 0, n, -1)
        self.llama.n_tokens = n

    def copy(self, source: int, target: int, n: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_cp(self.llama._ctx.memory, source, target, 0, n)

    def free(self, seq: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.llama._ctx.memory, seq, -1, -1)

    def decode(self, entries: Sequence[tuple[int, int, int, bool]], allowed: dict | None = None) -> list[int]:
        import llama_cpp

        batch, ctx = self._batch, self.llama._ctx.ctx
        for j, (seq, pos, token, wants) in enumerate(entries):
            batch.token[j] = token
            batch.pos[j] = pos
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = seq
            batch.logits[j] = wants
        batch.n_tokens = len(entries)
        self.llama._requires_eval = True  # Llama's own last logits are stale now
        code = llama_cpp.llama_decode(ctx, batch)
        if code != 0:
            raise LLMError(f"llama.cpp could not decode a batch of {len(entries)} tokens with {self.model_name} (code {code})")
        out = []
        for j, (seq, _, _, wants) in enumerate(entries):
            if wants:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, j), shape=(self.n_vocab,))
                ids = allowed.get(seq) if allowed else None
                out.append(int(logits.argmax()) if ids is None else int(ids[logits[ids].argmax()]))
        return out

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.llama.detokenize([token], prev_tokens=None)
        return piece

    def is_end(self, token: int) -> bool:
        return llama_is_eog(self.llama, token)

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None


def llama_is_eog(llama, token: int) -> bool:
    """End of generation: EOS or any other end-of-turn token of this model."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama._model.vocab, token))
