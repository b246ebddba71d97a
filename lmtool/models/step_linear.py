"""Linear layers of a decoding step, read in the layout this CPU reads fastest.

Decoding a few rows at a time, each linear layer is a matrix-vector product: the whole
weight matrix is read from memory for a handful of multiply-adds per weight, so the
speed is how fast the kernel streams memory, and that depends on the layout and the
CPU. `python benchmarks/step_linear.py` on this project's 2-core AMD EPYC (torch 2.13,
MKL; plain reads ~40 GB/s): SmolLM2-135M's (49152, 576) fp32 output layer through
F.linear at ~12 GB/s, the same product over a transposed copy (C, V) cut into one
column block per thread, run as one batched product, at ~37 GB/s (3.2x); the tiny
preset's (8000, 128) 2.9x; in bf16 about the same either way. No rule from one CPU holds
on the next, so each shape is timed both ways (one row, best of REPEATS, taking turns)
the first time a decoding step meets it, at one row and at MAX_ROWS rows, and a weight
gets its copy (one more weight's worth of memory) only when the copy was faster: for
rows of one, or for up to MAX_ROWS rows if it won there too (SmolLM2's fp32 layers did
not: 0.9x at 8 rows). More rows (a prompt read at once, wide batches) use F.linear.

A copy belongs to one version of its weight: changed in place (training, loading) or
converted (`model.to(torch.bfloat16)`), the weight is measured and copied again.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

REPEATS = 3
MIN_SPEEDUP = 1.1  # a draw within noise keeps F.linear
MAX_ROWS = 8  # measured faster up to 8 rows (benchmarks/step_linear.py)
Linear = Callable[[torch.Tensor], torch.Tensor]  # (..., C) → (..., V)
_speedups: dict[tuple, float] = {}  # (V, C, dtype, threads) → F.linear time / blocked time
# layer → (its weight's _stamp, the function chosen for it)
_chosen: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple, Linear]] = (
    weakref.WeakKeyDictionary())


def step_linear(layer: nn.Linear) -> Linear:
    """A function equal to `layer` (up to rounding) for inference, the faster one here
    for steps of a few rows."""
    weight = layer.weight
    stamp = _stamp(weight)
    known = _chosen.get(layer)
    if known is not None and known[0] == stamp:
        return known[1]
    chosen: Linear = _plain(layer)
    if weight.device.type != "cpu" or torch.is_grad_enabled():  # a GPU, or training
        return chosen
    threads = torch.get_num_threads()
    blocked = BlockedLinear(weight, layer.bias, threads)
    blocked.max_rows = 0
    for rows in (1, MAX_ROWS):  # the most rows the copy serves: 0, 1 or MAX_ROWS
        key = (*weight.shape, weight.dtype, threads, rows)
        if key not in _speedups:
            probe = torch.randn(rows, weight.size(1), dtype=weight.dtype)
            _speedups[key] = speedup(chosen, blocked.product, probe)
        if _speedups[key] < MIN_SPEEDUP:
            break
        blocked.max_rows = rows
    if blocked.max_rows:
        chosen = blocked
    _chosen[layer] = (stamp, chosen)
    return chosen


def _stamp(weight: torch.Tensor) -> tuple:
    """What the choice for a weight is valid for: the tensor, its in-place version, and
    its storage and dtype (`module.to(dtype)` swaps a parameter's data, version kept)."""
    return id(weight), weight._version, weight.data_ptr(), weight.dtype


def _plain(layer: nn.Linear) -> Linear:
    weight, bias = layer.weight, layer.bias
    return lambda x: F.linear(x, weight, bias)


class BlockedLinear:
    """x W^T + b through a transposed copy of W (V, C) cut into `blocks` column blocks,
    (blocks, C, width), one batched product: each thread streams a block of its own."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, blocks: int):
        weight = weight.detach()
        V, C = weight.shape
        self.blocks = max(1, blocks)
        width = -(-V // self.blocks)  # the last block is zero-padded to this width
        padded = weight.new_zeros(self.blocks * width, C)  # (V', C)
        padded[:V] = weight
        self.columns = padded.view(self.blocks, width, C).transpose(1, 2).contiguous()
        self.weight, self.vocab = weight, V
        self.bias = bias.detach() if bias is not None else None
        self.max_rows = MAX_ROWS  # more rows go through F.linear (step_linear lowers it)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead, C = x.shape[:-1], x.size(-1)
        rows = x.reshape(-1, C)  # (N, C)
        if rows.size(0) > self.max_rows:
            return F.linear(x, self.weight, self.bias)
        return self.product(rows).view(*lead, self.vocab)

    def product(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, C) → (N, V) through the blocks, whatever N."""
        out = torch.bmm(rows.expand(self.blocks, -1, -1), self.columns)  # (blocks, N, width)
        out = out.transpose(0, 1).reshape(rows.size(0), -1)  # (N, V'), a copy
        if out.size(1) != self.vocab:
            out = out[:, : self.vocab].contiguous()  # (N, V)
        return out + self.bias if self.bias is not None else out


def speedup(plain: Linear, other: Linear, x: torch.Tensor,
            clock: Callable[[], float] = time.perf_counter) -> float:
    """plain's time / other's time on `x`, best of REPEATS each, taking turns."""
    best = [float("inf"), float("inf")]
    with torch.inference_mode():
        for i in range(REPEATS + 1):
            for j, fn in enumerate((plain, other)):
                start = clock()
                fn(x)
                if i:  # the first call of each warms up
                    best[j] = min(best[j], clock() - start)
    return best[0] / max(best[1], 1e-9)


__all__ = ["BlockedLinear", "step_linear"]
