"""`lmtool pretrain`: train a causal or masked language model from token shards."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import (
    Device,
    Force,
    Precision,
    Quiet,
    choices,
    info,
    stderr,
)
from lmtool.models.config import ARCHS, OBJECTIVES, POSITIONS

HELP_EXAMPLES = (
    "lmtool pretrain data/ --objective causal --preset tiny -o runs/lm --max-time 120",
    "lmtool pretrain data/ --objective masked --layers 2 --dim 64 -o runs/mlm --max-steps 500",
    "lmtool pretrain data/ --arch lstm -o runs/awd --epochs 2",
    "lmtool pretrain data/ -o runs/lm --resume --max-steps 2000",
    "torchrun --nproc_per_node 2 -m lmtool pretrain data/ -o runs/lm",
)
SUMMARY = (
    "Pre-train a language model on token shards (from `lmtool tokenize encode`). "
    "Stops at whichever of --max-steps, --max-time, --epochs comes first (none given: "
    "1 epoch); they count the whole run, across resumptions. Settings come from the "
    "preset, then --config FILE, then the flags. Checkpoints are written atomically to "
    "-o (the first before step 1, so RUN/metrics.jsonl is live); Ctrl-C saves one and "
    "exits 130. --resume continues a run: a limit given with it replaces the saved ones; "
    "the learning-rate schedule keeps the horizon the run started with (steps past it "
    "run at the final rate; for a new schedule, fine-tune from the run); a run that has "
    "nothing left to do says so and exits 0."
)


Objective = choices("Objective", OBJECTIVES)
Arch = choices("Arch", ARCHS)
Positions = choices("Positions", POSITIONS)


# Spelled out, not imported: importing lmtool.training loads torch, which --help must not
# (TrainConfig validation names the same values: SCHEDULES, OPTIMIZERS).
class Schedule(str, Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class Optimizer(str, Enum):
    adamw = "adamw"
    muon = "muon"


def _opt(flag: str, help: str, panel: str = "Training"):
    return typer.Option(flag, help=help, rich_help_panel=panel, show_default=False)


M = "Model"
Int, Float = int | None, float | None  # None: not given (the config file or default wins)


def pretrain(
    data: Annotated[Path, typer.Argument(help="A shard directory from lmtool tokenize encode.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The run directory to write.")],
    objective: Annotated[Objective | None, _opt("--objective", "causal or masked.", M)] = None,
    arch: Annotated[Arch | None, _opt("--arch", "transformer (default) or lstm.", M)] = None,
    preset: Annotated[str | None, _opt("--preset", "tiny (default), small or base.", M)] = None,
    layers: Annotated[Int, _opt("--layers", "Transformer blocks / LSTM layers.", M)] = None,
    heads: Annotated[Int, _opt("--heads", "Attention heads.", M)] = None,
    dim: Annotated[Int, _opt("--dim", "Model width (LSTM: embedding size).", M)] = None,
    context: Annotated[Int, _opt("--context", "Tokens per sequence.", M)] = None,
    dropout: Annotated[Float, _opt("--dropout", "Dropout (LSTM: multiplier).", M)] = None,
    positions: Annotated[
        Positions | None, _opt("--positions", "rotary (default) or learned.", M)
    ] = None,
    hidden: Annotated[Int, _opt("--hidden", "LSTM hidden size.", M)] = None,
    backward: Annotated[bool | None, _opt(
        "--backward/--forward", "Causal: read text right to left (ULMFiT's backward LM).", M
    )] = None,
    batch_size: Annotated[Int, _opt("--batch-size", "Sequences per batch (tiny: 12).")] = None,
    lr: Annotated[Float, _opt("--lr", "Peak learning rate (tiny: 5e-3).")] = None,
    optimizer: Annotated[Optimizer | None, _opt(
        "--optimizer", "adamw, or muon: Muon on hidden matrices, AdamW elsewhere (tiny: muon)."
    )] = None,
    weight_decay: Annotated[Float, _opt("--weight-decay", "Weight decay (0.1).")] = None,
    warmup: Annotated[Int, _opt("--warmup", "Warmup steps (10%, max 100).")] = None,
    schedule: Annotated[Schedule | None, _opt("--schedule", "cosine, linear or constant.")] = None,
    grad_accum: Annotated[Int, _opt("--grad-accum", "Micro-batches per step (1).")] = None,
    grad_clip: Annotated[Float, _opt("--grad-clip", "Max grad norm; 0: off (1).")] = None,
    max_steps: Annotated[Int, _opt("--max-steps", "Stop after this many steps.")] = None,
    max_time: Annotated[Float, _opt("--max-time", "Stop after this many seconds.")] = None,
    epochs: Annotated[Float, _opt("--epochs", "Stop after this many epochs.")] = None,
    eval_every: Annotated[Int, _opt("--eval-every", "Steps between evals (200).")] = None,
    eval_batches: Annotated[Int, _opt("--eval-batches", "Batches per eval; 0: all (20).")] = None,
    save_every: Annotated[Int, _opt("--save-every", "Steps between saves (500).")] = None,
    log_every: Annotated[Int, _opt("--log-every", "Steps between log rows (10).")] = None,
    seed: Annotated[Int, _opt("--seed", "Random seed (0).")] = None,
    device: Device = None,  # None: from --config, else auto
    precision: Precision = None,
    compile: Annotated[bool | None, _opt("--compile/--no-compile", "torch.compile.")] = None,
    config: Annotated[Path | None, _opt("--config", "JSON file of these fields.")] = None,
    tokenizer: Annotated[
        Path | None, _opt("--tokenizer", "The shards' tokenizer (default DATA/tokenizer.json).")
    ] = None,
    resume: Annotated[bool, _opt("--resume", "Continue the run in -o.")] = False,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    from lmtool.training.pretrain import pretrain as run_pretrain

    overrides = dict(
        layers=layers, heads=heads, dim=dim, context=context, dropout=dropout,
        positions=positions.value if positions else None, hidden=hidden, backward=backward,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
        optimizer=optimizer.value if optimizer else None,
        schedule=schedule.value if schedule else None, grad_accum=grad_accum,
        grad_clip=grad_clip, max_steps=max_steps, max_time=max_time, epochs=epochs,
        eval_every=eval_every, eval_batches=eval_batches, save_every=save_every,
        log_every=log_every, seed=seed, device=device, precision=precision, compile=compile,
    )
    reporter = Reporter(quiet)
    try:
        result = run_pretrain(
            data, output,
            objective=objective.value if objective else None,
            arch=arch.value if arch else None,
            preset=preset, overrides=overrides, config_file=config, tokenizer=tokenizer,
            resume=resume, force=force, callbacks=[reporter],
            sample_chars=0 if quiet else 200,
        )
    finally:
        reporter.close()
    if not result.is_main:
        return  # under torchrun only rank 0 reports
    if result.stop_reason == "done":
        info(f"{result.run_dir} has already reached its limits ({result.limits}) at step "
             f"{result.step}: nothing to do (give a larger --max-steps, --max-time or "
             "--epochs to train on)", quiet)
        return
    ev = result.last_eval or {}
    summary = f"{result.run_dir}: {result.step} steps, {result.tokens_seen:,} tokens"
    summary += f", {result.elapsed_s:.0f}s"
    if "val_loss" in ev:
        summary += f", val loss {ev['val_loss']:.4f}"
        if "val_perplexity" in ev:
            summary += f" (perplexity {ev['val_perplexity']:.2f})"
        if "val_accuracy" in ev:
            summary += f" (masked accuracy {ev['val_accuracy']:.3f})"
    info(summary, quiet)
    if result.sample:
        info("sample:\n" + result.sample, quiet)


class Reporter:
    """Training progress on stderr: plain log lines every --log-every steps (and a rich
    progress bar above them when stderr is a terminal); nothing with --quiet."""

    def __init__(self, quiet: bool):
        from lmtool.cli.common import show_progress

        self.quiet = quiet
        self.bar = None
        self.task = None
        self._show_bar = show_progress(quiet)
        self._start = time.perf_counter()
        self._start_step: int | None = None

    # The trainer calls these (duck-typed Callback).
    def on_step(self, trainer) -> None:
        if self._start_step is None:
            self._start_step = trainer.state.step - 1
        if not self._show_bar:
            return
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("step {task.completed}"), BarColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                console=stderr, transient=True,
            )
            self.bar.start()
            total = trainer.limits.max_steps
            self.task = self.bar.add_task("train", total=total, status="")
        self.bar.update(self.task, completed=trainer.state.step)

    def _eta(self, trainer) -> str:
        s, lim = trainer.state, trainer.limits
        done = s.step - (self._start_step or 0)
        spent = time.perf_counter() - self._start
        left = []
        if lim.max_steps and done > 0:
            left.append((lim.max_steps - s.step) * spent / done)
        if lim.max_time:
            left.append(max(0.0, lim.max_time - s.elapsed_s))
        return f"ETA {min(left):.0f}s" if left else ""

    def on_train_row(self, trainer, row: dict) -> None:
        line = (
            f"step {row['step']}: loss {row['loss']:.4f}, lr {row['lr']:.2e}, "
            f"{row['tokens_per_s']:,.0f} tok/s, {row['elapsed_s']:.0f}s {self._eta(trainer)}"
        )
        if self.bar is not None:
            self.bar.update(self.task, status=f"loss {row['loss']:.3f} "
                                              f"{row['tokens_per_s']:,.0f} tok/s")
        self._print(line.rstrip())

    def on_eval(self, trainer, row: dict) -> None:
        extra = ""
        if "val_perplexity" in row:
            extra = f", perplexity {row['val_perplexity']:.2f}"
        if "val_accuracy" in row:
            extra = f", masked accuracy {row['val_accuracy']:.3f}"
        self._print(f"eval step {row['step']}: val loss {row['val_loss']:.4f}{extra}")

    def on_save(self, trainer, state) -> None:
        pass

    def on_end(self, trainer, reason: str) -> None:
        self.close()

    def _print(self, line: str) -> None:
        if self.quiet:
            return
        console = self.bar.console if self.bar is not None else stderr
        console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

