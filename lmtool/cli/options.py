"""Training flags, defined once and shared by `pretrain` and `finetune` (DESIGN.md).

A command lists them in its signature as `batch_size: BatchSize = None`; None means "not
given", so the preset, the --config file, the base run or the library's default wins.
`overrides(locals())`, on the command's first lines, turns its parameters into the library's
field → value dict: each flag is named after the field it sets.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import typer

PANEL = "Training"


# Spelled out, not imported: importing lmtool.training loads torch, which --help must not
# (a test checks they equal lmtool.training's SCHEDULES and OPTIMIZERS).
class Schedule(str, Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"
    stlr = "stlr"


class Optimizer(str, Enum):
    adamw = "adamw"
    muon = "muon"


def option(flag: str, help: str, panel: str = PANEL):
    return typer.Option(flag, help=help, rich_help_panel=panel, show_default=False)


Int, Float = int | None, float | None

BatchSize = Annotated[Int, option("--batch-size", "Sequences per batch (tiny: 12).")]
Lr = Annotated[Float, option("--lr", "Peak learning rate (tiny: 5e-3; finetune: the base "
                                     "run's; the top layer group's with --discriminative).")]
OptimizerFlag = Annotated[Optimizer | None, option(
    "--optimizer", "adamw, or muon: Muon on hidden matrices, AdamW elsewhere (tiny: muon).")]
WeightDecay = Annotated[Float, option("--weight-decay", "Weight decay (0.1).")]
Warmup = Annotated[Int, option("--warmup", "Warmup steps (10%, max 100; not with stlr).")]
ScheduleFlag = Annotated[Schedule | None, option(
    "--schedule", "cosine, linear, constant, or stlr: slanted triangular, ULMFiT's "
    "(pretrain: cosine; finetune: stlr).")]
Discriminative = Annotated[Float, option(
    "--discriminative", "Each layer group's rate is the one above's divided by this "
    "(pretrain: 1; finetune: 2.6, ULMFiT's).")]
GradAccum = Annotated[Int, option("--grad-accum", "Micro-batches per step (1).")]
GradClip = Annotated[Float, option("--grad-clip", "Max grad norm; 0: off (1).")]
MaxSteps = Annotated[Int, option("--max-steps", "Stop after this many steps in all.")]
MaxTime = Annotated[Float, option("--max-time", "Stop after this many seconds in all.")]
Epochs = Annotated[Float, option("--epochs", "Stop after this many epochs in all (none "
                                             "of the three: 1).")]
EvalEvery = Annotated[Int, option("--eval-every", "Steps between evals (200).")]
EvalBatches = Annotated[Int, option("--eval-batches", "Batches per eval; 0: all (20; "
                                                      "finetune: 0).")]
SaveEvery = Annotated[Int, option("--save-every", "Steps between saves (500).")]
LogEvery = Annotated[Int, option("--log-every", "Steps between log rows (10).")]
TrainSeed = Annotated[Int, option("--seed", "Random seed (0).")]
Compile = Annotated[bool | None, option("--compile/--no-compile", "torch.compile.")]
Stateful = Annotated[bool | None, option(
    "--stateful/--stateless", "Contiguous streams with the state carried between batches "
    "(the AWD-LSTM's default), or shuffled windows each read from a fresh state.")]
Resume = Annotated[bool, option("--resume", "Continue the run in -o.")]

# The run a fine-tune starts from, the run a training command writes, what it prints.
BaseRun = Annotated[Path, typer.Argument(
    metavar="RUN", help="The language model run to start from.")]
RunOutput = Annotated[Path, typer.Option("--output", "-o", help="The run directory to write.")]
RunFormat = Annotated[Literal["text", "json"], typer.Option(
    "--format", help="text: the run's figures on stderr with its log; json: on stdout too, "
    "as one object.")]
# --format json's old spelling, hidden: scripts and long runs under way still pass it.
OldJson = Annotated[bool, typer.Option("--json", hidden=True)]


def overrides(params: dict) -> dict:
    """The library fields among a command's parameters (`locals()` on the command's first
    lines): the model and training fields, enums to their values, None kept (not given)."""
    from lmtool.training.config import MODEL_FIELDS, TRAIN_FIELDS

    return {k: (v.value if isinstance(v, Enum) else v) for k, v in params.items()
            if k in MODEL_FIELDS or k in TRAIN_FIELDS}
