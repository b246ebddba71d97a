"""Encoder–decoders: what the LSTM (models/seq2seq_lstm.py) and the Transformer
(models/seq2seq_transformer.py) share, and the state decoding carries.

    model = build_seq2seq(config)                 # lmtool.models; a Seq2SeqConfig
    logits = model(source, source_mask, target_in)        # teacher forcing: (B, T, V)
    state, hidden = model.start(sources)                  # encode once, read [BOS]
    hidden = model.decode(next_ids[:, None], state)       # one more target token

Token conventions (the one tokenizer serves both sides): a source is its ids then
[EOS]; the decoder reads [BOS] + target and predicts target + [EOS]. Batches are
right-padded with [PAD]; `source_mask` (B, S) is True at real tokens.

Decoding state (`Seq2SeqState`): what was computed once per source (the encoder's
output, projected to the cross-attention's keys and values or Bahdanau's keys, and the
source mask) and what grows with every target token (the decoder's KV cache, or its
LSTM (h, c)). `select(index)` takes rows, as beam search needs (models/state.py's
protocol), so the generation library (inference/decoding.py) drives both models. The
per-source tensors are kept once per source, shared by the consecutive rows that read
it (a beam search's K beams): reordering beams within their sources copies none of them,
and attention reads each source's keys once for all its rows.
"""

from __future__ import annotations

import torch
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.seq2seq_config import Seq2SeqConfig
from lmtool.models.state import KVCache
from lmtool.text.specials import SPECIAL_IDS


class Seq2SeqState:
    """Per-source tensors, shared by `group` consecutive rows each (row r reads source
    r // group); per-row tensors carried step to step; the decoder's KV cache
    (Transformer) if any. All batch first."""

    def __init__(self, sources: dict[str, torch.Tensor], rows: dict[str, torch.Tensor] | None
                 = None, cache: KVCache | None = None, length: int = 0, group: int = 1):
        self.sources = sources  # e.g. "mask" (n, S), "k0"/"v0" (n, H, S, D), "keys" (n, S, A)
        self.rows = rows if rows is not None else {}  # e.g. "h"/"c" (B, L, N), B = n * group
        self.cache = cache
        self.group = group
        self._length = length  # target tokens read (without a cache to count them)

    @property
    def batch_size(self) -> int:
        return next(iter(self.sources.values())).size(0) * self.group

    @property
    def length(self) -> int:
        return self.cache.length if self.cache is not None else self._length

    def advance(self, T: int) -> None:
        self._length += T

    def room(self) -> int:
        """Target positions left (unbounded for an LSTM)."""
        return self.cache.room() if self.cache is not None else 1 << 62

    def per_row(self, name: str) -> torch.Tensor:
        """A per-source tensor repeated for each row that reads it, (B, ...)."""
        t = self.sources[name]
        return t if self.group == 1 else t.repeat_interleave(self.group, 0)

    def select(self, index: torch.Tensor) -> Seq2SeqState:
        """A new state whose row i is this state's row index[i]. If the new rows still
        come in equal runs of one source each, in order (beam search: the K beams of
        source b at rows bK ... bK + K - 1, whichever of its beams they continue; or
        expanding each row K times), the per-source tensors are shared, not copied."""
        some = next(iter(self.sources.values()))
        index = index.to(some.device)
        n, B = some.size(0), index.numel()
        source = torch.div(index, self.group, rounding_mode="floor")  # (B,) each row's
        group = B // n
        runs = torch.arange(n, device=index.device).repeat_interleave(group)  # (n * group,)
        sources = self.sources
        if group * n != B or not torch.equal(source, runs):
            sources = {k: v.index_select(0, source) for k, v in sources.items()}
            group = 1
        rows = {k: v.index_select(0, index) for k, v in self.rows.items()}
        cache = self.cache.select(index) if self.cache is not None else None
        return Seq2SeqState(sources, rows, cache, self._length, group)


def pad_rows(rows: list[list[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and their mask (B, T), True at real tokens."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), SPECIAL_IDS.pad, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    mask = ids.new_tensor([[j < len(r) for j in range(longest)] for r in rows], dtype=torch.bool)
    return ids.to(device), mask.to(device)


class EncoderDecoder(nn.Module):
    """Base class: `forward(source, source_mask, target_in, head=True)`, `start`,
    `decode`, `cross_attention`, `lm_head`, `layer_groups`."""

    config: Seq2SeqConfig
    lm_head: nn.Module
    encoder_decoder = True  # the generation library starts it from sources
    left_padding = False  # targets all start with [BOS]: a batch moves in step

    @torch.no_grad()
    def attention_steps(self, source: list[int], target: list[int]) -> list[torch.Tensor]:
        """The cross-attention weights `decode` records while reading [BOS] + `target`
        teacher-forced after `source`, in eval mode (per step for an LSTM, per layer
        for a Transformer); `cross_attention` shapes them."""
        device = self.tok_emb.weight.device
        was = self.training
        self.eval()
        try:
            src = torch.tensor([source], device=device)
            tgt = torch.tensor([[SPECIAL_IDS.bos, *target]], device=device)
            state = self.remember(src, torch.ones_like(src, dtype=torch.bool))
            weights: list[torch.Tensor] = []
            self.decode(tgt, state, weights)
        finally:
            self.train(was)
        return weights

    @property
    def max_positions(self) -> int | None:
        """Target tokens a decoding state can hold; None: no limit."""
        return None

    def forward(self, source: torch.Tensor, source_mask: torch.Tensor, target_in: torch.Tensor,
                head: bool = True) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) of each next target token, or the hidden
        states (B, T, C) the head reads (`head=False`)."""
        self.check_length(source)
        self.check_length(target_in)
        hidden = self.decode(target_in, self.remember(source, source_mask))  # (B, T, C)
        return self.lm_head(hidden) if head else hidden

    def remember(self, source: torch.Tensor, source_mask: torch.Tensor, *, cache: bool = False,
                 capacity: int | None = None) -> Seq2SeqState:
        """Encode the sources into a fresh decoding state (nothing decoded yet). `cache`:
        decode token by token with a KV cache (inference), sized for `capacity` target
        tokens at first; without one, `decode` reads a whole target at once."""
        raise NotImplementedError

    def decode(self, target: torch.Tensor, state: Seq2SeqState) -> torch.Tensor:
        """Target ids (B, T) after the state's → decoder hidden states (B, T, C); the
        state advances in place."""
        raise NotImplementedError

    def start(self, sources: list[list[int]], capacity: int | None = None
              ) -> tuple[Seq2SeqState, torch.Tensor]:
        """Encode the source rows (ids, ending in [EOS]) and read [BOS]: the state and
        the hidden state (B, C) that gives the first target token."""
        device = self.lm_head.weight.device
        source, mask = pad_rows(sources, device)
        self.check_length(source)
        state = self.remember(source, mask, cache=True, capacity=capacity)
        bos = torch.full((len(sources), 1), SPECIAL_IDS.bos, dtype=torch.long, device=device)
        return state, self.decode(bos, state)[:, -1]  # (B, C)

    def cross_attention(self, source: list[int], target: list[int], **options) -> torch.Tensor:
        """Attention weights (T, S) of one source ([EOS] included) while reading
        [BOS] + target: row t is what the decoder looked at to predict target token t
        (or [EOS] at the last); each row sums to one."""
        raise NotImplementedError

    def layer_groups(self) -> list[list[nn.Module]]:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_length(self, idx: torch.Tensor) -> None:
        if idx.dim() != 2:
            raise BadInput(f"expected token ids of shape (batch, time), got {tuple(idx.shape)}")
        if idx.size(1) > self.config.context:
            raise BadInput(
                f"a sequence of {idx.size(1)} tokens is longer than the model's context of "
                f"{self.config.context}", "shorten the input or train with a larger --context")
