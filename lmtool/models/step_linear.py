"""Linear layers of a decoding step, read in the layout this CPU reads fastest.

Decoding a few rows at a time, each linear layer is a matrix-vector product: the whole
weight matrix is read from memory for a handful of multiply-adds per weight, so the
speed is how fast the kernel streams memory, and that depends on the layout, the dtype
and the CPU. Two copies of a weight can beat F.linear:
- BlockedLinear, a transposed copy cut into one column block per thread, run as one
  batched product. On this project's 2-core AMD EPYC (torch 2.13, MKL; plain reads
  ~40 GB/s) SmolLM2-135M's (49152, 576) fp32 output layer streams at ~12 GB/s through
  F.linear and ~37 GB/s this way (3.2x); the tiny preset's (8000, 128) 2.9x.
- PackedLinear, oneDNN's own prepacked layout of the weight (what torch.compile's
  frozen CPU graphs use). On a 2-core Xeon with AMX, 30 of SmolLM2's (3072, 576) bf16
  matrices (out of the cache) read at 1 and 8 rows: 1.5x F.linear; in fp32 at 8 rows
  1.6x, at 1 row no faster (benchmarks/step_linear.py).
No rule from one CPU holds on the next, so each shape is timed every way (best of
REPEATS, taking turns) the first time a decoding step meets it, at 1, 2 and MAX_ROWS
rows. A layer gets at most one copy (one more weight's worth of memory): the kind that
gained most, used for the row counts where it measured faster (one row; two to MAX_ROWS
rows when it won at both 2 and MAX_ROWS: on the AMX Xeon the blocked fp32 copy of
SmolLM2's output layer is 1.6x F.linear at 1 row, 0.4x at 2, 1.5x at 8). More rows (a
prompt read at once, wide batches) use F.linear.

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
MAX_ROWS = 8  # the most rows a copy serves (benchmarks/step_linear.py)
Linear = Callable[[torch.Tensor], torch.Tensor]  # (..., C) → (..., V)
# (copy kind, V, C, dtype, threads) → F.linear time / the copy's at 1, 2, MAX_ROWS rows
_speedups: dict[tuple, tuple[float, float, float] | None] = {}
# layer → (its weight's _stamp, the function chosen for it)
_chosen: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple, Linear]] = (
    weakref.WeakKeyDictionary())


def step_linear(layer: nn.Linear) -> Linear:
    """A function equal to `layer` (up to rounding) for inference, the faster one here
    for steps of a few rows."""
    weight = layer.weight
    if (weight.device.type != "cpu" or torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")
            or weight.is_inference()):
        # A GPU, training, autocast (which the copies would skip), or a weight made under
        # inference_mode (no version counter to see it change by).
        return _plain(layer)
    stamp = _stamp(weight)
    known = _chosen.get(layer)
    if known is not None and known[0] == stamp:
        return known[1]
    chosen: Linear = _plain(layer)
    best_gain, best = 1.0, None
    for kind in COPY_KINDS:
        ratios = _measured(kind, layer)
        if ratios is None:  # this kind cannot serve this weight here
            continue
        one, two, most = ratios
        few = min(two, most)  # a copy can win at 8 rows and lose at 2 (fp32, blocked)
        gain = max(one, 1.0) * max(few, 1.0)  # what it would save at both row counts
        if max(one, few) >= MIN_SPEEDUP and gain > best_gain:
            best_gain, best = gain, (kind, one >= MIN_SPEEDUP, few >= MIN_SPEEDUP)
    if best is not None:  # only the winner's copy is made (the others' were timed once)
        kind, one, few = best
        chosen = RowsSplit(_plain(layer), kind.of(layer), one, few)
    _chosen[layer] = (stamp, chosen)
    return chosen


def _measured(kind: type, layer: nn.Linear) -> tuple[float, float, float] | None:
    """F.linear's time / a copy's at 1, 2 and MAX_ROWS rows, measured the first time a
    shape and dtype is met (on a copy made for it); None when `kind` cannot serve it."""
    weight = layer.weight
    key = (kind.__name__, *weight.shape, weight.dtype, torch.get_num_threads())
    if key not in _speedups:
        copy = kind.of(layer)
        _speedups[key] = None if copy is None else tuple(
            speedup(_plain(layer), copy, torch.randn(rows, weight.size(1), dtype=weight.dtype))
            for rows in (1, 2, MAX_ROWS))
    return _speedups[key]


def _stamp(weight: torch.Tensor) -> tuple:
    """What the choice for a weight is valid for: the tensor, its in-place version, and
    its storage and dtype (`module.to(dtype)` swaps a parameter's data, version kept)."""
    return id(weight), weight._version, weight.data_ptr(), weight.dtype


def _plain(layer: nn.Linear) -> Linear:
    weight, bias = layer.weight, layer.bias
    return lambda x: F.linear(x, weight, bias)


class RowsSplit:
    """The copy for the row counts it was measured faster at (`one`: a single row;
    `few`: 2 to MAX_ROWS rows), F.linear for the rest."""

    def __init__(self, plain: Linear, copy: Linear, one: bool, few: bool):
        self.plain, self.copy, self.one, self.few = plain, copy, one, few

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.size(-1)
        if self.one if rows == 1 else (self.few and rows <= MAX_ROWS):
            return self.copy(x)
        return self.plain(x)


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
        self.vocab = V
        self.bias = bias.detach() if bias is not None else None

    @classmethod
    def of(cls, layer: nn.Linear) -> BlockedLinear:
        return cls(layer.weight, layer.bias, torch.get_num_threads())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead, C = x.shape[:-1], x.size(-1)
        rows = x.reshape(-1, C)  # (N, C)
        out = torch.bmm(rows.expand(self.blocks, -1, -1), self.columns)  # (blocks, N, width)
        out = out.transpose(0, 1).reshape(rows.size(0), -1)  # (N, V'), a copy
        if out.size(1) != self.vocab:
            out = out[:, : self.vocab].contiguous()  # (N, V)
        out = out + self.bias if self.bias is not None else out
        return out.view(*lead, self.vocab)


class PackedLinear:
    """x W^T + b through oneDNN's prepacked copy of W (an opaque mkldnn tensor), fp32
    or bf16 weights on a CPU whose oneDNN supports them."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        self.bias = bias.detach() if bias is not None else None

    @classmethod
    def of(cls, layer: nn.Linear) -> PackedLinear | None:
        dtype = layer.weight.dtype
        if not torch.backends.mkldnn.is_available() or dtype not in (torch.float32,
                                                                     torch.bfloat16):
            return None
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None
        try:
            return cls(layer.weight, layer.bias)
        except (RuntimeError, AttributeError):  # a private op: absent from some builds
            return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


COPY_KINDS = (BlockedLinear, PackedLinear)


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


__all__ = ["BlockedLinear", "PackedLinear", "step_linear"]
