"""Learning-rate schedules: pure functions of the optimiser step.

A pure function of the step means a resumed run needs no scheduler state: step N gives
the same rate whether or not the process was restarted at step N-1. What a resumed run
does need is the schedule's horizon, fixed when the run started (`Plan`, saved in the
checkpoint): `--resume` with a new limit changes when training stops, not the schedule,
so a finished cosine run continued with a larger --max-steps trains on at its final
rate instead of jumping back to a high one. A new schedule is a new run: fine-tune
from the old one (`lmtool finetune lm`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SCHEDULES = ("cosine", "linear", "constant", "stlr")
# Slanted triangular learning rates (Howard & Ruder 2018, eq. 3): a short linear rise
# over the first STLR_CUT_FRAC of the steps, a long linear decay, to lr / STLR_RATIO.
STLR_CUT_FRAC, STLR_RATIO = 0.1, 32
# A time-bounded run ends its warmup after `warmup` steps or this fraction of its time,
# whichever comes first: on a slow machine 100 warmup steps could be the whole run.
WARMUP_TIME_FRACTION = 0.05


def lr_at(
    step: int,
    *,
    base_lr: float,
    warmup: int,
    total: int | None,
    schedule: str,
    min_ratio: float = 0.1,
    time_fraction: float = 0.0,
) -> float:
    """The learning rate for optimiser step `step` (0-based) of a schedule of `total` steps.

    1. Linear warmup from base_lr/warmup up to base_lr over the first `warmup` steps.
    2. Then decay to `min_ratio * base_lr`, reached on the last step, `total - 1` (cosine
       or linear), or stay at base_lr (constant). Past it the rate stays at its floor.
    A run bounded by --max-time passes the fraction of its time used: the decay follows
    whichever of steps and time is further along (with total=None, time alone); its
    warmup also ends once WARMUP_TIME_FRACTION of the time is used.
    "stlr" has no separate warmup: see `stlr`.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    if schedule == "stlr":
        x = step / max(1, total - 1) if total is not None else 0.0
        return stlr(min(1.0, max(x, time_fraction)), base_lr)
    if warmup > 0 and step < warmup:
        ramp = max((step + 1) / warmup, time_fraction / WARMUP_TIME_FRACTION)
        if ramp < 1:
            return base_lr * ramp
    if schedule == "constant":
        return base_lr
    # Steps warmup .. total-1 decay: progress 0 on the first, 1 on the last.
    progress = (step - warmup) / max(1, total - 1 - warmup) if total is not None else 0.0
    progress = min(1.0, max(progress, time_fraction))  # 0 → 1 over the decay
    min_lr = base_lr * min_ratio
    if schedule == "linear":
        return base_lr - (base_lr - min_lr) * progress
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def stlr(x: float, base_lr: float, cut_frac: float = STLR_CUT_FRAC,
         ratio: float = STLR_RATIO) -> float:
    """The slanted triangular rate at fraction x (0 on the first step, 1 on the last).

    p rises 0 → 1 over x in [0, cut_frac] and falls 1 → 0 over [cut_frac, 1]; the rate
    is base_lr * (1 + p (ratio - 1)) / ratio: base_lr / 32 at both ends, base_lr at the
    cut. Worked example, 101 steps: step 0 base_lr/32, step 10 base_lr, step 100
    base_lr/32, step 55 halfway down: base_lr * (1 + 0.5 * 31) / 32.
    """
    p = x / cut_frac if x < cut_frac else 1 - (x - cut_frac) / (1 - cut_frac)
    return base_lr * (1 + p * (ratio - 1)) / ratio


@dataclass
class Plan:
    """A run's schedule horizon, fixed when the run starts and saved with it: decay
    until step `end` - 1 and/or `seconds` of training, whichever comes first."""

    end: int | None  # the run's step limit when it started; None: bounded by time alone
    seconds: float | None  # the run's --max-time when it started
    warmup: int  # steps

    def time_fraction(self, elapsed: float) -> float:
        return elapsed / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(**data)
