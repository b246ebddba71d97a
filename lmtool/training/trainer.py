"""The one training loop, for every objective and backbone.

Nothing here knows about GPT, BERT or LSTM: the objective turns windows into a batch and
a loss, the schedule gives the learning rate for a step, and callbacks do the logging,
progress display and checkpoint writing. Every source of randomness is a pure function
of (seed, step, rank), so a resumed run repeats the uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lmtool.checkpoint import TrainerState
from lmtool.errors import BadInput, Interrupted, RuntimeFailure
from lmtool.training import distributed
from lmtool.training.batches import WindowSampler, seed_for
from lmtool.training.config import DEFAULT_EPOCHS, TrainConfig
from lmtool.training.distributed import DistContext
from lmtool.training.objectives import Objective
from lmtool.training.optimizers import build_optimizer
from lmtool.training.schedules import Plan, lr_at

# Distinct streams derived from the seed, so e.g. masking never reuses dropout's numbers.
_DROPOUT, _MASKING = 1, 2


class Callback:
    """Events the loop fires (on rank 0 only). Override what you need."""

    def on_step(self, trainer: Trainer) -> None:
        """After every optimiser step (progress bars)."""

    def on_train_row(self, trainer: Trainer, row: dict) -> None:
        """Every --log-every steps: a metrics row (step, loss, lr, tokens_per_s, ...)."""

    def on_eval(self, trainer: Trainer, row: dict) -> None:
        """After each evaluation: step, val_loss, val_perplexity or val_accuracy."""

    def on_save(self, trainer: Trainer, state: TrainerState) -> None:
        """Write a checkpoint of `trainer.model` and `state`."""

    def on_end(self, trainer: Trainer, reason: str) -> None:
        """Training stopped normally; reason is "steps", "epochs" or "time"."""


@dataclass
class Limits:
    """When to stop and how to shape the learning rate, from the config and data size."""

    steps_per_epoch: int  # optimiser steps per pass over the training windows
    max_steps: int | None  # the earlier of --max-steps and --epochs, in steps
    max_time: float | None  # seconds

    @classmethod
    def from_config(cls, config: TrainConfig, sampler: WindowSampler) -> Limits:
        """The limits in steps; a limit is a total for the run, across resumptions."""
        spe = sampler.batches_per_epoch // config.grad_accum
        if spe == 0:
            raise BadInput(
                f"one optimiser step needs {config.grad_accum} batches (--grad-accum) but the "
                f"training data holds only {sampler.batches_per_epoch}",
                "lower --grad-accum, --batch-size or --context",
            )
        epochs = config.epochs
        if epochs is None and config.max_steps is None and config.max_time is None:
            epochs = DEFAULT_EPOCHS
        bounds = [b for b in (config.max_steps, epochs and math.ceil(epochs * spe)) if b]
        max_steps = min(bounds) if bounds else None
        return cls(spe, max_steps, config.max_time)

    def reached(self, step: int, elapsed: float) -> bool:
        return (self.max_steps is not None and step >= self.max_steps) or (
            self.max_time is not None and elapsed >= self.max_time)

    def describe(self) -> str:
        """The limits as flags, for messages: "--max-steps 450", "--max-time 30"."""
        parts = [f"{self.max_steps} steps"] if self.max_steps is not None else []
        if self.max_time is not None:
            parts.append(f"{self.max_time:g} s")
        return " / ".join(parts)

    def plan(self, config: TrainConfig) -> Plan:
        """The schedule's horizon for a run that starts with these limits."""
        warmup = config.warmup
        if warmup is None:
            warmup = min(100, self.max_steps // 10) if self.max_steps is not None else 100
        return Plan(self.max_steps, self.max_time, warmup)


@contextlib.contextmanager
def _sigint_flag(flag: list[bool]) -> Iterator[None]:
    """The first Ctrl-C only raises a flag, read at the next step boundary, so the state
    is never saved half-updated; a second Ctrl-C interrupts at once."""

    def handler(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Trainer:
    model: nn.Module  # the plain module: saved as is, never the DDP/compiled wrapper
    objective: Objective
    sampler: WindowSampler
    config: TrainConfig
    device: torch.device
    dtype: torch.dtype | None = None  # autocast dtype; None trains in fp32
    val_data: np.ndarray | None = None
    dist: DistContext = field(default_factory=DistContext)
    callbacks: list[Callback] = field(default_factory=list)
    state: TrainerState = field(default_factory=TrainerState)
    clock: Callable[[], float] = time.perf_counter  # seconds; tests give each rank its own

    def __post_init__(self) -> None:
        from lmtool.device import needs_grad_scaler

        c = self.config
        self.limits = Limits.from_config(c, self.sampler)
        saved_world = self.state.extra.get("world_size", self.dist.world_size)
        if self.state.step and saved_world != self.dist.world_size:
            # Each rank reads its own slice of every batch: another number of processes
            # would read other data in another order (and a larger or smaller batch).
            raise BadInput(
                f"this run was trained by {saved_world} process(es); resuming it with "
                f"{self.dist.world_size} would change its batches and data order",
                f"resume with {saved_world} process(es)"
                + (f" (torchrun --nproc_per_node {saved_world})" if saved_world > 1 else
                   " (without torchrun)"),
            )
        plan = self.state.extra.get("plan")
        # The horizon stays what it was when the run started (schedules.py)
        self.plan = Plan.from_dict(plan) if plan else self.limits.plan(c)
        self.context = self.model.config.context
        self.optimizer = build_optimizer(
            self.model, c.optimizer, lr=c.lr, weight_decay=c.weight_decay,
            betas=(c.beta1, c.beta2), device=self.device,
        )
        self.scaler = (
            torch.amp.GradScaler(self.device.type)
            if needs_grad_scaler(self.device, self.dtype) else None
        )
        if self.state.optimizer is not None:
            self.optimizer.load_state_dict(self.state.optimizer)
        if self.scaler is not None and "scaler" in self.state.extra:
            self.scaler.load_state_dict(self.state.extra["scaler"])
        self.last_saved_step: int | None = self.state.step if self.state.optimizer else None
        self.wrapped = distributed.wrap(self.model, self.dist, self.device)
        if c.compile:
            self.wrapped = torch.compile(self.wrapped)
        self._interrupted = [False]
        self._last_log = (self.state.step, self.clock())
        self.last_eval: dict | None = None

    # --- one step ------------------------------------------------------------------

    def lr(self, step: int, elapsed: float) -> float:
        """The rate for `step`, `elapsed` seconds into the run (the same on every rank)."""
        c, plan = self.config, self.plan
        return lr_at(step, base_lr=c.lr, warmup=plan.warmup, total=plan.end,
                     schedule=c.schedule, min_ratio=c.min_lr_ratio,
                     time_fraction=plan.time_fraction(elapsed))

    def _micro_batches(self, step: int):
        """(micro index, Batch) for optimiser step `step`: a pure function of the step."""
        spe, accum = self.limits.steps_per_epoch, self.config.grad_accum
        epoch = step // spe
        for micro in range(accum):
            windows = self.sampler.batch(epoch, (step % spe) * accum + micro)  # (B, W)
            gen = torch.Generator().manual_seed(
                seed_for(self.config.seed, step, micro, self.dist.rank, _MASKING)
            )
            yield micro, self.objective.make_batch(windows, gen).to(self.device)

    def _step(self, agreed: float, local: float) -> tuple[float, float, float, bool]:
        """One optimiser step. `agreed` is the training time before this step as all ranks
        agreed on it at the end of the previous one (the learning rate follows it, so the
        replicas never drift); `local` is this rank's clock now. Returns (loss, lr, the
        agreed time after the step, interrupted)."""
        from lmtool.device import autocast

        c, step = self.config, self.state.step
        lr = self.lr(step, agreed)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Dropout draws from the global generator, reseeded here: a pure function of
        # (seed, step, rank), so no RNG state needs saving for an exact resume.
        torch.manual_seed(seed_for(c.seed, step, self.dist.rank, _DROPOUT))
        self.optimizer.zero_grad()
        total = torch.zeros((), device=self.device)
        for micro, batch in self._micro_batches(step):
            last = micro == c.grad_accum - 1
            # DDP: all-reduce gradients only on the last micro-batch.
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else (
                self.wrapped.no_sync())
            with sync:
                with autocast(self.device, self.dtype):
                    loss, _ = self.objective.loss(self.wrapped, batch)
                scaled = loss / c.grad_accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach()
        loss_value = float(total) / c.grad_accum
        # One small all-reduce (summed, then averaged over ranks): the logged loss is the
        # mean over all ranks' data, and every rank takes the same decisions (stop on a
        # non-finite loss, on Ctrl-C in any rank, on the mean elapsed time).
        world = self.dist.world_size
        loss_sum, bad, elapsed, interrupted = distributed.all_sum(
            [loss_value, 0.0 if math.isfinite(loss_value) else 1.0, local,
             float(self._interrupted[0])],
            self.dist, self.device,
        )
        loss_value, elapsed = loss_sum / world, elapsed / world
        if bad:
            kept = (f"the last good checkpoint at step {self.last_saved_step} is kept"
                    if self.last_saved_step else "no checkpoint was saved")
            raise RuntimeFailure(
                f"loss became {loss_value} at step {step + 1}; {kept}",
                "try a lower --lr (or --precision fp32, or a smaller --grad-clip)",
            )
        if self.scaler is not None:
            self.optimizer.unscale_(self.scaler)
        if c.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step(self.scaler)
        if self.scaler is not None:
            self.scaler.update()
        return loss_value, lr, elapsed, bool(interrupted)

    # --- evaluation and saving -------------------------------------------------------

    def evaluate(self) -> dict | None:
        """The objective's metrics on the validation split (all ranks take part), scored
        as `lmtool evaluate` scores it: the same function, the same masks."""
        from lmtool.training.evaluate import score

        if self.val_data is None:
            return None
        self.model.eval()
        metrics = score(
            self.model, self.objective, self.val_data, context=self.context,
            batch_size=self.config.batch_size, max_batches=self.config.eval_batches,
            device=self.device, dtype=self.dtype, dist=self.dist,
        )
        self.model.train()
        if metrics is None:
            return None
        row = {"step": self.state.step, **{f"val_{k}": v for k, v in metrics.items()}}
        row["elapsed_s"] = round(self.state.elapsed_s, 3)
        self.last_eval = row
        return row

    def snapshot(self) -> TrainerState:
        s = self.state
        extra = {"world_size": self.dist.world_size, "plan": self.plan.to_dict()}
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        return TrainerState(s.step, s.epoch, s.tokens_seen, s.elapsed_s,
                            self.optimizer.state_dict(), {}, extra)

    def save(self) -> None:
        if self.dist.is_main:
            state = self.snapshot()
            for cb in self.callbacks:
                cb.on_save(self, state)
        self.last_saved_step = self.state.step

    def _fire(self, event: str, *args) -> None:
        if self.dist.is_main:
            for cb in self.callbacks:
                getattr(cb, event)(self, *args)

    # --- the loop ----------------------------------------------------------------------

    def fit(self) -> str:
        """Train until a limit is reached; returns why it stopped: "steps" or "time", or
        "done" when a resumed run had already reached its limits (nothing is written).

        Raises Interrupted after saving on Ctrl-C, RuntimeFailure on a non-finite loss.
        """
        c, s, lim = self.config, self.state, self.limits
        if self.last_saved_step is not None and lim.reached(s.step, s.elapsed_s):
            return "done"
        if self.last_saved_step is None:
            # A new run is saved before its first step, so RUN/metrics.jsonl is live from
            # the first logged row and a kill at any moment leaves a run to --resume.
            self.save()
        self.model.train()
        start, base_elapsed = self.clock(), s.elapsed_s
        agreed = base_elapsed  # the same on every rank: 0, or the checkpoint's
        tokens_per_step = (
            c.batch_size * self.context * c.grad_accum * self.dist.world_size
        )
        reason = "steps"
        with _sigint_flag(self._interrupted):
            while True:
                if lim.max_steps is not None and s.step >= lim.max_steps:
                    reason = "steps"
                    break
                local = base_elapsed + self.clock() - start
                loss, lr, agreed, interrupted = self._step(agreed, local)
                s.step += 1
                s.tokens_seen += tokens_per_step
                s.epoch = s.step / lim.steps_per_epoch
                s.elapsed_s = agreed
                self._fire("on_step")
                if s.step % c.log_every == 0:
                    self._fire("on_train_row", self._train_row(loss, lr))
                if c.eval_every and s.step % c.eval_every == 0:
                    row = self.evaluate()
                    if row:
                        self._fire("on_eval", row)
                if interrupted:
                    self.save()
                    raise Interrupted(
                        f"interrupted at step {s.step}; the checkpoint is saved",
                        "continue with --resume",
                    )
                if c.save_every and s.step % c.save_every == 0:
                    self.save()
                if lim.max_time is not None and agreed >= lim.max_time:
                    reason = "time"
                    break
        if not self.last_eval or self.last_eval["step"] != s.step:
            row = self.evaluate()
            if row:
                self._fire("on_eval", row)
        if self.last_saved_step != s.step:
            self.save()
        self._fire("on_end", reason)
        return reason

    def _train_row(self, loss: float, lr: float) -> dict:
        s = self.state
        last_step, last_time = self._last_log
        now = self.clock()
        steps = s.step - last_step
        tokens = steps * self.config.batch_size * self.context * self.config.grad_accum
        rate = tokens * self.dist.world_size / max(now - last_time, 1e-9)
        self._last_log = (s.step, now)
        return {
            "step": s.step,
            "loss": loss,
            "lr": lr,
            "tokens_per_s": round(rate, 1),
            "elapsed_s": round(s.elapsed_s, 3),
            "epoch": round(s.epoch, 4),
            "tokens": s.tokens_seen,
        }


def train(
    model: nn.Module,
    objective: Objective,
    sampler: WindowSampler,
    config: TrainConfig,
    device: torch.device,
    **kwargs,
) -> Trainer:
    """Build a Trainer and run it; returns the trainer (its .state, .last_eval)."""
    trainer = Trainer(model, objective, sampler, config, device, **kwargs)
    trainer.fit()
    return trainer
