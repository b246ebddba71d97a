"""A run loaded for inference: model, tokenizer, device and the precision to run in.

    lm = load_lm("runs/lm")                 # causal runs; objective="masked" for fill-mask
    lm.model, lm.tokenizer, lm.device, lm.dtype

Precision. `--precision auto` for inference converts the weights themselves (not
autocast: under autocast every matmul casts its weight on every call, which made batch-1
decoding of the tiny preset 1.7x slower than fp32 here, where bf16 weights were only
1.2x slower). The choice, by device:

- CUDA: bf16 when the GPU supports it, else fp32.
- CPU: fp32 while the fp32 weights fit in the last-level cache, or when the CPU has no
  native bf16 (AVX512-BF16 or AMX). Decoding one token reads every weight once; while
  they fit in the cache the work is a few hundred small calls and bf16's per-call
  overhead loses (a 128x384 matrix-vector product: 5 us in fp32, 18 us in bf16 on this
  project's 2-core EPYC without AMX). Larger models stream their weights from memory,
  where half the bytes is not half the time on every CPU: a causal model is measured
  once per machine (inference/decode_dtype.py) and bf16 kept only if it decoded faster;
  a sequence-to-sequence model takes bf16.
- MPS and others: fp32.
Generation with the same seed gives the same text for the same precision; fp32 and
bf16 may differ (different rounding, sometimes a different token).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtool.errors import BadInput

DEFAULT_CACHE_BYTES = 32 << 20  # when /sys does not say how big the last-level cache is


@dataclass
class LoadedLM:
    model: Any  # a LanguageModel in eval mode
    tokenizer: Any  # tokenizers.Tokenizer
    device: Any  # torch.device
    dtype: Any  # torch.dtype of the weights
    path: Path | None = None

    @property
    def config(self):
        return self.model.config

    @property
    def specials(self):
        """The run's special ids: lmtool's 0..6, or an imported tokenizer's own."""
        from lmtool.text.specials import special_ids

        return special_ids(self.model.config)


@functools.cache
def last_level_cache_bytes() -> int:
    """The largest CPU cache (Linux sysfs), or DEFAULT_CACHE_BYTES when unknown."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        if text and text[-1] in units and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return max(sizes, default=DEFAULT_CACHE_BYTES)


def inference_dtype(precision: str, device, model):
    """The weights' dtype for `--precision` on `device` (see the module docstring)."""
    import torch

    from lmtool.device import checked_precision, cpu_facts

    precision = checked_precision(precision, device)
    if precision != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    facts = cpu_facts() if device.type == "cpu" else None
    if facts is not None and (facts.amx or facts.avx512_bf16):
        fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
        if fp32_bytes > last_level_cache_bytes():
            if getattr(model, "encoder_decoder", False):
                return torch.bfloat16  # not measured: decoding reads the source too
            from lmtool.inference.decode_dtype import bf16_decodes_faster

            return torch.bfloat16 if bf16_decodes_faster(model) else torch.float32
    return torch.float32


def load_lm(
    run: str | Path | LoadedLM,
    *,
    device: str = "auto",
    precision: str = "auto",
    objective: str = "causal",
) -> LoadedLM:
    """Load a run for inference, refusing one whose objective does not fit the task."""
    if isinstance(run, LoadedLM):
        _check_objective(run.config, objective, run.path)
        return run
    from lmtool.checkpoint import load_checkpoint, read_run_config
    from lmtool.device import resolve_device

    config = read_run_config(Path(run))
    task = config.get("task", "lm")
    if task == "seq2seq":
        from lmtool.checkpoint import check_task

        check_task(Path(run), config, "lm")  # says what a seq2seq run is for
    if task != "lm":
        raise BadInput(f"{run} is a {task} run, not a language model",
                       "use lmtool classify for a classifier")
    from lmtool.models import ModelConfig

    _check_objective(ModelConfig.from_dict(config["model"]), objective, run)
    dev = resolve_device(device)
    ckpt = load_checkpoint(Path(run), dev)
    dtype = inference_dtype(precision, dev, ckpt.model)
    model = ckpt.model.to(dtype=dtype).eval()
    model.requires_grad_(False)
    return LoadedLM(model, ckpt.tokenizer, dev, dtype, Path(run))


def _check_objective(model_config, objective: str, run) -> None:
    if model_config.objective == objective:
        return
    if objective == "causal":
        raise BadInput(
            f"{run} is a masked (bidirectional) model: it cannot write text left to right",
            "use lmtool fill-mask with it, or a causal run for generate and complete",
        )
    raise BadInput(
        f"{run} is a causal model: fill-mask needs a masked one",
        "use lmtool generate or lmtool complete with it, or pretrain --objective masked",
    )
