"""`lmtool finetune seq2seq`: an encoder–decoder run (e.g. one pre-trained by denoising)
trained further on source/target pairs (joined to `lmtool finetune` in finetune.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmtool.cli.options import (
    RunOptions,
    RunOutput,
    lm_flags,
    option,
    run_flags,
    run_options,
    with_blocks,
)
from lmtool.cli.progress import Reporter
from lmtool.cli.run_report import report_run, run_summary

if TYPE_CHECKING:
    from lmtool.training.flags import TrainFlags

EXAMPLES = (
    "lmtool finetune seq2seq runs/bart pairs.tsv -o runs/mt",
    "lmtool finetune seq2seq runs/bart --source train.de --target train.en -o runs/mt",
    "lmtool finetune seq2seq runs/bart pairs.tsv -o runs/mt --valid val.tsv --epochs 5",
)
SUMMARY = (
    "Train a sequence-to-sequence run further on source/target pairs, starting from its "
    "weights: typically one pre-trained with lmtool pretrain --objective denoising (BART's "
    "recipe), or one trained on other pairs. The model's shape and tokenizer are the base "
    "run's (only --dropout and --label-smoothing may change); the training settings are "
    "its preset's, under the flags. Pairs as for pretrain --objective seq2seq: a TSV, CSV "
    "or JSONL file, or --source FILE --target FILE; a twentieth held out unless --valid. "
    "--resume refuses a base run that changed."
)


@with_blocks(flags=(run_flags, lm_flags), options=run_options)
def seq2seq(
    run: Annotated[Path, typer.Argument(
        metavar="RUN", help="The sequence-to-sequence run to start from.")],
    pairs: Annotated[Path | None, typer.Argument(
        metavar="PAIRS", show_default=False,
        help="Source/target pairs (TSV, CSV or JSONL); or --source and --target.")] = None,
    output: RunOutput = ...,  # type: ignore[assignment]  # required (after optional PAIRS)
    dropout: Annotated[float | None, option(
        "--dropout", "Dropout while fine-tuning (the base run's).")] = None,
    label_smoothing: Annotated[float | None, option(
        "--label-smoothing", "Smooth the targets by this much (the base run's).")] = None,
    source: Annotated[Path | None, option(
        "--source", "Source sentences, one a line (with --target).", panel="Data")] = None,
    target: Annotated[Path | None, option(
        "--target", "Their targets, line for line.", panel="Data")] = None,
    valid: Annotated[Path | None, option(
        "--valid", "Held-out pairs (default: a twentieth of the pairs).", panel="Data")] = None,
    flags: TrainFlags = None,  # type: ignore[assignment]  # run_flags, lm_flags: with_blocks
    options: RunOptions = None,  # type: ignore[assignment]  # run_options: with_blocks
) -> None:
    from dataclasses import replace

    from lmtool.training.seq2seq import finetune_seq2seq

    with Reporter(options.quiet) as reporter:
        result = finetune_seq2seq(
            run, pairs, output, source=source, target=target, valid=valid,
            label_smoothing=label_smoothing, overrides=replace(flags, dropout=dropout),
            resume=options.resume, force=options.force, callbacks=[reporter])
    report_run(result, options.quiet)
    if options.format == "json" and result.is_main:
        typer.echo(json.dumps({**run_summary(result), "base": str(run)}))
