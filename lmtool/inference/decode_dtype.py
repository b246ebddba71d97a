"""fp32 or bf16 weights for decoding a large model on a CPU with native bf16: measured.

A model whose fp32 weights outgrow the last-level cache streams them from memory at
every token, so its decoding speed is how fast the kernels read memory. bf16 halves the
bytes, but this CPU's bf16 matrix-vector kernels read them more slowly than the fp32
ones read theirs once the fp32 layers take the layout they stream best
(models/step_linear.py), and by how much depends on the chip, the shapes and the rows
decoded together. Measured on this project's 2-core AMD EPYC (AVX512-BF16, no AMX),
tokens/s, bf16 weights against fp32: the small preset 0.7x at batch 1 and 0.8x at batch
8; SmolLM2-135M 0.9x at batch 1 and 1.7x at batch 8. So it is timed: the first time a
model of its kind and size is loaded here, a few decoding steps at 1 and 8 rows in each
dtype (a bf16 copy made for the purpose), and bf16 is kept if the geometric mean of the
two speed-ups is at least MIN_SPEEDUP. The ratio is cached per machine with the other
precision measurements ($LMTOOL_CACHE/precision.json), keyed by the model's shape.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

MIN_SPEEDUP = 1.1  # a draw within noise keeps fp32: exact, and fast enough
# Part of the cache key: raise it when the decoding kernels change (models/step_linear.py),
# so that a ratio measured with the old ones is measured again.
KERNELS = 2  # 2: oneDNN's packed weights
ROWS = (1, 8)
PROMPT, STEPS = 8, 4


def decode_key(model: nn.Module) -> str:
    """What the measurement depends on besides the machine: the model's kind and shape."""
    c = model.config
    dims = "x".join(str(getattr(c, name, "-")) for name in ("layers", "dim", "vocab_size"))
    params = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} {dims} {params} k{KERNELS}"


def bf16_decodes_faster(model: nn.Module) -> bool:
    """True when decoding `model` (a causal LM in fp32 on the CPU) measured faster with
    bf16 weights here (cached per machine and model shape)."""
    from lmtool.device import recall_speedup, remember_speedup

    key = decode_key(model)
    ratio = recall_speedup("decode", key)
    if ratio is None:
        ratio = measure(model)
        remember_speedup("decode", key, ratio)
    return ratio >= MIN_SPEEDUP


def measure(model: nn.Module, clock: Callable[[], float] = time.perf_counter) -> float:
    """fp32 time / bf16 time of decoding steps, the geometric mean over ROWS."""
    was_training = model.training
    model.eval()  # no dropout in what is timed
    half = copy.deepcopy(model).to(torch.bfloat16)
    logs = []
    for rows in ROWS:
        ids = torch.randint(7, model.config.vocab_size, (rows, PROMPT))  # no special ids
        best = {}
        for _ in range(2):  # taking turns, best of 2 (the first also warms up)
            for name, m in (("fp32", model), ("bf16", half)):
                best[name] = min(best.get(name, math.inf), _decode_time(m, ids, clock))
        logs.append(math.log(best["fp32"] / best["bf16"]))
    model.train(was_training)
    return math.exp(sum(logs) / len(logs))


@torch.inference_mode()
def _decode_time(model: nn.Module, ids: torch.Tensor, clock: Callable[[], float]) -> float:
    """Seconds for STEPS single-token steps after reading `ids`, logits included."""
    from lmtool.models.step_linear import step_linear

    head = step_linear(model.lm_head) if isinstance(model.lm_head, nn.Linear) else model.lm_head
    state = model.initial_state(ids.size(0), capacity=PROMPT + STEPS)
    hidden = model.encode(ids, state)  # (B, T, C)
    token = head(hidden[:, -1]).argmax(-1)  # (B,)
    start = clock()
    for _ in range(STEPS):
        token = head(model.encode(token[:, None], state)[:, -1]).argmax(-1)
    return clock() - start
