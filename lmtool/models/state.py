"""What a causal model carries from one chunk of text to the next.

    state = model.initial_state(batch_size)      # on the model's device
    hidden = model.encode(chunk1, state)         # (B, T1, C); state now holds chunk1
    hidden = model.encode(chunk2, state)         # continues where chunk1 ended

`encode(idx, state)` advances the state IN PLACE. Two kinds, one protocol (`length`,
`batch_size`, `select`):

- `KVCache` (Transformer): each block's keys and values, (B, H, T, D) per block, keys
  stored after the rotary step. Buffers are allocated on first use in the dtype the
  keys arrive in (bf16 under autocast) and grow by doubling up to the model's context,
  so a short prompt does not pay for a 1,024-token cache. It cannot hold more than the
  context: the caller decides what to do at the limit (generation re-reads the recent
  tokens, see inference/decoding.py). `dtype` may differ from the keys' (the
  Transformer keeps an fp32 cache on CPUs, see its `initial_state`): writing converts.
  Inference only: appends write into the buffers in place, which autograd does not
  follow.
- `LSTMState` (AWD-LSTM): each layer's (h, c). Training through it is the point
  (stateful BPTT): `detach()` cuts the graph between batches.

`select(index)` returns a NEW state whose row i is row index[i] of this one (rows may
repeat): beam search reorders its beams with it, the autocomplete engine forks n
candidate rows off a one-row prefix without touching the prefix's state.

Batched prompts of different lengths (Transformer): the rows are padded on the LEFT
and `left_pad` (B,) says how many pad positions each row has. A row's token at cache
position p then sits at model position p - left_pad, and attention never looks at a
pad key. Without `left_pad` (the usual case, and always at batch 1) no mask is built.
"""

from __future__ import annotations

import torch

from lmtool.errors import BadInput


class KVCache:
    """Keys and values of every block of a Transformer, for B rows of text.

    `length` counts cache positions (pads included) filled so far; the same for every
    row. `keys[i]` / `values[i]` are block i's buffers, (B, H, capacity, D), of which
    positions [0, length) are filled; None until the first `encode`.
    """

    def __init__(
        self,
        layers: int,
        batch_size: int,
        heads: int,
        head_size: int,
        context: int,
        device: torch.device,
        capacity: int | None = None,
        left_pad: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.batch_size = batch_size
        self.dtype = dtype  # of the buffers; None: that of the first keys written
        self.heads = heads
        self.head_size = head_size
        self.context = context  # the most positions this cache may hold
        self.device = torch.device(device)
        # How many positions to allocate at first: the caller's estimate of what it
        # will need (prompt + new tokens), or a small start that doubles as needed.
        self.capacity = min(capacity or 64, context)
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.length = 0
        if left_pad is not None:
            left_pad = left_pad.to(device=self.device, dtype=torch.long)  # (B,)
            if left_pad.shape != (batch_size,):
                raise BadInput(f"left_pad must have shape ({batch_size},)")
            if not bool(left_pad.any()):
                left_pad = None  # no row is padded: skip the masks
        self.left_pad = left_pad

    # --- what encode asks -------------------------------------------------------

    def room(self) -> int:
        """How many more positions fit before the model's context is full."""
        return self.context - self.length

    def positions(self, T: int) -> torch.Tensor | None:
        """Model positions of the next T tokens per row, (B, T), or None when every row
        is unpadded (then they are simply length ... length + T - 1)."""
        if self.left_pad is None:
            return None
        p = torch.arange(self.length, self.length + T, device=self.device)  # (T,)
        return (p - self.left_pad[:, None]).clamp_min(0)  # (B, T); pads sit at 0

    def attention_mask(self, T: int) -> torch.Tensor | None:
        """Which keys each of the next T queries may see: a bool (B or 1, 1, T, L + T)
        mask, or None when SDPA needs none (one new token sees the whole cache; a first
        chunk is plain causal, which `is_causal` handles).

        A chunk after a non-empty cache needs a BOTTOM-RIGHT causal mask: query t (at
        cache position L + t) sees keys 0 .. L + t. SDPA's is_causal aligns top-left
        (query t would see keys 0 .. t) when there are fewer queries than keys.
        Worked example, L = 2 cached, T = 2 new:   keys 0 1 2 3
                                        query 0 (pos 2): 1 1 1 0
                                        query 1 (pos 3): 1 1 1 1
        """
        L = self.length
        if self.left_pad is None and (T == 1 or L == 0):
            return None
        q = torch.arange(L, L + T, device=self.device)[:, None]  # (T, 1) cache positions
        k = torch.arange(L + T, device=self.device)[None, :]  # (1, L + T)
        mask = k <= q  # (T, L + T), bottom-right causal
        if self.left_pad is None:
            return mask[None, None]  # (1, 1, T, L + T)
        real = k >= self.left_pad[:, None, None]  # (B, 1, L + T): not a pad key
        # A pad query would see no key at all (softmax of nothing is NaN, and NaN
        # values leak through zero weights later): let it see itself. Its output is
        # junk that no real query ever reads.
        return ((mask & real) | (k == q))[:, None]  # (B, 1, T, L + T)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write block `layer`'s new keys and values (B, H, T, D) after the cached ones;
        return the keys and values of every position so far, (B, H, L + T, D) views.
        `advance(T)` moves `length` on once every block has written."""
        end = self.length + k.size(2)
        if self.keys[layer] is None or end > self.keys[layer].size(2):
            self._grow(layer, end, k)
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]  # (B, H, L + T, D) each

    def advance(self, T: int) -> None:
        self.length += T

    def _grow(self, layer: int, needed: int, like: torch.Tensor) -> None:
        """(Re)allocate block `layer`'s buffers to hold `needed` positions (doubling)."""
        old = self.keys[layer]
        size = old.size(2) if old is not None else self.capacity
        while size < needed:
            size *= 2
        size = min(size, self.context)
        B, H, _, D = like.shape
        dtype = self.dtype or like.dtype
        keys = like.new_empty(B, H, size, D, dtype=dtype)  # (B, H, capacity, D)
        values = like.new_empty(B, H, size, D, dtype=dtype)
        if old is not None:
            keys[:, :, : self.length] = old[:, :, : self.length]
            values[:, :, : self.length] = self.values[layer][:, :, : self.length]
        self.keys[layer], self.values[layer] = keys, values
        self.capacity = size

    # --- what callers ask --------------------------------------------------------

    def select(self, index: torch.Tensor) -> KVCache:
        """A new cache whose row i is this cache's row index[i] (index: (N,) long)."""
        index = index.to(self.device)
        left_pad = self.left_pad.index_select(0, index) if self.left_pad is not None else None
        new = KVCache(
            len(self.keys), index.numel(), self.heads, self.head_size, self.context,
            self.device, self.capacity, left_pad, self.dtype,
        )
        new.length = L = self.length
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            if k is not None:
                # Same capacity, but only the filled positions are copied: beam search
                # reorders its cache every step, mostly while it is far from full.
                new.keys[i] = k.new_empty(index.numel(), *k.shape[1:])  # (N, H, capacity, D)
                new.values[i] = v.new_empty(index.numel(), *v.shape[1:])
                torch.index_select(k[:, :, :L], 0, index, out=new.keys[i][:, :, :L])
                torch.index_select(v[:, :, :L], 0, index, out=new.values[i][:, :, :L])
        return new

    def crop(self, n: int) -> None:
        """Forget every position from n on (the buffers stay; the next encode
        overwrites them). The autocomplete engine keeps the typed prefix's cache when
        the person deletes characters."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot crop a cache of {self.length} positions to {n}")
        self.length = n


class LSTMState:
    """Each LSTM layer's (h, c), shaped (1, B, H_layer) as nn.LSTM takes them.

    `length` counts the tokens read into this state (for the caller's bookkeeping; an
    LSTM has no position limit).
    """

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], length: int = 0):
        self.layers = layers
        self.length = length

    @classmethod
    def zeros(
        cls, sizes: list[int], batch_size: int, device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> LSTMState:
        """A zero state (what a stateless forward starts from) for layers of `sizes`."""
        return cls([
            (torch.zeros(1, batch_size, h, device=device, dtype=dtype),
             torch.zeros(1, batch_size, h, device=device, dtype=dtype))
            for h in sizes
        ])

    @property
    def batch_size(self) -> int:
        return self.layers[0][0].size(1)

    def detach(self) -> LSTMState:
        """Cut the autograd graph here (truncated BPTT), in place; returns self."""
        self.layers = [(h.detach(), c.detach()) for h, c in self.layers]
        return self

    def select(self, index: torch.Tensor) -> LSTMState:
        """A new state whose row i is this state's row index[i] (index: (N,) long)."""
        index = index.to(self.layers[0][0].device)
        return LSTMState(
            [(h.index_select(1, index), c.index_select(1, index)) for h, c in self.layers],
            self.length,
        )

    def clone(self) -> LSTMState:
        return LSTMState([(h.clone(), c.clone()) for h, c in self.layers], self.length)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors for a checkpoint ("0.h", "0.c", "1.h", ...), each (1, B, H)."""
        out = {}
        for i, (h, c) in enumerate(self.layers):
            out[f"{i}.h"], out[f"{i}.c"] = h, c
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take (h, c) from `tensors()` output, in place, on this state's device."""
        device = self.layers[0][0].device
        self.layers = [(tensors[f"{i}.h"].to(device), tensors[f"{i}.c"].to(device))
                       for i in range(len(self.layers))]

    @staticmethod
    def cat(states: list[LSTMState]) -> LSTMState:
        """Rows of several states, one after the other (their lengths may differ; the
        result's `length` is the largest)."""
        layers = [
            (torch.cat([s.layers[i][0] for s in states], dim=1),
             torch.cat([s.layers[i][1] for s in states], dim=1))
            for i in range(len(states[0].layers))
        ]
        return LSTMState(layers, max(s.length for s in states))


State = KVCache | LSTMState
