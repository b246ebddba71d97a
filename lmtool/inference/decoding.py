"""The model side of generation: read a batch of prompts, extend every row by one token,
and what to do when a Transformer's context is full.

Rows are lists of token ids in the model's reading order (reversed for a backward run),
each starting with [EOS] unless the prompt was cut to fit the context.

What the model's state can do decides how (the model says, not its architecture's
name: `left_padding` and `max_positions`, models/base.py).

Prompts of different lengths in one batch:
- left padding (a Transformer's KV cache): padded on the LEFT, the cache told each
  row's padding (positions start after it, pad keys are masked), so every row's last
  token sits in the same column and the batch moves one token at a time together.
- otherwise (an AWD-LSTM: it cannot skip pad tokens): rows of equal length are read
  together, then their states are joined and put back in input order.

An encoder–decoder (models/seq2seq.py, `encoder_decoder`): the rows are its sources;
`start` encodes them once (the cross-attention's keys and values, or Bahdanau's keys,
are kept in the state) and reads [BOS], and every step reads one target token with
`decode`. Its callers keep max_new_tokens within the target context, so it never
reaches the limit below.

At the state's limit (`max_positions`: a Transformer's context; an LSTM has none): when
the cache is full, the rows are re-read from their last `keep` = limit - limit // 4
tokens into a fresh cache, and generation goes on. So the model always sees between 3/4
of its context and all of it, and the re-reading (one batched forward of `keep` tokens,
cheap next to decoding) comes once every limit // 4 new tokens. Re-reading the last
limit - 1 tokens at every step would keep the full context but cost a whole forward per
token.
"""

from __future__ import annotations

import torch
from torch import nn

from lmtool.inference.runs import LoadedLM
from lmtool.models.state import State
from lmtool.models.step_linear import step_linear


class Decoder:
    def __init__(self, lm: LoadedLM):
        self.lm = lm
        self.model = lm.model
        self.device = lm.device
        config = lm.config
        self.limit = self.model.max_positions  # the most tokens a state holds; None: any
        self.padded = self.model.left_padding  # a batch is read left-padded, at once
        self.seq2seq = getattr(self.model, "encoder_decoder", False)  # rows are sources
        self.keep = self.limit - self.limit // 4 if self.limit is not None else None
        # Added to every row of logits: -inf on the special tokens a generator never
        # writes (one add instead of an indexed write per step).
        self.bias = torch.zeros(config.vocab_size, device=lm.device)  # (V,)
        self.bias[list(lm.specials.never_generated())] = float("-inf")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits in fp32 with the special tokens ruled out, (B, C) → (B, V)."""
        head = self.model.lm_head
        head = step_linear(head) if isinstance(head, nn.Linear) else head
        return head(hidden).float() + self.bias

    def start(self, rows: list[list[int]], new_tokens: int) -> tuple[State, torch.Tensor]:
        """Read each row into a fresh state: the state and the logits of each row's next
        token, (B, V). `new_tokens`: how many more tokens the caller may add (sizes the
        KV cache)."""
        if self.seq2seq:
            state, hidden = self.model.start(rows, capacity=new_tokens + 1)
            return state, self.logits(hidden)
        if self.padded:
            return self._start_padded(rows, new_tokens)
        return self._start_grouped(rows)

    def step(self, state: State, ids: torch.Tensor) -> torch.Tensor:
        """Append one token per row, (B,) → the next logits (B, V). The caller checks
        `full(state)` first."""
        # Looked up at each call (not kept): a caller may wrap the model's methods.
        read = self.model.decode if self.seq2seq else self.model.encode
        hidden = read(ids[:, None], state)  # (B, 1, C)
        return self.logits(hidden[:, -1])

    def full(self, state: State) -> bool:
        return self.limit is not None and state.room() < 1

    def restart(self, rows: list[list[int]], new_tokens: int) -> tuple[State, torch.Tensor]:
        """A full cache: re-read the last `keep` tokens of every row (module docstring)."""
        return self.start([r[-self.keep :] for r in rows], new_tokens)

    def _start_padded(self, rows, new_tokens):
        longest = max(len(r) for r in rows)
        pads = [longest - len(r) for r in rows]
        ids = torch.tensor(
            [[self.lm.specials.pad] * p + r for p, r in zip(pads, rows, strict=True)],
            device=self.device,
        )  # (B, T)
        capacity = longest + new_tokens
        if self.limit is not None:
            capacity = min(self.limit, capacity)
        left_pad = torch.tensor(pads) if any(pads) else None
        state = self.model.initial_state(len(rows), capacity=capacity, left_pad=left_pad)
        hidden = self.model.encode(ids, state)  # (B, T, C)
        return state, self.logits(hidden[:, -1])

    def _start_grouped(self, rows):
        by_length: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_length.setdefault(len(r), []).append(i)
        states, hiddens, order = [], [], []
        for members in by_length.values():
            ids = torch.tensor([rows[i] for i in members], device=self.device)  # (b, T)
            state = self.model.initial_state(len(members))
            hiddens.append(self.model.encode(ids, state)[:, -1])  # (b, C)
            states.append(state)
            order += members
        state = type(states[0]).cat(states) if len(states) > 1 else states[0]
        hidden = torch.cat(hiddens) if len(hiddens) > 1 else hiddens[0]  # (B, C)
        if order != sorted(order):  # back to the rows' order
            back = torch.tensor(order).argsort().to(self.device)
            state, hidden = state.select(back), hidden.index_select(0, back)
        return state, self.logits(hidden)


def select(state: State, index: torch.Tensor) -> State:
    """state.select, skipped when `index` keeps every row where it is."""
    if index.numel() == state.batch_size and bool(
        (index == torch.arange(index.numel(), device=index.device)).all()
    ):
        return state
    return state.select(index)


__all__ = ["Decoder", "select"]
