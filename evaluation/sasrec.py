"""Sequential signal learned end to end: SASRec trained with full-softmax cross-entropy.

A causal self-attention encoder reads a user's items, oldest first, and predicts the next item
at every position; the loss is cross-entropy over the whole catalog (SASRec-CE, as in gSASRec and
"Turning Dross Into Gold Loss"), not the one sampled negative per step of the original paper,
which is what keeps published SASRec numbers low. Each epoch reads every user's sequence once,
all positions in one pass, so an epoch over MovieLens-small is seconds on two cores.

Same contract as retrieval.sequential.SequentialModel: `fit_sequences` on item-id sequences,
`score_array(history)` over `item_ids`. torch is imported only when a model is built or used.

Defaults were chosen on MovieLens-small held-out positions before the test item
(`python -m evaluation.experiments --signals sasrec`, evaluation/reports/experiments.md): a short
window (max_len 50) and few, large steps (lr 5e-3, batch 32, 25 epochs) fit a 2-core budget.

An experiment, not a product signal: alone it scores about half the co-occurrence signal's
NDCG@10 on 610 users, and fused with it adds nothing measurable, so the Retriever does not use it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np

from core.errors import ConfigError
from retrieval.records import Event
from retrieval.sequential import consumed

INSTALL_HINT = "pip install torch==2.13.0  # the CPU build scripts/bootstrap.sh installs"


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"SASRecModel needs PyTorch: `{INSTALL_HINT}` ({exc})") from None
    return torch


def _network(n_items: int, hidden: int, max_len: int, blocks: int, heads: int, dropout: float):
    """The encoder; index 0 is padding, items are 1..n_items, output embeddings are tied."""
    torch = _torch()
    nn, functional = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm, self.ff_norm = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
            self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
            self.drop = nn.Dropout(dropout)

        def forward(self, x, allowed):
            b, length, _ = x.shape
            q, k, v = self.qkv(self.attn_norm(x)).view(b, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            attended = functional.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, dropout_p=dropout if self.training else 0.0
            )
            x = x + self.drop(self.out(attended.transpose(1, 2).reshape(b, length, hidden)))
            return x + self.drop(self.ff(self.ff_norm(x)))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.items = nn.Embedding(n_items + 1, hidden, padding_idx=0)
            self.positions = nn.Embedding(max_len, hidden)
            self.blocks = nn.ModuleList(Block() for _ in range(blocks))
            self.norm, self.drop = nn.LayerNorm(hidden), nn.Dropout(dropout)
            nn.init.normal_(self.items.weight, std=hidden**-0.5)
            with torch.no_grad():
                self.items.weight[0].zero_()

        def forward(self, seq):
            """Hidden state at every position of left-padded sequences (batch, length)."""
            length = seq.shape[1]
            real = seq > 0
            # Positions count back from the newest item, so "last" is the same slot at any length.
            pos = torch.arange(length - 1, -1, -1, device=seq.device).clamp(max=max_len - 1)
            x = self.items(seq) * math.sqrt(hidden) + self.positions(pos)
            x = self.drop(x) * real.unsqueeze(-1)
            causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
            # Padding keys are hidden; a padding query still sees itself, or its softmax is empty (NaN).
            allowed = (causal & real[:, None, :]) | torch.eye(length, dtype=torch.bool, device=seq.device)
            allowed = allowed.unsqueeze(1)
            for block in self.blocks:
                x = block(x, allowed) * real.unsqueeze(-1)
            return self.norm(x)

        def logits(self, hidden_states):
            return hidden_states @ self.items.weight[1:].T

    return Encoder()


class SASRecModel:
    """Next-item prediction by causal self-attention over the user's items (full-softmax CE)."""

    def __init__(
        self,
        hidden: int = 64,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        max_len: int = 50,
        epochs: int = 25,
        batch_size: int = 32,
        lr: float = 5e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        threads: int = 2,
        verbose: bool = False,
    ):
        if hidden % heads:
            raise ConfigError(f"SASRecModel: hidden ({hidden}) must be a multiple of heads ({heads})")
        self.hidden, self.blocks, self.heads, self.dropout = hidden, blocks, heads, dropout
        self.max_len, self.epochs, self.batch_size = max_len, epochs, batch_size
        self.lr, self.weight_decay, self.seed, self.threads = lr, weight_decay, seed, threads
        self.verbose = verbose
        self.epoch_seconds: list[float] = []
        # (item ids, id -> 1-based row, network) swapped in whole by fit, as SequentialModel does.
        self._state: tuple[list, dict, object] = ([], {}, None)

    @property
    def item_ids(self) -> list:
        return self._state[0]

    @property
    def fitted(self) -> bool:
        return self._state[2] is not None

    def fit(self, events: Iterable[Event]) -> "SASRecModel":
        """Learn from events (any order): each user's consumed items by time, first time each."""
        per_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for event in events:
            if consumed(event):
                per_user[event.user_id].append((event.timestamp, event.item_id))
        sequences = []
        for timeline in per_user.values():
            timeline.sort(key=lambda pair: pair[0])  # stable: same-second events keep their order
            sequences.append(list(dict.fromkeys(item for _, item in timeline)))
        return self.fit_sequences(sequences)

    def fit_sequences(
        self, sequences: Iterable[Sequence[Hashable]], on_epoch: Callable[[int, Callable], None] | None = None
    ) -> "SASRecModel":
        """Train on item-id sequences, oldest first (each sequence is one sample per epoch).

        on_epoch(epoch, score_matrix) runs after every epoch with a scorer of the model so far
        (for early stopping or learning curves); readers of this model still see the old one.
        """
        torch = _torch()
        torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        index: dict = {}
        coded = [np.array([index.setdefault(i, len(index) + 1) for i in dict.fromkeys(seq)], dtype=np.int64) for seq in sequences]
        # Only the newest max_len + 1 items train: max_len inputs, each predicting the one after it.
        coded = [seq[-(self.max_len + 1):] for seq in coded if len(seq) >= 2]
        lengths = np.array([len(seq) for seq in coded])
        net = _network(len(index), self.hidden, self.max_len, self.blocks, self.heads, self.dropout)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        order = np.random.default_rng(self.seed)
        self.epoch_seconds = []
        net.train()
        for epoch in range(self.epochs if coded else 0):
            began, total, count = time.perf_counter(), 0.0, 0
            for batch in self._batches(lengths, order):
                inputs = _left_pad([coded[b][:-1] for b in batch])
                targets = _left_pad([coded[b][1:] for b in batch])
                inputs, targets = torch.from_numpy(inputs), torch.from_numpy(targets)
                real = targets > 0
                states = net(inputs)[real]
                loss = torch.nn.functional.cross_entropy(net.logits(states), targets[real] - 1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * int(real.sum()), count + int(real.sum())
            self.epoch_seconds.append(time.perf_counter() - began)
            if self.verbose:
                print(f"sasrec epoch {epoch + 1}/{self.epochs}: loss {total / count:.4f} ({self.epoch_seconds[-1]:.1f} s)", flush=True)
            if on_epoch is not None:
                net.eval()
                on_epoch(epoch + 1, lambda histories: self._score((list(index), index, net), histories))
                net.train()
        net.eval()
        self._state = (list(index), index, net)
        return self

    def _batches(self, lengths: np.ndarray, order: np.random.Generator) -> list[np.ndarray]:
        """Users of similar length together (padding costs as much as items), batches in random order."""
        by_length = np.lexsort((order.random(len(lengths)), lengths))
        batches = np.array_split(by_length, max(1, math.ceil(len(lengths) / self.batch_size)))
        return [batches[b] for b in order.permutation(len(batches))]

    def score_array(self, recent_items: Sequence[Hashable]) -> np.ndarray:
        """Next-item probabilities for every item in `item_ids` given the user's items (newest last)."""
        return self.score_matrix([recent_items])[0]

    def score_matrix(self, histories: Sequence[Sequence[Hashable]]) -> np.ndarray:
        """score_array for many histories at once: one row per history."""
        return self._score(self._state, histories)

    def _score(self, state, histories: Sequence[Sequence[Hashable]], batch_size: int = 256) -> np.ndarray:
        item_ids, index, net = state
        out = np.zeros((len(histories), len(item_ids)), dtype=np.float32)
        if net is None:
            return out
        torch = _torch()
        torch.set_num_threads(self.threads)
        # Unknown items are dropped; an item seen twice counts where the user first had it, as in training.
        coded = [np.array([index[i] for i in dict.fromkeys(h) if i in index], dtype=np.int64)[-self.max_len:] for h in histories]
        known = [n for n, seq in enumerate(coded) if len(seq)]
        with torch.no_grad():
            for start in range(0, len(known), batch_size):
                rows = known[start : start + batch_size]
                states = net(torch.from_numpy(_left_pad([coded[r] for r in rows])))[:, -1]
                out[rows] = torch.softmax(net.logits(states), dim=-1).numpy()
        return out

    def scores(self, recent_items: Sequence[Hashable], n: int = 200) -> dict:
        """The n most likely next items (id -> probability), best first, given recent items (newest last)."""
        item_ids = self.item_ids
        scores = self.score_array(recent_items)
        if not scores.any():
            return {}
        best = np.argsort(-scores, kind="stable")[:n]
        return {item_ids[j]: float(scores[j]) for j in best}


def _left_pad(sequences: Sequence[np.ndarray]) -> np.ndarray:
    """Sequences right-aligned in a zero matrix, so every row's newest item is the last column."""
    out = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if len(seq):
            out[row, -len(seq):] = seq
    return out
