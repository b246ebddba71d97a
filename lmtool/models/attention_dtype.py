"""Under bf16 autocast on a CPU, does the fused attention run faster in bf16 or in fp32?

The matrix products around the attention run in bf16 under autocast; the attention
itself (F.scaled_dot_product_attention) can run in bf16 too, or in fp32 after upcasting
q, k and v (three copies). Which is faster depends on the CPU and, by a lot, on the shape.
`python benchmarks/attention.py --threads 1` on an AMD EPYC with AVX512-BF16 and no AMX
(torch 2.13; a busy machine, so roughly), fp32 time / bf16 time, forward and backward:

    heads x T x D      bf16 speed-up
    4 x 64 x 32        0.3-0.5x   (the tiny preset)
    4 x 128 x 32       0.1-0.2x
    6 x 256 x 64       1.03x      (nanoGPT's shakespeare config)
    12 x 512 x 64      1.1-1.4x

On the project's earlier AMX machine bf16 was 6x slower at the first shape, while
transformers, which runs the attention in bf16, won at the third (issue 18). No rule from
one CPU holds on another, so it is measured: the first time a shape is met, both ways
are timed on random tensors of that shape (forward, and backward for a training step;
best of `REPEATS`, taking turns), bf16 is chosen only if it wins by `MIN_SPEEDUP`, and the ratio
is cached per machine beside the bf16 speed-up (device.py's precision.json). Shapes are
rounded up to powers of two first, so a classifier's batches of many lengths cost a
handful of measurements, not one each; each takes ~0.1 s at the tiny preset's shape, ~1 s
at nanoGPT's.

A forward without a gradient (evaluation, classification under autocast) is measured
as such: there bf16 was 1.0-2.0x as fast on the same CPU (`benchmarks/attention.py
--forward`). Under torchrun or torch.compile nothing is measured (the ranks would
disagree, a compiled graph cannot time itself): a cached answer is used, else fp32.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

MIN_SPEEDUP = 1.1  # as device.BF16_MIN_SPEEDUP: a draw within noise stays fp32
REPEATS = 6
ROWS = 2  # the batch measured: the kernels loop over batch x heads, so the ratio holds
_known: dict[str, bool] = {}  # this process's answers, by shape key


def shape_key(q: torch.Tensor, k: torch.Tensor, causal: bool, masked: bool,
              training: bool) -> str:
    """"H x T x L x D", the lengths rounded up to powers of two, then "causal" or
    "masked", and "forward" when no backward follows: the key of a measurement (the
    batch size leaves the ratio alone: see ROWS)."""
    _, H, T, D = q.shape
    words = ["x".join(map(str, (H, _pow2(T), _pow2(k.size(2)), D)))]
    words += ["causal"] * causal + ["masked"] * masked + ["forward"] * (not training)
    return " ".join(words)


def bf16_attention_pays(q: torch.Tensor, k: torch.Tensor, causal: bool,
                        mask: torch.Tensor | None = None) -> bool:
    """True when the attention of this shape is faster in bf16 than in fp32 here, for a
    training step (q needs a gradient) or a forward alone."""
    training = q.requires_grad and torch.is_grad_enabled()
    key = shape_key(q, k, causal, mask is not None, training)
    if key in _known:
        return _known[key]
    from lmtool.device import recall_speedup, remember_speedup

    ratio = recall_speedup("attention", key)
    if ratio is None and not _cannot_measure():
        ratio = measure(key)
        remember_speedup("attention", key, ratio)
    _known[key] = ratio is not None and ratio >= MIN_SPEEDUP
    return _known[key]


def measure(key: str, clock: Callable[[], float] = time.perf_counter) -> float:
    """fp32 time / bf16 time of SDPA at the shape `key` names (forward, and backward
    unless the key says "forward"), on random tensors."""
    dims, *words = key.split()
    H, T, L, D = (int(n) for n in dims.split("x"))
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(ROWS, H, T, D, generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(ROWS, H, L, D, generator=gen, dtype=torch.bfloat16) for _ in range(2))
    mask = None
    if "masked" in words:  # a padding mask: the last key of the second row is a pad
        mask = torch.ones(ROWS, 1, 1, L, dtype=torch.bool)
        mask[-1, ..., -1] = False
    backward = "forward" not in words

    def step(in_bf16: bool) -> float:
        a, b, c = (t.detach().requires_grad_(backward) for t in (q, k, v))
        start = clock()
        with torch.autocast("cpu", enabled=False), torch.set_grad_enabled(backward):
            x, y, z = (a, b, c) if in_bf16 else (a.float(), b.float(), c.float())
            out = F.scaled_dot_product_attention(x, y, z, attn_mask=mask,
                                                 is_causal="causal" in words)
            if backward:
                out.to(torch.bfloat16).sum().backward()
        return clock() - start

    best = {False: math.inf, True: math.inf}
    for i in range(REPEATS + 1):
        for in_bf16 in best:
            t = step(in_bf16)
            if i:  # the first of each warms up the kernels
                best[in_bf16] = min(best[in_bf16], t)
    return best[False] / max(best[True], 1e-9)


def _cannot_measure() -> bool:
    under_torchrun = all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    return under_torchrun or torch.compiler.is_compiling()


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
