"""Training configuration: one typed dataclass, saved in every run's config.json.

training/flags.py applies the flags (a preset's defaults, a JSON --config file, then
the command line) and reports every problem at once, naming the flag.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig, dataclass_from_dict
from lmtool.training.schedules import SCHEDULES
from lmtool.wording import plural

OPTIMIZERS = ("adamw", "muon")  # lmtool/training/optimizers.py
DEFAULT_EPOCHS = 1  # when --epochs is not given (--max-steps / --max-time only cut it short)


@dataclass
class TrainConfig:
    batch_size: int = 32  # sequences per optimiser micro-step, per process
    lr: float = 1e-3  # peak learning rate (after warmup)
    optimizer: str = "adamw"  # "adamw", or "muon": Muon on hidden matrices, AdamW elsewhere
    weight_decay: float = 0.1  # decoupled decay on weight matrices (not biases/norm gains)
    warmup: int | None = None  # warmup steps; None: 10% of the run's steps, at most 100
    schedule: str = "cosine"  # decay after warmup: cosine, linear or constant
    min_lr_ratio: float = 0.1  # cosine/linear decay ends at lr * min_lr_ratio
    beta1: float = 0.9  # AdamW betas
    beta2: float = 0.95
    grad_accum: int = 1  # micro-batches per optimiser step
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    # Stopping: the epochs are the plan (None: the task's default, DEFAULT_EPOCHS for a
    # language model); max_steps and max_time are caps that only cut it short.
    max_steps: int | None = None  # optimiser steps
    max_time: float | None = None  # seconds of training (evaluation and saving included)
    epochs: float | None = None  # passes over the training windows (fractions allowed)
    eval_every: int = 200  # steps between validation evaluations (0: only at the end)
    eval_batches: int = 20  # validation batches per evaluation (0: the whole split)
    save_every: int = 500  # steps between checkpoints (0: only at the end)
    log_every: int = 10  # steps between metrics.jsonl rows / log lines
    seed: int = 0  # seeds weights, data order, masking and dropout
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False  # torch.compile the model (saved unwrapped)
    # ULMFiT (training/freezing.py): each layer group trains at the rate of the one
    # above divided by this (1: one rate for all; `finetune` defaults to 2.6) ...
    discriminative: float = 1.0
    # ... and the top `unfreeze_start` groups train from the start (0: all), one more
    # every `unfreeze_every` epochs (0: never; ULMFiT's classifier: 1 and 1.0).
    unfreeze_start: int = 0
    unfreeze_every: float = 0.0
    # Read contiguous streams and carry the model's state between batches (stateful
    # BPTT, training/streams.py): None trains as the model prefers (the AWD-LSTM
    # statefully); False gives any model independent shuffled windows.
    stateful: bool | None = None
    # Tokens per language-model window, in training and held-out scoring (None: the
    # model's context). An imported checkpoint's context is what it can read (SmolLM2:
    # 8,192), not what fits a CPU's memory at a training batch: its run sets this.
    window: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return dataclass_from_dict(cls, data, "training")


# Training defaults that go with a model preset (over TrainConfig's, under --config and
# the flags). tiny: tuned for the most held-out quality in a minute of CPU time (char
# tinyshakespeare, 60 s, learned positions: AdamW lr 1e-3 batch 32 → val loss 2.39,
# lr 5e-3 batch 12 → 1.92; rotary positions and Muon → 1.75; README "Benchmarks").
# small: nanoGPT's shakespeare_char settings. base: GPT-2-like.
TRAIN_PRESETS: dict[str, dict[str, dict]] = {
    "transformer": {
        "tiny": dict(batch_size=12, lr=5e-3, optimizer="muon"),
        "small": dict(batch_size=64, lr=1e-3),
        "base": dict(batch_size=16, lr=6e-4),
    },
    "lstm": {
        "tiny": dict(batch_size=32, lr=3e-3),
        "small": dict(batch_size=32, lr=2e-3),
        "base": dict(batch_size=32, lr=1e-3),
    },
}

# `specials` is an imported tokenizer's, recorded by `lmtool import`: no flag sets it.
MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"arch", "objective", "vocab_size",
                                                        "specials"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
TOP_FIELDS = {"arch", "objective", "preset"}


def read_config_file(path: Path) -> dict:
    """A flat JSON object of the same fields as the flags (snake_case)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise BadInput(f"cannot read --config {path}: {e.strerror}") from None
    except ValueError as e:
        raise BadInput(f"--config {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadInput(f"--config {path} must hold a JSON object of fields")
    unknown = sorted(set(data) - MODEL_FIELDS - TRAIN_FIELDS - TOP_FIELDS)
    if unknown:
        raise BadInput(
            f"unknown {plural(len(unknown), 'field')} in --config {path}: {', '.join(unknown)}",
            f"known fields: {', '.join(sorted(MODEL_FIELDS | TRAIN_FIELDS | TOP_FIELDS))}",
        )
    return data


def validate_train_config(c: TrainConfig) -> None:
    problems = []
    for name in ("batch_size", "grad_accum"):
        if getattr(c, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if not c.lr > 0:
        problems.append("--lr must be positive")
    for name in ("weight_decay", "grad_clip", "eval_every", "eval_batches", "save_every"):
        if getattr(c, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must not be negative")
    if c.log_every < 1:
        problems.append("--log-every must be at least 1")
    if c.warmup is not None and c.warmup < 0:
        problems.append("--warmup must not be negative")
    if c.optimizer not in OPTIMIZERS:
        problems.append(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    if c.schedule not in SCHEDULES:
        problems.append(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if c.max_steps is not None and c.max_steps < 1:
        problems.append("--max-steps must be at least 1")
    if c.max_time is not None and not c.max_time > 0:
        problems.append("--max-time must be positive (seconds)")
    if c.epochs is not None and not c.epochs > 0:
        problems.append("--epochs must be positive")
    if not c.discriminative >= 1:
        problems.append("--discriminative must be at least 1 (1: one rate for every group)")
    if c.unfreeze_start < 0:
        problems.append("the unfreezing plan's start must not be negative")
    if c.window is not None and c.window < 2:
        problems.append("the training window must be at least 2 tokens")
    if c.unfreeze_every < 0:
        problems.append("--unfreeze-every must not be negative")
    if problems:
        raise BadInput("invalid training config: " + "; ".join(problems))
