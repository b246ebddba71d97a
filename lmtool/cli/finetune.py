"""`lmtool finetune`: ULMFiT's fine-tuning stages (`lm` here; `classifier` joins it)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from lmtool.cli import finetune_classifier, finetune_seq2seq
from lmtool.cli.common import (
    Document,
    DocumentMode,
    EncodingErrors,
    Errors,
    warn,
    with_examples,
)
from lmtool.cli.options import (
    BaseRun,
    RunOptions,
    RunOutput,
    lm_flags,
    option,
    run_flags,
    run_options,
    with_blocks,
)
from lmtool.cli.progress import Reporter, describe
from lmtool.cli.run_report import report_run, result_line, run_summary

if TYPE_CHECKING:
    from lmtool.training.flags import TrainFlags

app = typer.Typer(
    help=with_examples(
        "Fine-tune a pre-trained run, as ULMFiT does: the language model on target text "
        "(lm), then a classifier (classifier); or an encoder–decoder on pairs (seq2seq).",
        "lmtool finetune lm runs/lm reviews/unlabelled.txt -o runs/lm-reviews",
        "lmtool finetune classifier runs/lm-reviews reviews/train.tsv -o runs/clf",
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)

LM_EXAMPLES = (
    "lmtool finetune lm runs/lm reviews/unlabelled.txt -o runs/lm-reviews",
    "lmtool finetune lm runs/lm reviews/train.tsv reviews/*.txt -o runs/lm-r --epochs 3",
    "cat notes/*.txt | lmtool finetune lm runs/awd - -o runs/awd-notes --max-steps 500",
    "lmtool finetune lm runs/lm data/ -o runs/lm2 --schedule cosine --discriminative 1",
    "lmtool finetune lm runs/lm reviews/unlabelled.txt -o runs/lm-reviews --resume",
    "lmtool finetune lm runs/lm reviews/unlabelled.txt -o runs/lm-r --format json | jq .after",
)
LM_SUMMARY = (
    "ULMFiT stage 2: fine-tune a language model run (causal or masked, Transformer or "
    "AWD-LSTM, forward or backward) on target-domain text: files, directories, globs or "
    "- (TSV/CSV/JSONL labelled files give their text column), or a shard directory made "
    "with the run's tokenizer. The run's tokenizer is kept; a tenth of the documents is "
    "held out and scored before and after (perplexity, or masked accuracy). Discriminative "
    "rates (each layer group's rate is the one above's / 2.6) and slanted triangular "
    "rates (cut 0.1, ratio 32) by default, over one epoch unless --epochs says otherwise "
    "(--max-steps and --max-time only cut it short, and the triangle then spans the steps "
    "they allow); the other settings are the base run's. RUN keeps the weights with the "
    "best held-out score (the base run's included) and warns when the end is worse than "
    "the start. "
    "--resume refuses a base run or text that changed. --format json prints the held-out "
    "figures before and after on stdout."
)


@with_blocks(flags=(run_flags, lm_flags), options=run_options)
def lm(
    run: BaseRun,
    sources: Annotated[list[str], typer.Argument(
        metavar="TEXT", help="Target text: files, directories, globs, - for stdin, or shards.")],
    output: RunOutput,
    dropout: Annotated[float | None, option(
        "--dropout", "Dropout (LSTM: multiplier) while fine-tuning (the base run's).")] = None,
    flags: TrainFlags = None,  # type: ignore[assignment]  # run_flags, lm_flags: with_blocks
    document: Document = DocumentMode.paragraph,
    encoding_errors: Errors = EncodingErrors.strict,
    options: RunOptions = None,  # type: ignore[assignment]  # run_options: with_blocks
) -> None:
    from dataclasses import replace

    from lmtool.training.finetune import finetune_lm

    format, quiet = options.format, options.quiet
    with Reporter(quiet) as reporter:
        result = finetune_lm(run, sources, output, overrides=replace(flags, dropout=dropout),
                             resume=options.resume, force=options.force,
                             document=document.value, encoding_errors=encoding_errors.value,
                             callbacks=[reporter])
    if not report_run(result, quiet) and format != "json":
        return
    for line in result.warnings if result.is_main else ():
        warn(line)
    if result.before and result.after:
        # "after" is the weights kept: the best held-out.
        kept = f" (step {result.kept_step}, the best)" if result.kept_step != result.step else ""
        result_line(f"held-out before: {describe(result.before)}", format, quiet)
        result_line(f"held-out after:  {describe(result.after)}{kept}", format, quiet)
    if format == "json" and result.is_main:
        typer.echo(json.dumps({**run_summary(result), "base": str(result.base_run),
                               "before": result.before, "after": result.after,
                               "kept_step": result.kept_step, "last": result.last,
                               "warnings": result.warnings}))


app.command("lm", help=with_examples(LM_SUMMARY, *LM_EXAMPLES))(lm)
app.command("classifier", help=with_examples(finetune_classifier.SUMMARY,
                                              *finetune_classifier.EXAMPLES))(
    finetune_classifier.classifier)
app.command("seq2seq", help=with_examples(finetune_seq2seq.SUMMARY,
                                           *finetune_seq2seq.EXAMPLES))(finetune_seq2seq.seq2seq)
