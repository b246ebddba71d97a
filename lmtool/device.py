"""Device, precision and autocast choice, the same for every command.

`--device auto` picks CUDA, then Apple MPS, then the CPU. `--precision auto` picks the
fastest autocast dtype that trains as well as fp32 on that device:

- CUDA: bf16 when the GPU supports it (Ampere and newer), else fp32.
- CPU with native bf16 matrix units (AMX or AVX512-BF16 in /proc/cpuinfo): bf16.
- Other CPUs and MPS: fp32 (bf16 is emulated there and slower).

Why bf16 on AMX CPUs: measured with benchmarks/pretrain.py on this project's 2-core
AMX machine (torch 2.13, 2 threads, shared with other jobs, so only the ratios within
one run count), ms per training step of the lmtool transformer, plain AdamW:

  config (layers/heads/width, context, batch 12)     fp32    bf16   speed-up
  4/4/128, 64 (nanoGPT "baby"), random ids            59.5    45.4    1.31x
  4/4/128, 64, tinyshakespeare chars, 500 steps       53.9    43.0    1.25x
      validation loss after 500 steps               2.2733  2.2693   (same)
  6/6/384, 256 (nanoGPT shakespeare), causal        1488     846     1.76x
  6/6/384, 256, masked                              1732     847     2.04x
  6/6/384, 256, tinyshakespeare chars, 250 steps    1883    1068     1.76x
      validation loss after 250 steps               2.5410  2.5668   (80 steps:
                                                    2.9185 vs 3.0618: the gap closes)
  the same, rotary, `lmtool pretrain --max-steps 400`   1748     858     2.04x
      held-out loss (scored in fp32) after 400 steps 1.7785  1.7777   (same)
  AWD-LSTM 3 layers 128/384/128, BPTT 70, batch 32   346     184     1.88x
  AWD-LSTM 3 layers 256/768/256, BPTT 70, batch 32  1116     894     1.25x

Against Hugging Face GPT2LMHeadModel in fp32 at 6/6/384 the bf16 default is 2.5x as
fast (BertForMaskedLM: 2.4x).

bf16 only wins at the small config because the attention runs in fp32 under CPU
autocast (see models/transformer.py `attention`); with bf16 attention the baby config
was 1.3x slower than fp32. The master weights, the optimizer and the loss stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
import re
from contextlib import AbstractContextManager

import torch

from lmtool.errors import BadInput

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
        count = torch.cuda.device_count()
        if index >= count:
            raise BadInput(
                f"--device {name}: this machine has {count} CUDA GPU(s)",
                f"use an index from 0 to {count - 1}",
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


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices in hardware (Intel AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:  # not Linux: no way to tell cheaply, so stay with fp32
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--precision` on `device`, or None for plain fp32."""
    precision = (precision or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise BadInput(f"unknown --precision {precision!r}", "use auto, fp32, bf16 or fp16")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise BadInput(
                f"--precision fp16 needs a CUDA GPU (the device is {device.type})",
                "use --precision bf16 or fp32",
            )
        return torch.float16
    # bf16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadInput(
            "--precision bf16: this GPU does not support bf16", "use --precision fp16 or fp32"
        )
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Mixed precision for the forward pass; a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and does not."""
    return device.type == "cuda" and dtype == torch.float16
