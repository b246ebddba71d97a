"""Device, precision and autocast choice, the same for every command.

`--device auto` picks CUDA, then Apple MPS, then the CPU. `--precision auto` picks the
fastest autocast dtype that trains as well as fp32 on that device, and never one that
makes training slower:

- CUDA: bf16 when the GPU supports it (Ampere and newer), else fp32.
- CPU with Intel AMX (`amx_bf16` in /proc/cpuinfo): bf16; its tile unit multiplies bf16
  several times faster than fp32 (figures below).
- CPU with AVX512-BF16 but no AMX: it depends on the chip, so it is measured once (see
  `measure_bf16_speedup`, about a second) and the result is cached per CPU model, torch
  version and thread count in $LMTOOL_CACHE/precision.json; bf16 only if it wins by 10%.
- Other CPUs and MPS: fp32 (bf16 is emulated there and slower).

Why the flags alone cannot decide. On two AMD EPYC (Zen 4) machines, both AVX512-BF16
without AMX, 2 cores, torch 2.13, 1024x1024 matrix products measured fp32 385 GFLOP/s and
bf16 198 on one (issue 7), fp32 ~200 and bf16 ~440 on the other (this session, `python
benchmarks/pretrain.py`): bf16 made training 1.5x slower on the first and is faster on
the second.

Why bf16 on AMX CPUs: measured with benchmarks/pretrain.py on the project's earlier
2-core Intel Xeon (AMX) machine (torch 2.13, 2 threads), ms per training step of the
lmtool transformer, plain AdamW; not re-measured since (no AMX machine here):

  config (layers/heads/width, context, batch 12)     fp32    bf16   speed-up
  4/4/128, 64 (nanoGPT "baby"), random ids            59.5    45.4    1.31x
  4/4/128, 64, tinyshakespeare chars, 500 steps       53.9    43.0    1.25x
      validation loss after 500 steps               2.2733  2.2693   (same)
  6/6/384, 256 (nanoGPT shakespeare), causal        1488     846     1.76x
  6/6/384, 256, masked                              1732     847     2.04x
  the same, rotary, `lmtool pretrain --max-steps 400`   1748     858     2.04x
      held-out loss (scored in fp32) after 400 steps 1.7785  1.7777   (same)
  AWD-LSTM 3 layers 128/384/128, BPTT 70, batch 32   346     184     1.88x
  AWD-LSTM 3 layers 256/768/256, BPTT 70, batch 32  1116     894     1.25x

bf16 only wins at the small config because the attention runs in fp32 under CPU
autocast there; with bf16 attention the baby config was 1.3x slower than fp32. Whether
a shape's attention runs in bf16 or fp32 is measured, per shape, on each machine
(models/attention_dtype.py). The master weights, the optimizer and the loss stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from lmtool.errors import BadInput
from lmtool.wording import count

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" | "cpu" | "cuda" | "cuda:N" | "mps" → a torch.device that exists here."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise BadInput(
                f"--device {name} was asked for but no CUDA GPU is available",
                "use --device cpu (or auto), or install a CUDA build of PyTorch",
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        gpus = torch.cuda.device_count()
        if index >= gpus:
            raise BadInput(
                f"--device {name}: this machine has {count(gpus, 'CUDA GPU')}",
                f"use an index from 0 to {gpus - 1}",
            )
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise BadInput(
                "--device mps was asked for but Apple MPS is not available",
                "use --device cpu (or auto)",
            )
        return torch.device("mps")
    raise BadInput(f"unknown --device {name!r}", "use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


@dataclass(frozen=True)
class CpuFacts:
    """What /proc/cpuinfo says about bf16 on this CPU."""

    model: str  # "model name", e.g. "AMD EPYC 9R14"
    amx: bool  # Intel AMX tiles with bf16 (amx_bf16)
    avx512_bf16: bool  # AVX512 bf16 dot products (vdpbf16ps), without tiles


@functools.cache
def cpu_facts() -> CpuFacts:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return parse_cpuinfo(f.read())
    except OSError:  # not Linux: no way to tell cheaply, so bf16 is never assumed
        return CpuFacts(platform.processor() or platform.machine(), False, False)


def parse_cpuinfo(text: str) -> CpuFacts:
    """The model name and bf16 flags of the first processor listed in /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break  # the first processor's flags hold for all
    return CpuFacts(model, "amx_bf16" in flags, "avx512_bf16" in flags)


def describe_cpu(facts: CpuFacts | None = None) -> str:
    """The CPU and its bf16 hardware, which decide `--precision auto` on the CPU, e.g.
    "AMD EPYC 9R14: AVX512-BF16 (no AMX)"; `facts` defaults to this machine's."""
    facts = facts or cpu_facts()
    kind = ("AMX" if facts.amx else "AVX512-BF16 (no AMX)" if facts.avx512_bf16
            else "neither AMX nor AVX512-BF16")
    return f"{facts.model}: {kind}"


def choose_cpu_bf16(facts: CpuFacts, speedup: Callable[[], float | None]) -> tuple[bool, str]:
    """(train in bf16?, why) for a CPU; `speedup` measures (or recalls) bf16 against fp32,
    and is only called for a CPU where the flags cannot decide (None: not measured)."""
    if facts.amx:
        return True, "AMX"
    if not facts.avx512_bf16:
        return False, "no native bf16 on this CPU"
    ratio = speedup()
    if ratio is None:
        return False, "AVX512-BF16 without AMX, bf16 speed not measured"
    return ratio >= BF16_MIN_SPEEDUP, f"bf16 measured {ratio:.2f}x as fast as fp32 on this CPU"


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--precision` on `device`, or None for plain fp32."""
    return _resolve(precision, device)[0]


def describe_precision(precision: str, device: torch.device) -> str:
    """What `--precision` resolves to here and why, e.g. "bf16 (auto: AMX)"."""
    dtype, why = _resolve(precision, device)
    return f"{dtype_name(dtype)} ({why})"


def dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16",
            torch.float16: "fp16"}[dtype]


def checked_precision(precision: str, device: torch.device) -> str:
    """`--precision` in lower case, refused when unknown or when `device` cannot run it
    (fp16 off CUDA, bf16 on a GPU without it): "auto", "fp32", "bf16" or "fp16"."""
    precision = (precision or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise BadInput(f"unknown --precision {precision!r}", "use auto, fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise BadInput(
            f"--precision fp16 needs a CUDA GPU (the device is {device.type})",
            "use --precision bf16 or fp32",
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadInput(
            "--precision bf16: this GPU does not support bf16", "use --precision fp16 or fp32"
        )
    return precision


def _resolve(precision: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    precision = checked_precision(precision, device)
    if precision == "fp32":
        return None, "asked for"
    if precision == "auto":
        if device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                return torch.bfloat16, "auto: the GPU supports bf16"
            return None, "auto: the GPU has no bf16"
        if device.type == "cpu":
            bf16, why = choose_cpu_bf16(cpu_facts(), cached_bf16_speedup)
            return (torch.bfloat16 if bf16 else None), f"auto: {why}"
        return None, f"auto: fp32 on {device.type}"
    return (torch.float16 if precision == "fp16" else torch.bfloat16), "asked for"


# --- the one-off measurement for CPUs the flags cannot decide ----------------------------

BF16_MIN_SPEEDUP = 1.1  # bf16 must beat fp32 by 10%: a draw within noise stays fp32
CACHE_FILE = "precision.json"


def cache_path() -> Path:
    """$LMTOOL_CACHE/precision.json, else $XDG_CACHE_HOME/lmtool/..., else ~/.cache/lmtool/..."""
    if os.environ.get("LMTOOL_CACHE"):
        return Path(os.environ["LMTOOL_CACHE"]) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmtool" / CACHE_FILE


def machine_key() -> str:
    """What the measurement depends on: the CPU model, torch (its kernels), the threads."""
    return f"{cpu_facts().model} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, unreadable or damaged: measure again
        return {}
    return data if isinstance(data, dict) else {}


def remember_bf16_speedup(ratio: float) -> None:
    """Cache `ratio` for this machine. Best effort: an unwritable cache only means the
    next run measures again."""
    _remember(lambda entry: entry.update(bf16_speedup=round(ratio, 3)))


def recall_speedup(table: str, key: str) -> float | None:
    """A bf16/fp32 speed ratio cached for this machine in `table` ("attention": by
    shape, models/attention_dtype.py; "decode": by model, inference/decode_dtype.py)."""
    entry = _read_cache().get(machine_key())
    known = entry.get(table) if isinstance(entry, dict) else None
    ratio = known.get(key) if isinstance(known, dict) else None
    return float(ratio) if isinstance(ratio, (int, float)) else None


def remember_speedup(table: str, key: str, ratio: float) -> None:
    def change(entry: dict) -> None:
        if not isinstance(entry.get(table), dict):
            entry[table] = {}
        entry[table][key] = round(ratio, 3)

    _remember(change)


def _remember(change: Callable[[dict], None]) -> None:
    """Apply `change` to this machine's cache entry and write the cache (best effort)."""
    from lmtool.fsio import write_text_atomic

    data = _read_cache()
    entry = data.get(machine_key())
    entry = entry if isinstance(entry, dict) else {}
    change(entry)
    data[machine_key()] = entry
    with contextlib.suppress(OSError):
        write_text_atomic(cache_path(), json.dumps(data, indent=1, sort_keys=True) + "\n")


def cached_bf16_speedup() -> float | None:
    """This machine's measured bf16/fp32 speed ratio, measured now if it is not cached.

    Under torchrun nothing is measured (the ranks would measure at once, disturb each
    other and might disagree): a cached figure is used, else fp32.
    """
    entry = _read_cache().get(machine_key())
    if isinstance(entry, dict) and isinstance(entry.get("bf16_speedup"), (int, float)):
        return float(entry["bf16_speedup"])
    if all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    ratio = measure_bf16_speedup()
    remember_bf16_speedup(ratio)
    return ratio


def measure_bf16_speedup(
    tokens: int = 768, width: int = 128, repeats: int = 15,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """fp32 time / bf16-autocast time of one training step (forward and backward) of a
    transformer block shaped like the tiny preset's (768 tokens, width 128), in the way
    lmtool's models run it (attention in fp32 on the CPU).

    The smallest model is where bf16 gains least (the casts cost most against the
    matmuls), so a CPU that wins here wins on larger models too. Steps alternate between
    the two precisions and each takes its best time, so a busy neighbour hurts both.
    Takes about a second. `clock` (seconds) is there for the tests.
    """
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    heads = 4
    qkv, proj = nn.Linear(width, 3 * width, bias=False), nn.Linear(width, width, bias=False)
    fc, out = nn.Linear(width, 4 * width, bias=False), nn.Linear(4 * width, width, bias=False)
    ln1, ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
    x = torch.randn(tokens // 64, 64, width, generator=gen)  # (B, T, C)

    def step(dtype: torch.dtype | None) -> float:
        start = clock()
        with autocast(torch.device("cpu"), dtype):
            B, T, C = x.shape
            q, k, v = qkv(ln1(x)).float().view(B, T, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            with torch.autocast("cpu", enabled=False):
                a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = x + proj(a.transpose(1, 2).reshape(B, T, C))  # (B, T, C)
            y = h + out(torch.nn.functional.gelu(fc(ln2(h))))  # (B, T, C)
        y.float().square().mean().backward()
        return clock() - start

    best = {None: math.inf, torch.bfloat16: math.inf}
    for i in range(repeats + 2):
        for dtype in best:
            t = step(dtype)
            if i >= 2:  # the first steps warm up the kernels and the allocator
                best[dtype] = min(best[dtype], t)
    return best[None] / best[torch.bfloat16]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Mixed precision for the forward pass; a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and does not."""
    return device.type == "cuda" and dtype == torch.float16
