"""`lmtool finetune`: ULMFiT's fine-tuning stages (`lm` here; `classifier` joins it)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lmtool.cli import finetune_classifier
from lmtool.cli.common import (
    Device,
    Document,
    DocumentMode,
    EncodingErrors,
    Errors,
    Force,
    Precision,
    Quiet,
    info,
    with_examples,
)
from lmtool.cli.options import (
    BaseRun,
    BatchSize,
    Compile,
    Discriminative,
    Epochs,
    EvalBatches,
    EvalEvery,
    GradAccum,
    GradClip,
    LogEvery,
    Lr,
    MaxSteps,
    MaxTime,
    OldJson,
    Resume,
    RunFormat,
    RunOutput,
    SaveEvery,
    ScheduleFlag,
    Stateful,
    TrainSeed,
    Warmup,
    WeightDecay,
    option,
    overrides,
)
from lmtool.cli.pretrain import report_run
from lmtool.cli.progress import Reporter, describe

app = typer.Typer(
    help=with_examples(
        "Fine-tune a pre-trained run, as ULMFiT does: the language model on target text "
        "(lm), then a classifier (classifier).",
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
    "rates (cut 0.1, ratio 32) by default; the other settings are the base run's. "
    "--resume refuses a base run or text that changed. --format json prints the held-out "
    "figures before and after on stdout."
)


def lm(
    run: BaseRun,
    sources: Annotated[list[str], typer.Argument(
        metavar="TEXT", help="Target text: files, directories, globs, - for stdin, or shards.")],
    output: RunOutput,
    batch_size: BatchSize = None,
    lr: Lr = None,
    weight_decay: WeightDecay = None,
    warmup: Warmup = None,
    schedule: ScheduleFlag = None,
    discriminative: Discriminative = None,
    dropout: Annotated[float | None, option(
        "--dropout", "Dropout (LSTM: multiplier) while fine-tuning (the base run's).")] = None,
    grad_accum: GradAccum = None,
    grad_clip: GradClip = None,
    max_steps: MaxSteps = None,
    max_time: MaxTime = None,
    epochs: Epochs = None,
    eval_every: EvalEvery = None,
    eval_batches: EvalBatches = None,
    save_every: SaveEvery = None,
    log_every: LogEvery = None,
    seed: TrainSeed = None,
    stateful: Stateful = None,
    document: Document = DocumentMode.paragraph,
    encoding_errors: Errors = EncodingErrors.strict,
    device: Device = None,
    precision: Precision = None,
    compile: Compile = None,
    resume: Resume = False,
    force: Force = False,
    quiet: Quiet = False,
    format: RunFormat = "text",
    json_flag: OldJson = False,
) -> None:
    from lmtool.training.finetune import finetune_lm

    given = overrides(locals())
    format = "json" if json_flag else format
    with Reporter(quiet) as reporter:
        result = finetune_lm(run, sources, output, overrides=given, resume=resume, force=force,
                             document=document.value, encoding_errors=encoding_errors.value,
                             callbacks=[reporter])
    if not report_run(result, quiet) and format != "json":
        return
    if result.before and result.after:
        info(f"held-out before: {describe(result.before)}", quiet)
        info(f"held-out after:  {describe(result.after)}", quiet)
    if format == "json" and result.is_main:
        typer.echo(json.dumps({"run": str(result.run_dir), "base": str(result.base_run),
                               "steps": result.step, "before": result.before,
                               "after": result.after}))


app.command("lm", help=with_examples(LM_SUMMARY, *LM_EXAMPLES))(lm)
app.command("classifier", help=with_examples(finetune_classifier.SUMMARY,
                                              *finetune_classifier.EXAMPLES))(
    finetune_classifier.classifier)
