"""Choosing the next token from a batch of logits: penalties, filters, and random draws
that depend only on (seed, sample, step), never on the batch a row happens to be in.

Everything works on whole (B, V) tensors: no Python per row or per vocabulary item.

Reproducible draws. A seeded torch.Generator gives each row a different stream
depending on which rows were drawn before it, so a prompt would get different text in
batches of 1 and of 32. Instead each row has a 64-bit key (from the seed, the prompt's
place in the input and the sample number) and step t's uniform numbers for it are a
hash of (key, t, token id)
(splitmix64's mixer, computed in int64 tensors). The draw is then Gumbel-max: the
argmax of logits - log(-log(u)) is a sample from softmax(logits), one vectorised call
for the whole batch, and the same on every device.
"""

from __future__ import annotations

import math

import torch

from lmtool.text.specials import SPECIAL_IDS

# Special tokens a generator never writes: [EOS] (end of document) is the only one
# that occurs in the text a causal model is trained on.
SUPPRESSED = tuple(i for i in range(7) if i != SPECIAL_IDS.eos)

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: it copies the sign)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser: every output bit depends on every input bit. int64
    multiplication wraps modulo 2**64, as the algorithm needs."""
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def row_keys(seed: int, rows: list[tuple[int, int]], device) -> torch.Tensor:
    """One 64-bit key per row, (B,) int64, from the seed and each row's (prompt index,
    sample number)."""
    seed_key = _mix(torch.tensor([_signed(seed * 0x9E3779B97F4A7C15 + 1)], dtype=torch.long))
    prompt = _mix(torch.tensor([i for i, _ in rows], dtype=torch.long) * _GOLDEN + seed_key)
    return _mix(prompt + torch.tensor([j for _, j in rows], dtype=torch.long) * _MIX2).to(device)


def uniform(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniform numbers in (0, 1), (B, V) float32: a pure function of (key, step, id)."""
    row = _mix(keys + _signed((step + 1) * 0xD1B54A32D192ED03))  # (B,) this step's key
    ids = torch.arange(vocab, device=keys.device, dtype=torch.long) * _GOLDEN  # (V,)
    bits = _shr(_mix(row[:, None] + ids), 40)  # (B, V): the top 24 bits
    return (bits.float() + 0.5) * (1.0 / (1 << 24))  # never exactly 0 or 1


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float):
    """CTRL's penalty (Keskar et al. 2019) on tokens already in the text: positive logits
    divided by `penalty`, negative ones multiplied, so a seen token always loses."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)  # (B, V)
    return torch.where(seen, penalised, logits)


def filter_logits(
    logits: torch.Tensor,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """Set to -inf every token the filters rule out, (B, V) → (B, V). Each keeps at
    least the most likely token."""
    neg_inf = float("-inf")
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, neg_inf)
    if top_p is not None and top_p < 1:
        # Keep the smallest set of most likely tokens whose probability reaches top_p:
        # a token stays if the mass of the tokens before it (sorted) is below top_p.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # (B, V) mass ahead of each token
        drop_sorted = before >= top_p  # the first token has 0 ahead: always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, neg_inf)
    if min_p is not None and min_p > 0:
        # Min-p (Nguyen et al. 2024): keep tokens at least min_p times as likely as the
        # most likely one; compared in log space, no softmax needed.
        top = logits.max(dim=-1, keepdim=True).values  # (B, 1)
        logits = logits.masked_fill(logits < top + math.log(min_p), neg_inf)
    return logits


def gumbel_argmax(logits: torch.Tensor, keys: torch.Tensor, step: int) -> torch.Tensor:
    """A sample from softmax(logits) per row, (B, V) → (B,), reproducible by key."""
    u = uniform(keys, step, logits.size(-1))  # (B, V)
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)
