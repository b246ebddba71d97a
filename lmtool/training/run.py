"""The run directory's plumbing, which the run builder (training/builder.py) uses for
every kind of run: the metrics log, the checkpoint writer, resuming, running the trainer
so that a failure leaves nothing half-made behind, and the result.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lmtool.checkpoint import METRICS, TrainerState, save_checkpoint
from lmtool.errors import RuntimeFailure
from lmtool.fsio import atomic_file
from lmtool.training.trainer import Callback, Trainer

if TYPE_CHECKING:
    import torch

    from lmtool.training.distributed import DistContext


@dataclass
class RunResult:
    run_dir: Path
    step: int  # optimiser steps done in total
    tokens_seen: int
    elapsed_s: float
    stop_reason: str  # "steps" or "time"; "done": a resumed run had nothing left to do
    num_parameters: int
    last_loss: float | None  # the last logged training loss
    last_eval: dict | None  # the last evaluation row (val_loss, ...)
    resumed_from: int | None  # the step a --resume started from
    sample: str | None  # a short text sampled from a causal model
    is_main: bool = True  # False on the other ranks under torchrun: they report nothing
    limits: str = ""  # the limits the run trained to, e.g. "450 steps / 30 s"
    precision: str = ""  # what --precision resolved to and why, e.g. "bf16 (auto: AMX)"


class MetricsLog(Callback):
    """Keeps every metrics row; appends each to RUN/metrics.jsonl once RUN is this run's.

    A new run is checkpointed before its first step, so rows are live from the first
    one; rows that come before that (e.g. finetune's "before" evaluation) wait in memory
    and go into that first checkpoint.
    """

    def __init__(self, run_dir: Path, rows: list[dict], live: bool):
        self.path = run_dir / METRICS
        self.rows = rows
        self.live = live
        self.last_loss: float | None = None

    def _append(self, row: dict) -> None:
        self.rows.append(row)
        if self.live:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def on_train_row(self, trainer, row):
        self.last_loss = row["loss"]
        self._append(row)

    def on_eval(self, trainer, row):
        self._append(row)


class Checkpointer(Callback):
    def __init__(self, run_dir: Path, config: dict, tokenizer_json: str, metrics: MetricsLog):
        self.run_dir, self.config, self.tokenizer_json = run_dir, config, tokenizer_json
        self.metrics = metrics

    def on_save(self, trainer, state: TrainerState):
        save_checkpoint(
            self.run_dir,
            model=trainer.model,
            config=self.config,
            tokenizer_json=self.tokenizer_json,
            metrics=self.metrics.rows,
            trainer=state,
        )
        self.metrics.live = True


def load_for_resume(run_dir: Path, device: torch.device, ctx: DistContext,
                    task: str | None = "lm"):
    """(model, trainer state, metrics rows) of the run to continue, a run of `task`.
    Rows logged after the checkpoint (before a crash) are forgotten, on disk too."""
    from lmtool.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir, device, trainer=True, task=task)
    state = ckpt.trainer
    assert state is not None
    rows = [r for r in ckpt.metrics if r.get("step", 0) <= state.step]
    if ctx.is_main:
        write_metrics_atomic(run_dir, rows)
    return ckpt.model, state, rows


def write_metrics_atomic(run_dir: Path, rows: list[dict]) -> None:
    """Replace RUN/metrics.jsonl with `rows`, atomically."""
    with atomic_file(run_dir / METRICS, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


def fit(trainer: Trainer, run_dir: Path, *, fresh: bool) -> str:
    """trainer.fit(); a new run that fails before its first real checkpoint leaves no
    run directory (it held only the untrained step-0 checkpoint)."""
    try:
        return trainer.fit()
    except RuntimeFailure:
        if fresh and trainer.dist.is_main and not trainer.last_saved_step:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def result(trainer: Trainer, run_dir: Path, reason: str, metrics: MetricsLog,
           resumed_from: int | None) -> RunResult:
    """The common result; a task adds its own (a sample, held-out figures) in finish."""
    from lmtool.device import describe_precision

    return RunResult(
        run_dir=run_dir,
        step=trainer.state.step,
        tokens_seen=trainer.state.tokens_seen,
        elapsed_s=trainer.state.elapsed_s,
        stop_reason=reason,
        num_parameters=sum(p.numel() for p in trainer.model.parameters()),
        last_loss=metrics.last_loss,
        last_eval=trainer.last_eval or next(
            (r for r in reversed(metrics.rows) if "val_loss" in r), None),
        resumed_from=resumed_from,
        sample=None,
        is_main=trainer.dist.is_main,
        limits=trainer.limits.describe(),
        precision=describe_precision(trainer.config.precision, trainer.device),
    )


def stored_path(source: str | Path) -> str:
    """How config.json records a data path: absolute, so the run says where its data was
    wherever it is read from; "-" (stdin) as it is."""
    return str(source) if str(source) == "-" else str(Path(source).absolute())
