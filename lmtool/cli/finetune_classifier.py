"""`lmtool finetune classifier`: ULMFiT stage 3 (joined to `lmtool finetune` in finetune.py)."""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from lmtool.cli.common import EncodingErrors, Errors, warn
from lmtool.cli.options import (
    BaseRun,
    RunOptions,
    RunOutput,
    option,
    run_flags,
    run_options,
    with_blocks,
)
from lmtool.cli.progress import Reporter
from lmtool.cli.run_report import result_line

if TYPE_CHECKING:
    from lmtool.training.flags import TrainFlags

EXAMPLES = (
    "lmtool finetune classifier runs/lm-reviews reviews/train.tsv -o runs/clf",
    "lmtool finetune classifier runs/awd data/train.jsonl -o runs/clf --valid data/dev.jsonl",
    "lmtool finetune classifier runs/awd-bwd docs/ -o runs/clf-bwd --class-weights auto",
    "lmtool finetune classifier runs/lm reviews/train.tsv -o runs/clf --resume --epochs 8",
    "lmtool finetune classifier runs/lm big.tsv -o runs/clf --unfreeze-every 0.5",
    "lmtool finetune classifier runs/lm reviews/train.tsv -o runs/clf0 --from-scratch",
    "lmtool finetune classifier runs/lm train.tsv -o runs/clf --format json | jq .best",
)
SUMMARY = (
    "ULMFiT stage 3: train a classifier from a language model run (any that pretrain or "
    "finetune lm makes) on labelled documents: TSV or CSV with label and text columns, "
    "JSONL with label and text fields, or a directory with one sub-directory per class. "
    "A new concat-pooling head, trained in a plan of stages printed at the start: the head "
    "alone, then one more layer group each stage, each stage one epoch (or 100 steps when "
    "an epoch is shorter) and its own slanted triangular cycle at its own peak (--lr 2e-2, "
    "then halving; the last stage, every group at --lr/20, twice as long); discriminative "
    "rates (/2.6 per group). --epochs and "
    "--max-steps compress the plan so that every group trains. A tenth of "
    "the data is held out unless --valid is given; loss, accuracy and macro-F1 are printed "
    "after every epoch and the best epoch is the one kept (--format json: its figures, "
    "the labels and every epoch's on stdout). --from-scratch trains the same classifier "
    "from random weights (every group from the start, one stage), to show what "
    "pre-training is worth."
)


class ClassWeights(str, Enum):
    none = "none"
    auto = "auto"


@with_blocks(flags=run_flags, options=run_options)
def classifier(
    run: BaseRun,
    labelled: Annotated[str, typer.Argument(
        metavar="LABELLED", help="Labelled documents: .tsv, .csv, .jsonl, a folder per "
        "class, or - for stdin.")],
    output: RunOutput,
    valid: Annotated[str | None, option(
        "--valid", "Labelled documents to validate on (default: a tenth of LABELLED).",
        "Data")] = None,
    class_weights: Annotated[ClassWeights, option(
        "--class-weights", "auto: weigh each class by n / (classes x its count) in the loss, "
        "for imbalanced data (none).", "Data")] = ClassWeights.none,
    max_tokens: Annotated[int, option(
        "--max-tokens", "Tokens of a document read at most, its last (1440).", "Data")] = 1440,
    from_scratch: Annotated[bool, option(
        "--from-scratch", "Start from random weights: RUN gives only the architecture and "
        "tokenizer (a baseline).", "Data")] = False,
    unfreeze_every: Annotated[float | None, option(
        "--unfreeze-every", "Epochs of a stage of the plan (1, or 100 steps when an epoch is "
        "shorter; the last stage twice that; "
        "0: one stage, all groups train from the start). Sets the default --epochs: one "
        "stage per group.")] = None,
    dropout: Annotated[float | None, option(
        "--dropout", "Dropout (LSTM: multiplier of the classifier's dropouts) (the base "
        "run's).")] = None,
    ar: Annotated[float | None, option(
        "--ar", "LSTM: activation regularisation alpha on the encoder's outputs (the base "
        "run's, 2).")] = None,
    tar: Annotated[float | None, option(
        "--tar", "LSTM: temporal AR beta (the base run's, 1).")] = None,
    flags: TrainFlags = None,  # type: ignore[assignment]  # run_flags: with_blocks
    encoding_errors: Errors = EncodingErrors.strict,
    options: RunOptions = None,  # type: ignore[assignment]  # run_options: with_blocks
) -> None:
    from dataclasses import replace

    from lmtool.training.classifier import finetune_classifier

    format, quiet = options.format, options.quiet
    flags = replace(flags, dropout=dropout, ar=ar, tar=tar, unfreeze_every=unfreeze_every,
                    unfreeze_start=0 if unfreeze_every == 0 else None)  # 0: none gradual
    with EpochReporter(quiet) as reporter:
        result = finetune_classifier(
            run, labelled, output, valid=valid, overrides=flags,
            class_weights_mode=class_weights.value, max_tokens=max_tokens,
            from_scratch=from_scratch, resume=options.resume, force=options.force,
            encoding_errors=encoding_errors.value, callbacks=[reporter])
    if not result.is_main:
        return
    for line in result.warnings:
        warn(line)
    best = result.best or {}
    if best:
        of = f" of {epoch_count(result.epochs)}" if result.epochs else ""
        line = (f"{result.run_dir}: best epoch {epoch_count(best['epoch'])}{of}: "
                f"val accuracy {best['val_accuracy']:.4f}, macro-F1 "
                f"{best['val_macro_f1']:.4f} ({result.train_documents:,} training / "
                f"{result.valid_documents:,} held-out documents, {result.elapsed_s:.0f}s)")
        result_line(line, format, quiet)
    if format == "json":
        typer.echo(json.dumps({"run": str(result.run_dir), "base": str(result.base_run),
                               "labels": result.labels, "best": best,
                               "history": result.history}))


class EpochReporter(Reporter):
    """The training progress bar on a terminal, and one line per epoch on stderr:
    the mean training loss of the epoch, the held-out loss, accuracy and macro-F1."""

    def __init__(self, quiet: bool):
        super().__init__(quiet)
        self.losses: list[float] = []

    def on_start(self, trainer) -> None:
        """The plan of stages, before the first step, with how the limits compressed
        it; what they leave frozen as warnings (shown with --quiet too)."""
        plan = trainer.stages
        if plan is None:
            return
        for line in plan.warnings:
            warn(line)
        lines = plan.describe(trainer.groups, trainer.limits.steps_per_epoch)
        self._print(f"plan: {len(lines)} stage(s) of {plan.total} steps, each a "
                    f"{plan.schedule} cycle; each layer group below the top at its "
                    f"rate / {trainer.config.discriminative:g}")
        end = trainer.limits.max_steps
        if end is not None and end > plan.total:  # a resumed run given a longer limit
            lines.append(f"steps {plan.total + 1}-{end}: after the plan, at its last rate")
        for line in [*plan.notes, *lines]:
            self._print("  " + line)

    def on_train_row(self, trainer, row: dict) -> None:
        self.losses.append(row["loss"])
        if self.bar is not None:
            self.bar.update(self.task, status=f"loss {row['loss']:.3f}")

    def on_eval(self, trainer, row: dict) -> None:
        epochs = trainer.limits.max_steps / trainer.limits.steps_per_epoch if (
            trainer.limits.max_steps) else None
        of = f"/{epoch_count(epochs)}" if epochs else ""
        train = (f"train loss {sum(self.losses) / len(self.losses):.4f}, "
                 if self.losses else "")
        self.losses = []
        groups = f"{row['trainable_groups']}/{trainer.groups} layer groups"
        epoch = epoch_count(row["epoch"])
        self._print(f"epoch {epoch}{of}: {train}val loss {row['val_loss']:.4f}, "
                    f"accuracy {row['val_accuracy']:.4f}, macro-F1 {row['val_macro_f1']:.4f} "
                    f"({groups}, {row['elapsed_s']:.0f}s)")


def epoch_count(epochs: float) -> str:
    """Epochs as a person reads them: 3, 2.5, 0.53 (a run cut short by --max-steps ends
    part-way through one; more digits than two say nothing)."""
    return f"{round(epochs, 2):g}"
