"""The one training loop, for every task, objective and backbone.

Nothing here knows about GPT, BERT, LSTM or classifiers. It receives an optimiser (built
by the caller, its parameter groups tagged with a layer group and a rate multiplier), a
batch source (training/data.py), an objective that turns raw batches into a loss and
reports its own metrics, and callbacks for logging, progress and checkpoints. The
schedule gives the rate for a step, the unfreezing plan which layer groups train (or a
stage plan, training/freezing.py, gives both, stage by stage): pure functions of the
step, as is every random draw (of (seed, step, rank)), so a resumed run repeats the
uninterrupted one exactly on CPU. A stateful source has the model's state carried from
batch to batch, and saved with the checkpoint.
The run's length is its epochs; --max-steps and --max-time only cut it short, and
under --max-time the schedule's horizon is fitted once, from the measured step time, to
the steps the time buys (then saved: a step-bounded run never depends on the clock).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from lmtool import wording
from lmtool.checkpoint import TrainerState
from lmtool.errors import BadInput, Interrupted, RuntimeFailure
from lmtool.training import distributed
from lmtool.training.config import DEFAULT_EPOCHS, TrainConfig
from lmtool.training.distributed import DistContext
from lmtool.training.freezing import StagePlan, UnfreezePlan
from lmtool.training.objectives import Objective
from lmtool.training.optimizers import Optimizers
from lmtool.training.protocol import BatchSource, EvalSource
from lmtool.training.schedules import Plan, lr_at
from lmtool.training.seeds import seed_for

# Distinct streams derived from the seed, so e.g. masking never reuses dropout's numbers.
_DROPOUT, _MASKING = 1, 2
# A run under --max-time fits its schedule to the steps the time buys, at the step time
# measured over at least this many steps after the session's first (which carries
# one-off costs: allocation, lazy initialisation, caches) and this fraction of the time
# (fast steps vary: more of them give a steadier figure; still well before a slanted
# triangle's peak, at 10%). Until then it follows the step limit's plan.
PROBE_STEPS, PROBE_FRACTION = 2, 0.02
# The horizon is planned for this share of the time left: steps slow down on a busy
# machine and evaluations and saves take their share, and a triangle cut off by the
# clock ends high (a limit is a cap: ending a little early is within it).
TIME_SHARE = 0.9


class Callback:
    """Events the loop fires (on rank 0 only). Override what you need."""

    def on_start(self, trainer: Trainer) -> None:
        """Before the first step of this process's training (the plan, for the log)."""

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
    """When to stop, from the config and data size. The plan is --epochs (the task's
    default when not given); --max-steps and --max-time only cut it short, never
    lengthen it: a longer run is asked for with --epochs."""

    steps_per_epoch: int  # optimiser steps per pass over the training data
    max_steps: int  # the earlier of --max-steps and the epochs, in steps
    max_time: float | None  # seconds
    # The step limit is what --max-time buys (the fitted horizon, Trainer._fit_horizon):
    # reaching it is stopping for time.
    by_time: bool = False

    @classmethod
    def from_config(cls, config: TrainConfig, source: BatchSource) -> Limits:
        """The limits in steps; a limit is a total for the run, across resumptions."""
        spe = source.batches_per_epoch // config.grad_accum
        if spe == 0:
            raise BadInput(
                f"one optimiser step needs {config.grad_accum} batches (--grad-accum) but the "
                f"training data holds only {source.batches_per_epoch}",
                "lower --grad-accum, --batch-size or --context",
            )
        epochs = DEFAULT_EPOCHS if config.epochs is None else config.epochs
        planned = max(1, math.ceil(epochs * spe))
        max_steps = planned if config.max_steps is None else min(config.max_steps, planned)
        return cls(spe, max_steps, config.max_time)

    def reached(self, step: int, elapsed: float) -> bool:
        return step >= self.max_steps or (self.max_time is not None and elapsed >= self.max_time)

    def describe(self) -> str:
        """The limits as flags, for messages: "--max-steps 450", "--max-time 30"."""
        parts = [wording.count(self.max_steps, "step")]
        if self.max_time is not None:
            parts.append(f"{self.max_time:g} s")
        return " / ".join(parts)

    def plan(self, config: TrainConfig, end: int | None = None) -> Plan:
        """The schedule's horizon: `end` steps (default: the step limit). A time limit
        does not shape it: the trainer fits `end` to the steps the time buys."""
        end = self.max_steps if end is None else end
        warmup = config.warmup
        if warmup is None:
            warmup = min(100, end // 10)
        return Plan(end, None, warmup)


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the generators that dropout draws from: the CPU's and this device's.
    (torch.manual_seed seeds every backend torch knows: 0.13 ms, 0.3-1.3% of a tiny step.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)  # the current GPU's generator: this process's device
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


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
    source: BatchSource
    config: TrainConfig
    device: torch.device
    optimizer: Optimizers  # its groups tagged "layer_group" and "lr_mult" (optimizers.py)
    dtype: torch.dtype | None = None  # autocast dtype; None trains in fp32
    eval_source: EvalSource | None = None
    dist: DistContext = field(default_factory=DistContext)
    callbacks: list[Callback] = field(default_factory=list)
    state: TrainerState = field(default_factory=TrainerState)
    clock: Callable[[], float] = time.perf_counter  # seconds; tests give each rank its own
    eval_at_start: bool = False  # a new run is evaluated before its first step (finetune)
    stages: StagePlan | None = None  # the rates and unfreezing, stage by stage (classifier)

    def __post_init__(self) -> None:
        from lmtool.device import needs_grad_scaler

        c = self.config
        self.limits = Limits.from_config(c, self.source)
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
        # The horizon stays what it was when the run started (schedules.py), fitted to
        # the time limit or still to be fitted (a run stopped while timing its steps).
        self.plan = Plan.from_dict(plan) if plan else self.limits.plan(c)
        self.fitting = self.stages is None and c.max_time is not None and (
            self.state.extra.get("fitting", False) if plan else True)
        if self.state.extra.get("fitted") and self.state.extra.get("fitted_to") == c.max_time:
            self._stop_at_horizon()  # the same time limit: it still buys those steps
        self._probe: tuple[int, float] | None = None  # (step, elapsed) the timing starts at
        every = round(c.unfreeze_every * self.limits.steps_per_epoch)
        self.unfreeze: UnfreezePlan | StagePlan = self.stages or UnfreezePlan(
            c.unfreeze_start, max(every, 1) if c.unfreeze_every else 0)
        self.groups = 1 + max(g.get("layer_group", 0) for g in self.optimizer.param_groups)
        self.scaler = (
            torch.amp.GradScaler(self.device.type)
            if needs_grad_scaler(self.device, self.dtype) else None
        )
        if self.state.optimizer is not None:
            self.optimizer.load_state_dict(self.state.optimizer)
        if self.scaler is not None and "scaler" in self.state.extra:
            self.scaler.load_state_dict(self.state.extra["scaler"])
        self.last_saved_step: int | None = self.state.step if self.state.optimizer else None
        self.trainable = -1  # top layer groups that train now; set by _apply_unfreezing
        self._apply_unfreezing(self.state.step)
        self.carried = self._restore_carried()  # the model state of a stateful source
        self._interrupted = [False]
        self._last_log = (self.state.step, self.state.tokens_seen, self.clock())
        self.last_eval: dict | None = None

    # --- what trains, and what is carried ------------------------------------------------

    def _apply_unfreezing(self, step: int) -> None:
        """Let the top `unfreeze.trainable(step)` layer groups train, freeze the rest, and
        (re)wrap the model for DDP / torch.compile when that set changes: DDP registers
        the parameters that require a gradient when it wraps the model."""
        trainable = self.unfreeze.trainable(step, self.groups)
        if trainable == self.trainable:
            return
        first = self.groups - trainable  # the lowest layer group that trains
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.requires_grad_(group.get("layer_group", 0) >= first)
        self.trainable = trainable
        self.wrapped = distributed.wrap(self.model, self.dist, self.device)
        if self.config.compile:
            self.wrapped = torch.compile(self.wrapped)

    def _stop_at_horizon(self) -> None:
        """The fitted horizon is the step limit, reached for want of time."""
        if self.plan.end is not None and self.plan.end < self.limits.max_steps:
            self.limits.max_steps, self.limits.by_time = self.plan.end, True

    def _fit_horizon(self, step: int, elapsed: float) -> None:
        """Under --max-time, once PROBE_STEPS steps after this session's first one (and
        PROBE_FRACTION of the time) are timed, fix the schedule's horizon at the steps
        the time left buys (never past the step limit), so the rate curve spans the
        steps trained. `elapsed` is the agreed time when step `step` (1-based) began:
        every rank fits the same horizon."""
        if self._probe is None:  # the session's first step: its time is not typical
            self._probe = (-1, 0.0)
            return
        first, start = self._probe
        if first < 0:  # the time the second step began: the first one's end
            self._probe = (step, elapsed)
            return
        if step - first < PROBE_STEPS or elapsed - start < PROBE_FRACTION * (
                self.limits.max_time or 0.0):
            return
        per_step = (elapsed - start) / (step - first)  # seconds
        if per_step <= 0:  # a clock that did not move: nothing to fit
            self._fix_horizon(self.limits.max_steps)
            return
        # Step j (1-based) ends at about elapsed + (j - step + 1) * per_step: the last
        # that ends within the limit (its TIME_SHARE).
        left = TIME_SHARE * (self.limits.max_time - elapsed)  # type: ignore[operator]
        end = max(step, step - 1 + math.floor(left / per_step))
        self._fix_horizon(min(end, self.limits.max_steps))

    def _fix_horizon(self, end: int) -> None:
        """Plan the schedule for `end` steps from now on, and stop there."""
        self.plan = self.limits.plan(self.config, max(end, 1))
        self.fitting = False
        self._stop_at_horizon()

    def _restore_carried(self):
        """The carried state saved with the checkpoint: this rank's rows of it."""
        if not self.source.stateful or not self.state.tensors:
            return None
        saved = {k.removeprefix("carried."): v for k, v in self.state.tensors.items()
                 if k.startswith("carried.")}
        rows = next(iter(saved.values())).size(1) // self.dist.world_size
        mine = {k: v[:, self.dist.rank * rows : (self.dist.rank + 1) * rows]
                for k, v in saved.items()}  # (1, B, H) each
        state = self.model.initial_state(rows)
        state.load_tensors(mine)
        return state

    def _carried_tensors(self) -> dict[str, torch.Tensor]:
        """The carried state of every rank, rows in rank order (a collective under DDP)."""
        if self.carried is None:
            return {}
        out = {}
        for key, tensor in self.carried.tensors().items():
            out[f"carried.{key}"] = distributed.all_gather_cat(tensor.detach(), 1, self.dist)
        return out

    # --- one step ------------------------------------------------------------------

    def lr(self, step: int, elapsed: float) -> float:
        """The top group's rate for `step`, `elapsed` seconds into the run (the same on
        every rank); each group trains at this times its "lr_mult"."""
        c, plan = self.config, self.plan
        if self.stages is not None:
            return self.stages.lr(step)
        return lr_at(step, base_lr=c.lr, warmup=plan.warmup, total=plan.end,
                     schedule=c.schedule, min_ratio=c.min_lr_ratio,
                     time_fraction=plan.time_fraction(elapsed))

    def _micro_batches(self, step: int) -> list:
        """[(micro index, source index, Batch, tokens)] for optimiser step `step`: a pure
        function of the step."""
        spe, accum = self.limits.steps_per_epoch, self.config.grad_accum
        epoch, out = step // spe, []
        for micro in range(accum):
            index = (step % spe) * accum + micro
            raw = self.source.batch(epoch, index)
            gen = torch.Generator().manual_seed(
                seed_for(self.config.seed, step, micro, self.dist.rank, _MASKING)
            )
            batch = self.objective.make_batch(raw, gen)
            out.append((micro, index, batch.to(self.device), batch.num_tokens))
        return out

    def _step(self, agreed: float, local: float) -> tuple[float, float, float, int, bool]:
        """One optimiser step. `agreed` is the training time before this step as all ranks
        agreed on it at the end of the previous one (the learning rate follows it, so the
        replicas never drift); `local` is this rank's clock now. Returns (loss, lr, the
        agreed time after the step, tokens read by all ranks, interrupted)."""
        from lmtool.device import autocast

        c, step = self.config, self.state.step
        self._apply_unfreezing(step)
        micro_batches = self._micro_batches(step)
        epoch = step // self.limits.steps_per_epoch
        scale = sum(self.source.lr_scale(epoch, i) for _, i, _, _ in micro_batches) / c.grad_accum
        lr = self.lr(step, agreed) * scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        # Dropout draws from the global generator, reseeded here: a pure function of
        # (seed, step, rank), so no RNG state needs saving for an exact resume.
        seed_dropout(seed_for(c.seed, step, self.dist.rank, _DROPOUT), self.device)
        self.optimizer.zero_grad()
        total = torch.zeros((), device=self.device)
        tokens = 0
        for micro, index, batch, count in micro_batches:
            last = micro == c.grad_accum - 1
            carry = {}
            if self.source.stateful:
                if index == 0 or self.carried is None:  # an epoch starts: a fresh state
                    self.carried = self.model.initial_state(batch.inputs.size(0))
                carry["state"] = self.carried
            # DDP: all-reduce gradients only on the last micro-batch.
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else (
                self.wrapped.no_sync())
            with sync:
                with autocast(self.device, self.dtype):
                    loss, _ = self.objective.loss(self.wrapped, batch, **carry)
                scaled = loss / c.grad_accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            if self.carried is not None:
                self.carried.detach()  # truncated BPTT: the next batch starts from here
            total += loss.detach()
            tokens += count
        loss_value = float(total) / c.grad_accum
        # One small all-reduce (summed, then averaged over ranks): the logged loss is the
        # mean over all ranks' data, and every rank takes the same decisions (stop on a
        # non-finite loss, on Ctrl-C in any rank, on the mean elapsed time).
        world = self.dist.world_size
        loss_sum, bad, elapsed, tokens_all, interrupted = distributed.all_sum(
            [loss_value, 0.0 if math.isfinite(loss_value) else 1.0, local, float(tokens),
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
        return loss_value, lr, elapsed, int(tokens_all), bool(interrupted)

    # --- evaluation and saving -------------------------------------------------------

    def evaluate(self) -> dict | None:
        """The objective's metrics on the held-out source (all ranks take part), scored
        as `lmtool evaluate` scores it: the same function, the same masks."""
        from lmtool.training.evaluate import score

        if self.eval_source is None:
            return None
        self.model.eval()
        metrics = score(self.model, self.objective, self.eval_source, device=self.device,
                        dtype=self.dtype, dist=self.dist)
        self.model.train()
        if metrics is None:
            return None
        row = {"step": self.state.step, **{f"val_{k}": v for k, v in metrics.items()}}
        row["elapsed_s"] = round(self.state.elapsed_s, 3)
        self.last_eval = row
        return row

    def snapshot(self) -> TrainerState:
        s = self.state
        extra = {"world_size": self.dist.world_size, "plan": self.plan.to_dict(),
                 "fitting": self.fitting, "fitted": self.limits.by_time,
                 "fitted_to": self.config.max_time}
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        return TrainerState(s.step, s.epoch, s.tokens_seen, s.elapsed_s,
                            self.optimizer.state_dict(), self._carried_tensors(), extra)

    def save(self) -> None:
        state = self.snapshot()  # every rank: gathering the carried state is collective
        if self.dist.is_main:
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
            if self.eval_at_start:
                row = self.evaluate()
                if row:
                    self._fire("on_eval", row)
            # A new run is saved before its first step, so RUN/metrics.jsonl is live from
            # the first logged row and a kill at any moment leaves a run to --resume.
            self.save()
        self._fire("on_start")
        self.model.train()
        start, base_elapsed = self.clock(), s.elapsed_s
        agreed = base_elapsed  # the same on every rank: 0, or the checkpoint's
        reason = "steps"
        with _sigint_flag(self._interrupted):
            while True:
                if s.step >= lim.max_steps:
                    reason = "time" if lim.by_time else "steps"
                    break
                local = base_elapsed + self.clock() - start
                loss, lr, agreed, tokens, interrupted = self._step(agreed, local)
                s.step += 1
                s.tokens_seen += tokens
                s.epoch = s.step / lim.steps_per_epoch
                s.elapsed_s = agreed
                if self.fitting:
                    self._fit_horizon(s.step, agreed)
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
                    if self.fitting:  # out of time while timing: it bought these steps
                        self._fix_horizon(s.step)
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
        last_step, last_tokens, last_time = self._last_log
        now = self.clock()
        rate = (s.tokens_seen - last_tokens) / max(now - last_time, 1e-9)
        self._last_log = (s.step, s.tokens_seen, now)
        return {
            "step": s.step,
            "loss": loss,
            "lr": lr,
            "tokens_per_s": round(rate, 1),
            "elapsed_s": round(s.elapsed_s, 3),
            "epoch": round(s.epoch, 4),
            "tokens": s.tokens_seen,
            **({"stage": self.stages.locate(s.step - 1)[0] + 1} if self.stages else {}),
        }


def train(
    model: nn.Module,
    objective: Objective,
    source: BatchSource,
    config: TrainConfig,
    device: torch.device,
    optimizer: Optimizers,
    **kwargs,
) -> Trainer:
    """Build a Trainer and run it; returns the trainer (its .state, .last_eval)."""
    trainer = Trainer(model, objective, source, config, device, optimizer, **kwargs)
    trainer.fit()
    return trainer
