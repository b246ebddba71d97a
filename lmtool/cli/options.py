"""Training flags, defined once and shared by `pretrain`, `finetune lm` and `finetune
classifier` (DESIGN.md).

Each flag is an alias (`BatchSize`, ...); None means "not given", so the preset, the
--config file, the base run or the library's default wins. The flags every training
command takes are written once, in the blocks `run_flags` and `lm_flags` below: each
builds the library's typed `TrainFlags` by name (--precision → `precision=precision`),
and `@with_blocks(flags=...)` puts a block's options in the place of a command's
`flags: TrainFlags` parameter and hands the command the flags built; `run_options`
does the same for --resume, --force, --quiet and --format.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from lmtool.cli.common import Device, Force, Precision, Quiet

if TYPE_CHECKING:
    from lmtool.training.flags import TrainFlags

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

BatchSize = Annotated[Int, option("--batch-size", "Sequences per batch (tiny: 12; "
                                                  "classifier: documents, 32).")]
Lr = Annotated[Float, option("--lr", "Peak learning rate (tiny: 5e-3; finetune lm: the base "
                                     "run's; classifier: 0.02, its first stage's; the top layer "
                                     "group's with --discriminative).")]
OptimizerFlag = Annotated[Optimizer | None, option(
    "--optimizer", "adamw, or muon: Muon on hidden matrices, AdamW elsewhere (tiny: muon).")]
WeightDecay = Annotated[Float, option("--weight-decay", "Weight decay (0.1; classifier: "
                                                        "0.01).")]
Warmup = Annotated[Int, option("--warmup", "Warmup steps (10%, max 100; not with stlr).")]
ScheduleFlag = Annotated[Schedule | None, option(
    "--schedule", "cosine, linear, constant, or stlr: slanted triangular, ULMFiT's "
    "(pretrain: cosine; finetune: stlr).")]
Discriminative = Annotated[Float, option(
    "--discriminative", "Each layer group's rate is the one above's divided by this "
    "(pretrain: 1; finetune: 2.6, ULMFiT's).")]
GradAccum = Annotated[Int, option("--grad-accum", "Micro-batches per step (1).")]
GradClip = Annotated[Float, option("--grad-clip", "Max grad norm; 0: off (1).")]
MaxSteps = Annotated[Int, option("--max-steps", "Stop by this many steps in all: a cap that "
                                                 "only cuts the --epochs plan short (the "
                                                 "schedule then spans these steps).")]
MaxTime = Annotated[Float, option("--max-time", "Stop by this many seconds in all: a cap that "
                                                "only cuts the --epochs plan short (the "
                                                "schedule spans the steps the time buys, "
                                                "timed as it trains).")]
Epochs = Annotated[Float, option("--epochs", "Passes over the data: the run's plan (1; "
                                             "classifier: one per layer group), which "
                                             "--max-steps and --max-time only cut short.")]
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
    "--format", help="text: the result as lines on stdout (finetune: the held-out figures "
    "or the best epoch), the log and the run's figures on stderr; json: the result as one "
    "object on stdout, its lines on stderr with the log.")]
# --format json's old spelling, hidden: scripts and long runs under way still pass it.
OldJson = Annotated[bool, typer.Option("--json", hidden=True)]


# --- the blocks of flags, written once --------------------------------------------------


def run_flags(
    batch_size: BatchSize = None,
    lr: Lr = None,
    weight_decay: WeightDecay = None,
    schedule: ScheduleFlag = None,
    discriminative: Discriminative = None,
    grad_accum: GradAccum = None,
    grad_clip: GradClip = None,
    max_steps: MaxSteps = None,
    max_time: MaxTime = None,
    epochs: Epochs = None,
    seed: TrainSeed = None,
    device: Device = None,
    precision: Precision = None,
    compile: Compile = None,
) -> TrainFlags:
    """The flags of every training command."""
    from lmtool.training.flags import TrainFlags

    return TrainFlags(batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      schedule=schedule, discriminative=discriminative,
                      grad_accum=grad_accum, grad_clip=grad_clip, max_steps=max_steps,
                      max_time=max_time, epochs=epochs, seed=seed, device=device,
                      precision=precision, compile=compile)


def lm_flags(
    warmup: Warmup = None,
    eval_every: EvalEvery = None,
    eval_batches: EvalBatches = None,
    save_every: SaveEvery = None,
    log_every: LogEvery = None,
    stateful: Stateful = None,
) -> TrainFlags:
    """The flags of the commands that train a language model (pretrain, finetune lm)."""
    from lmtool.training.flags import TrainFlags

    return TrainFlags(warmup=warmup, eval_every=eval_every, eval_batches=eval_batches,
                      save_every=save_every, log_every=log_every, stateful=stateful)


def _signature(function: Callable) -> inspect.Signature:
    """The signature with its annotations evaluated (TrainFlags is a name for type checkers
    alone: importing it here would load torch for --help)."""
    return inspect.signature(function, eval_str=True, locals={"TrainFlags": object})


@dataclass(frozen=True)
class RunOptions:
    """How a training command runs and reports, the same for each (`run_options`)."""

    resume: bool
    force: bool
    quiet: bool
    format: str  # "text" or "json"


def run_options(
    resume: Resume = False,
    force: Force = False,
    quiet: Quiet = False,
    format: RunFormat = "text",
    json_flag: OldJson = False,
) -> RunOptions:
    """The options of every training command besides its flags."""
    return RunOptions(resume, force, quiet, "json" if json_flag else format)


def with_blocks(**blocks: Callable | tuple[Callable, ...]):
    """`@with_blocks(flags=(run_flags, lm_flags), options=run_options)`: each named
    parameter of the command gives its place to the options of its blocks, and the command
    is called with what the blocks build (several blocks' TrainFlags merged, the later
    over the earlier). Typer reads the signature made here, so --help lists the blocks'
    options where the parameter stands."""
    groups = {name: b if isinstance(b, tuple) else (b,) for name, b in blocks.items()}

    def decorate(command: Callable) -> Callable:
        own = _signature(command)
        params: list[inspect.Parameter] = []
        for param in own.parameters.values():
            for block in groups.get(param.name, ()):
                params += _signature(block).parameters.values()
            if param.name not in groups:
                params.append(param)
        # Typer passes every value by keyword; keyword-only, a block's options may stand
        # before the command's own parameters without defaults.
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

        @functools.wraps(command)
        def run(**kwargs):
            for name, group in groups.items():
                built = None
                for block in group:
                    mine = block(**{k: kwargs.pop(k) for k in _signature(block).parameters})
                    built = mine if built is None else mine.over(built)
                kwargs[name] = built
            return command(**kwargs)

        del run.__wrapped__  # Typer must read the signature below, not the command's
        run.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {}
        return run

    return decorate
