"""ULMFiT's per-group rates, gradual unfreezing and the stage plan: pure functions of the step.

Layer groups run bottom (embeddings) to top (head); see `parameter_groups`.

- Discriminative fine-tuning (Howard & Ruder 2018, section 3.2): the top group trains at
  the schedule's rate and each group below at the rate of the one above divided by
  `factor` (2.6 in the paper). With 4 groups and factor 2.6 the multipliers are
  1/2.6^3, 1/2.6^2, 1/2.6, 1 (bottom to top).
- Gradual unfreezing (section 3.3): the top group trains first, one more group below
  it at each stage. A frozen group's parameters keep `requires_grad=False`, so no
  gradient reaches them and the optimiser creates no state for them; they stay in the
  optimiser's parameter groups, so unfreezing needs no rebuild.

The classifier's stage plan (`StagePlan`, made by `ulmfit_stages`): with G layer
groups, stage k (1..G) trains the top k groups, and each stage is its own
slanted-triangular cycle (STLR, schedules.py) at its own peak rate, as the paper does
("we fine-tune all unfrozen layers for one epoch ... then unfreeze the next lower
frozen layer and repeat") and fastai's IMDb recipe (`fit_one_cycle` per stage):

    stage        1 (head)   2       3       ...   G (all groups)
    epochs       1          1       1             2 (LAST_STAGE_EPOCHS)
    peak rate    lr         lr/2    lr/4          lr/20 (LAST_STAGE_DIVISOR)

With lr = 2e-2 and G = 4 that is fastai's recipe exactly: 2e-2, 1e-2, 5e-3, then 1e-3
for two epochs; a middle stage never peaks below the last (with G = 5: 2e-2, 1e-2,
5e-3, 2.5e-3, 1e-3). Each group below the top trains at its stage's rate / 2.6 per
group (the optimiser's "lr_mult"). A stage is `unfreeze_every` epochs, the last twice
that: G + 1 stage lengths in all. By default a stage is one epoch, or MIN_STAGE_STEPS
steps when an epoch is shorter: fastai's epoch-long stages assume IMDb's 25,000
documents (390 steps of 64), and a stage of a few steps on a small labelled set trains
nothing (measured, benchmarks/ulmfit.py: BANKING77 with 1,000 labels, 29 steps an
epoch, reached 0.111 test accuracy with stages of one epoch and 0.232 with stages of
four).

Limits (the choice is to compress, and to say so):
- `--epochs E` stretches or compresses the whole plan into E epochs, each stage
  keeping its share, so every group trains: `--epochs 2` with 5 groups gives stages
  of 1/3, 1/3, 1/3, 1/3, 2/3 of an epoch;
- `--max-steps N` below the plan's length compresses it into N steps the same way;
- a budget shorter than one step per stage cannot fit them all: it keeps one step for
  each of as many stages as it can, spread over the plan and always the last (with 2
  steps for 5 groups: top 3 groups at stage 3's peak, then all 5 at the last stage's),
  so groups unfreeze several at a time, and a warning says so before training starts;
- `--max-time` cannot be planned in steps: the plan stays as it is, and a run that
  the clock stops before the last stage says which groups never trained.
The plan is fixed when the run starts and saved in config.json ("stages"): a resumed
run follows the same one (past its end, the last stage's final rate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from lmtool.training.schedules import lr_at

# fastai's IMDb classifier: the last stage (everything unfrozen) runs 2 epochs where
# the others run 1, at 1e-3 where the head alone started at 2e-2.
LAST_STAGE_EPOCHS = 2.0  # in units of `unfreeze_every`
LAST_STAGE_DIVISOR = 20.0  # its peak: lr / 20
STAGE_DIVISOR = 2.0  # each stage before the last peaks at half the one before
MIN_STAGE_STEPS = 100  # the default stage: an epoch, or this many steps if longer


def discriminative_multipliers(groups: int, factor: float) -> list[float]:
    """Rate multipliers, bottom to top: factor^-(groups-1), ..., 1/factor, 1."""
    return [factor ** -(groups - 1 - i) for i in range(groups)]


@dataclass(frozen=True)
class UnfreezePlan:
    """How many of the top layer groups train at each step.

    start: groups trainable from step 0 (0: all of them);
    every: steps between unfreezing one more group below (0: never).
    """

    start: int = 0
    every: int = 0

    def trainable(self, step: int, groups: int) -> int:
        """The number of top groups that train at optimiser step `step` (0-based)."""
        if self.start <= 0:
            return groups
        more = step // self.every if self.every > 0 else 0
        return min(groups, self.start + more)


@dataclass(frozen=True)
class Stage:
    steps: int  # optimiser steps
    trainable: int  # top layer groups that train
    peak: float  # the top group's peak rate


@dataclass(frozen=True)
class StagePlan:
    """Stages run one after the other from step 0; each its own cycle of `schedule`."""

    stages: tuple[Stage, ...]
    schedule: str = "stlr"  # within each stage (schedules.py; "constant": the peak)
    # What the limits did to the plan, a line each, for the log (not saved with it):
    # how they compressed it, and (warnings) stages merged for want of steps.
    notes: tuple[str, ...] = field(default=(), compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def total(self) -> int:
        """Steps the plan spans."""
        return sum(s.steps for s in self.stages)

    def locate(self, step: int) -> tuple[int, int]:
        """(stage index, the stage's first step) for optimiser step `step` (0-based);
        past the end, the last stage."""
        start = 0
        for i, stage in enumerate(self.stages):
            if step < start + stage.steps or i == len(self.stages) - 1:
                return i, start
            start += stage.steps
        raise ValueError("a plan without stages")

    def trainable(self, step: int, groups: int) -> int:
        """The number of top groups that train at `step` (UnfreezePlan's interface)."""
        return min(groups, self.stages[self.locate(step)[0]].trainable)

    def lr(self, step: int) -> float:
        """The top group's rate at `step`: its stage's cycle, restarted at the stage's
        first step (step 0 of a 101-step STLR stage: peak/32; step 10: the peak)."""
        i, start = self.locate(step)
        stage = self.stages[i]
        return lr_at(step - start, base_lr=stage.peak, warmup=0, total=stage.steps,
                     schedule=self.schedule)

    def describe(self, groups: int, steps_per_epoch: int) -> list[str]:
        """One line per stage, for the log: steps (1-based), groups, peak rate."""
        lines, start = [], 0
        for i, s in enumerate(self.stages):
            lines.append(f"stage {i + 1}/{len(self.stages)}: steps {start + 1}-"
                         f"{start + s.steps} ({s.steps / steps_per_epoch:.3g} epoch(s)), "
                         f"top {s.trainable}/{groups} layer groups, peak lr {s.peak:.3g}")
            start += s.steps
        return lines

    def to_dict(self) -> dict:
        return {"schedule": self.schedule, "stages": [asdict(s) for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict) -> StagePlan:
        return cls(tuple(Stage(**s) for s in data["stages"]), data.get("schedule", "stlr"))


def default_stage_epochs(steps_per_epoch: int) -> float:
    """Epochs of a stage when --unfreeze-every is not given: one, or enough for
    MIN_STAGE_STEPS steps."""
    return max(1.0, MIN_STAGE_STEPS / max(steps_per_epoch, 1))


def ulmfit_stages(groups: int, steps_per_epoch: int, *, lr: float, every: float = 1.0,
                  gradual: bool = True, epochs: float | None = None,
                  max_steps: int | None = None, schedule: str = "stlr"
                  ) -> tuple[StagePlan, float]:
    """The plan of stages (see the module docstring) for `groups` layer groups.

    Returns (plan, the epochs it spans); the plan's notes say how the limits compressed
    it, its warnings when stages had to be merged (fewer steps than stages).
    `gradual` False: one stage of all groups at `lr`, as long as the gradual plan.
    """
    every = every or 1.0
    if gradual and groups > 1:
        trainable = list(range(1, groups + 1))
        peaks = [max(lr / STAGE_DIVISOR ** i, lr / LAST_STAGE_DIVISOR) for i in range(groups)]
        peaks[-1] = lr / LAST_STAGE_DIVISOR
        shares = [every] * (groups - 1) + [every * LAST_STAGE_EPOCHS]
    else:
        trainable, peaks = [groups], [lr]
        shares = [every * (groups - 1 + LAST_STAGE_EPOCHS)]
    default = sum(shares)
    span = epochs if epochs is not None else default
    budget = math.ceil(span * steps_per_epoch)  # as the trainer's Limits counts --epochs
    notes, warnings = [], []
    if epochs is not None and len(shares) > 1 and not math.isclose(epochs, default):
        notes.append(f"--epochs {epochs:g} fits the plan's {len(shares)} stages "
                     f"({default:g} epochs by default) into {epochs:g}")
    if max_steps is not None and max_steps < budget:
        budget = max_steps
        if len(shares) > 1 and budget >= len(shares):
            notes.append(f"--max-steps {max_steps} compresses the plan's {len(shares)} "
                         f"stages into {max_steps} steps")
    if budget < len(shares):  # one step for each of `budget` stages, the last among them
        keep = [math.ceil((k + 1) * len(shares) / budget) - 1 for k in range(budget)]
        warnings.append(f"the limits allow {budget} steps, fewer than the plan's "
                        f"{len(shares)} stages: layer groups unfreeze several at a time")
        trainable = [trainable[i] for i in keep]
        peaks = [peaks[i] for i in keep]
        shares = [shares[i] for i in keep]
    # Stage k ends at its share of the budget, rounded; at least one step each, and
    # room left for those after it.
    ends, done, total = [], 0.0, sum(shares)
    for share in shares:
        done += share
        ends.append(round(budget * done / total))
    n = len(shares)
    for k in range(n):
        ends[k] = max(ends[k], (ends[k - 1] if k else 0) + 1)
    for k in reversed(range(n)):
        ends[k] = min(ends[k], budget - (n - 1 - k))
    starts = [0, *ends[:-1]]
    stages = tuple(Stage(end - start, groups_, peak) for start, end, groups_, peak
                   in zip(starts, ends, trainable, peaks, strict=True))
    return StagePlan(stages, schedule, tuple(notes), tuple(warnings)), span
