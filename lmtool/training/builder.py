"""The run builder: every kind of run (pre-training, LM fine-tuning, a classifier, ...)
goes through `build_run`, which does once what they all need:

1. -o is claimed for the whole run (lmtool/rundir.py: the lock, and the check that
   training may write there, --resume and --force included);
2. the task's `prepare()` runs under that claim and returns its `RunPlan`: the
   training settings (TrainConfig), the model's config, and a function that makes the
   run's parts;
3. the device and precision are resolved from the settings, torchrun's processes are
   joined (training/distributed.py), and left again at the end whatever happens;
4. `plan.parts(env)` makes what differs between kinds of run: the model (new, from a
   base run, or the one being resumed: `env.resumed()`), the batch sources, the
   objective, the optimiser, and what config.json says about the run;
5. the metrics log and a checkpointer (the task may give its own, e.g. the classifier's
   best-epoch keeper) join the caller's callbacks; the one trainer runs; a new run that
   fails before its first real checkpoint leaves no run directory behind;
6. the common result (RunResult) goes to `parts.finish`, which adds what the kind of
   run reports (held-out figures before and after, the best epoch, ...).

A new kind of run is a function that reads its inputs and calls `build_run` with a
`prepare` that states only what differs (docs/adding-a-task.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lmtool.checkpoint import TrainerState
from lmtool.rundir import claim_run
from lmtool.training.run import Checkpointer, MetricsLog, RunResult
from lmtool.training.trainer import Callback

if TYPE_CHECKING:
    import torch

    from lmtool.models.config import ModelConfig
    from lmtool.training.config import TrainConfig
    from lmtool.training.distributed import DistContext
    from lmtool.training.freezing import StagePlan
    from lmtool.training.objectives import Objective
    from lmtool.training.optimizers import Optimizers
    from lmtool.training.protocol import BatchSource, EvalSource
    from lmtool.training.trainer import Trainer


@dataclass
class Env:
    """What the builder has set up when it asks a task for its parts."""

    output: Path  # the run directory, claimed
    device: torch.device  # this process's device
    dist: DistContext  # rank and world size (one process without torchrun)
    resume: bool  # continue the run in `output`
    stack: contextlib.ExitStack  # contexts (e.g. temporary data) that last the whole run

    def resumed(self, task: str | None = "lm") -> tuple[torch.nn.Module, TrainerState,
                                                         list[dict]]:
        """(model, trainer state, metrics rows) of the run to continue (run.load_for_resume)."""
        from lmtool.training.run import load_for_resume

        return load_for_resume(self.output, self.device, self.dist, task=task)


def _unchanged(result: RunResult, trainer: Trainer, metrics: MetricsLog) -> RunResult:
    return result


@dataclass
class Parts:
    """What a kind of run makes once the device is known; the builder does the rest."""

    model: torch.nn.Module  # the plain module on env.device
    objective: Objective
    source: BatchSource
    eval_source: EvalSource | None
    optimizer: Optimizers  # its parameter groups (training/optimizers.py)
    # config.json: "task" and what the kind of run records ("data", "base", ...); the
    # builder adds "arch", "objective", "model", "training" and "num_parameters".
    config: dict
    tokenizer_json: str  # the text of the tokenizer.json the run keeps
    state: TrainerState = field(default_factory=TrainerState)  # a resumed run's
    rows: list[dict] = field(default_factory=list)  # a resumed run's metrics so far
    # (run dir, config, tokenizer json, metrics log) → the callback that saves the run
    checkpointer: Callable[[Path, dict, str, MetricsLog], Checkpointer] = Checkpointer
    eval_at_start: bool = False  # score the held-out data before the first step
    stages: StagePlan | None = None  # a stage plan: rates and unfreezing (training/freezing.py)
    # (the common result, the trainer, the metrics log) → what the run returns
    finish: Callable[[RunResult, Trainer, MetricsLog], RunResult] = _unchanged


@dataclass
class RunPlan:
    """A kind of run, as its `prepare()` states it under the claim of -o."""

    train: TrainConfig  # the settings: device, precision, limits, rates, ...
    model: ModelConfig  # the (backbone's) model config, which config.json records
    parts: Callable[[Env], Parts]


def build_run(output: Path, prepare: Callable[[], RunPlan], *, resume: bool, force: bool,
              callbacks: Sequence[Callback] = ()) -> RunResult:
    """Claim `output`, set up the device and processes, make the task's parts, train,
    and return what `parts.finish` makes of the result (see the module docstring)."""
    from lmtool.device import resolve_device, resolve_precision
    from lmtool.training import distributed, run
    from lmtool.training.trainer import Trainer

    output = Path(output)
    with claim_run(output, resume=resume, force=force):
        plan = prepare()
        train = plan.train
        device = resolve_device(train.device)
        dtype = resolve_precision(train.precision, device)
        ctx, device = distributed.setup(device)
        try:
            with contextlib.ExitStack() as stack:
                parts = plan.parts(Env(output, device, ctx, resume, stack))
                parts.model.train()
                resumed_from = parts.state.step if resume else None
                config = {"arch": plan.model.arch, "objective": plan.model.objective,
                          "model": plan.model.to_dict(), **parts.config,
                          "training": train.to_dict(),
                          "num_parameters": sum(p.numel() for p in parts.model.parameters())}
                metrics = MetricsLog(output, parts.rows, live=resume)
                # The checkpointer first: a task's keeper may annotate an evaluation row
                # before the metrics log records it.
                saver = parts.checkpointer(output, config, parts.tokenizer_json, metrics)
                trainer = Trainer(
                    parts.model, parts.objective, parts.source, train, device,
                    parts.optimizer, dtype, eval_source=parts.eval_source, dist=ctx,
                    state=parts.state, callbacks=[saver, metrics, *callbacks],
                    eval_at_start=parts.eval_at_start, stages=parts.stages,
                )
                reason = run.fit(trainer, output, fresh=not resume)
                result = run.result(trainer, output, reason, metrics, resumed_from)
                return parts.finish(result, trainer, metrics)
        finally:
            distributed.teardown(ctx)
