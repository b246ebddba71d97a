"""`lmtool evaluate`: perplexity (causal) or masked-token loss/accuracy of a run; accuracy,
macro-F1, per-class scores and the confusion matrix of a classifier."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import (
    Device,
    Document,
    DocumentMode,
    EncodingErrors,
    Errors,
    Force,
    Format,
    OutputFormat,
    Precision,
    Quiet,
    Seed,
    warn,
)
from lmtool.errors import BadInput
from lmtool.wording import count

HELP_EXAMPLES = (
    "lmtool evaluate runs/lm data/",
    "lmtool evaluate runs/lm held_out/*.txt --format json",
    "cat notes.txt | lmtool evaluate runs/mlm - --seed 1",
    "lmtool evaluate runs/clf reviews/test.tsv --format json | jq .macro_f1",
    "lmtool evaluate runs/mt test.tsv --beams 5 --format json",
)
SUMMARY = (
    "Score a run on text (files, directories, globs or - for stdin, tokenized with the "
    "run's own tokenizer; of a TSV, CSV or JSONL labelled file the text column, as "
    "finetune lm reads it) or on a shard directory (its validation split by default). "
    "Prints perplexity for a causal model, masked-token loss and accuracy for a masked one. "
    "A classifier is scored on one labelled source (TSV/CSV with label and text columns, "
    "JSONL, or a folder per class): accuracy, macro-F1, per-class precision/recall/F1 and "
    "the confusion matrix (--format json: keys accuracy, macro_f1, per_class, confusion); "
    "a source with none of the classifier's labels is refused. "
    "A sequence-to-sequence run is scored on one pairs file (TSV, CSV or JSONL with "
    "source and target columns): teacher-forced loss and perplexity of the references, "
    "then BLEU and chrF of its outputs (greedy, or --beams N) by sacrebleu, whose "
    "signatures are printed beside them (--format json: loss, perplexity, bleu, chrf, "
    "bleu_signature, chrf_signature, ...)."
)


class Split(str, Enum):
    train = "train"
    val = "val"


def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory (language model or classifier).")],
    sources: Annotated[
        list[str], typer.Argument(help="A shard directory, or text files, dirs, globs or -.")
    ],
    split: Annotated[Split, typer.Option("--split", help="Shard split to score.")] = Split.val,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per batch.")] = 16,
    document: Document = DocumentMode.paragraph,
    encoding_errors: Errors = EncodingErrors.strict,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    format: Format = "text",
    ensemble: Annotated[list[Path] | None, typer.Option(
        "--ensemble", help="Classifiers: average with this one's probabilities (repeatable).",
        show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Classifiers: also draw the confusion matrix to this .png, .svg or "
                       ".pdf (rows normalised, counts in the cells; needs lmtool[plot]).",
        show_default=False)] = None,
    force: Force = False,
    beams: Annotated[int, typer.Option(
        "--beams", help="Sequence to sequence: beam search with N beams (1: greedy).")] = 1,
    length_penalty: Annotated[float | None, typer.Option(
        "--length-penalty", help="Beam score = log-prob / length ** this (1.0).",
        show_default=False)] = None,
    quiet: Quiet = False,
) -> None:
    from lmtool.checkpoint import read_run_config, run_task
    from lmtool.text.sources import ReadReport
    from lmtool.training.evaluate import evaluate as run_evaluate

    task = run_task(read_run_config(run))
    if task == "seq2seq":
        return _evaluate_seq2seq(run, sources, beams=beams, length_penalty=length_penalty,
                                 batch_size=batch_size, device=device, precision=precision,
                                 format=format)
    if beams != 1 or length_penalty is not None:
        raise BadInput("--beams and --length-penalty are for sequence-to-sequence runs",
                       f"{run} is a {'classifier' if task == 'classifier' else 'language model'}")
    if task == "lm":
        _refuse_pairs(run, sources)
    if task == "classifier":
        if plot is not None:
            from lmtool.plots.files import check_picture

            check_picture(plot, force=force)  # before scoring anything
        return _evaluate_classifier(
            run, sources, ensemble=ensemble or [], batch_size=batch_size,
            encoding_errors=encoding_errors.value, device=device, precision=precision,
            format=format, plot=plot, force=force)
    if ensemble:
        raise BadInput("--ensemble is for classifiers", f"{run} is a language model")
    if plot is not None:
        raise BadInput("--plot draws a classifier's confusion matrix", f"{run} is a language "
                       "model; lmtool plot draws its curves")
    report = ReadReport()
    result = run_evaluate(
        run, sources, split=split.value, seed=seed, batch_size=batch_size,
        device=device, precision=precision, document=document.value,
        encoding_errors=encoding_errors.value, report=report,
    )
    for line in report.warnings(encoding_errors.value):
        warn(line)
    if format in ("json", "jsonl"):
        typer.echo(json.dumps(result))
    elif format == "tsv":
        typer.echo("\t".join(result))
        typer.echo("\t".join(str(v) for v in result.values()))
    elif "perplexity" in result:
        typer.echo(f"loss {result['loss']:.4f}  perplexity {result['perplexity']:.3f}  "
                   f"({count(result['tokens'], 'token')})")
    else:
        typer.echo(f"masked loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f}  "
                   f"({count(result['tokens'], 'masked token')})")


def _refuse_pairs(run: Path, sources: list[str]) -> None:
    """A file of source/target pairs given to a language model: say what fits."""
    from lmtool.text.pairs import looks_like_pairs

    for source in sources:
        if source != "-" and looks_like_pairs(source):
            raise BadInput(f"{source} holds source/target pairs, and {run} is a language model",
                           "score pairs with a sequence-to-sequence run (pretrain "
                           "--objective seq2seq)")


def _evaluate_seq2seq(run: Path, sources: list[str], *, beams: int,
                      length_penalty: float | None, batch_size: int, device: str,
                      precision: str, format: OutputFormat) -> None:
    """Loss and perplexity of the references, BLEU and chrF of the outputs."""
    from lmtool.inference.evaluate_seq2seq import evaluate_seq2seq

    if len(sources) != 1:
        raise BadInput(f"a sequence-to-sequence run is scored on one file of pairs, not "
                       f"{len(sources)}", "pass one TSV, CSV or JSONL file")
    result = evaluate_seq2seq(run, sources[0], beams=beams, length_penalty=length_penalty,
                              batch_size=batch_size, device=device, precision=precision)
    if format in (OutputFormat.json, OutputFormat.jsonl):
        typer.echo(json.dumps(result, indent=2 if format == OutputFormat.json else None))
    elif format == OutputFormat.tsv:
        typer.echo("\t".join(result))
        typer.echo("\t".join(str(v) for v in result.values()))
    else:
        search = f"beam search ({beams})" if beams > 1 else "greedy"
        typer.echo(f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ({search}, "
                   f"{count(result['pairs'], 'pair')})")
        typer.echo(f"loss {result['loss']:.4f}  perplexity {result['perplexity']:.3f}  "
                   f"({count(result['tokens'], 'target token')})")
        typer.echo(f"BLEU signature: {result['bleu_signature']}")
        typer.echo(f"chrF signature: {result['chrf_signature']}")


def _evaluate_classifier(run: Path, sources: list[str], *, ensemble: list[Path], batch_size: int,
                         encoding_errors: str, device: str, precision: str,
                         format: OutputFormat, plot: Path | None, force: bool) -> None:
    """Score a classifier on a labelled source and print accuracy, macro-F1, per-class
    precision/recall/F1 and the confusion matrix."""
    from lmtool.inference.evaluate import evaluate_classifier
    from lmtool.text.labelled import LabelledReport

    if len(sources) != 1:
        raise BadInput(f"a classifier is evaluated on one labelled source, not {len(sources)}",
                       "pass one TSV, CSV or JSONL file, a folder per class, or -")
    report = LabelledReport()
    result = evaluate_classifier(run, sources[0], ensemble=ensemble, batch_size=batch_size,
                                 encoding_errors=encoding_errors, device=device,
                                 precision=precision, report=report)
    for line in report.warnings():
        warn(line)
    for name, n in result["unseen_labels"].items():
        warn(f"label {name!r} ({count(n, 'example')}) is not one the classifier knows: "
             "counted as wrong")
    if plot is not None:  # first: a reader closing stdout early (| head) must not stop it
        from lmtool.plots.files import save_figure
        from lmtool.plots.heatmap import confusion_figure

        confusion = result["confusion"]
        save_figure(confusion_figure(confusion["labels"], confusion["matrix"],
                                     title=f"{run}: accuracy {result['accuracy']:.3f}"),
                    plot, force=force)
    if format in (OutputFormat.json, OutputFormat.jsonl):
        typer.echo(json.dumps(result, indent=2 if format == OutputFormat.json else None))
    elif format == OutputFormat.tsv:
        typer.echo("label\tprecision\trecall\tf1\tsupport")
        for name, c in result["per_class"].items():
            typer.echo(f"{name}\t{c['precision']:.6f}\t{c['recall']:.6f}\t{c['f1']:.6f}\t"
                       f"{c['support']}")
    else:
        _print_evaluation(result)


def _print_evaluation(result: dict) -> None:
    """Rich tables on a terminal; the same as aligned plain text in a pipe."""
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty()
    console = Console(highlight=False, no_color=not tty, width=None if tty else 200)
    style = box.SIMPLE_HEAD if tty else None
    console.print(f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   "
                  f"({count(result['examples'], 'example')})")
    per_class = Table("label", "precision", "recall", "F1", "support", box=style,
                      pad_edge=False)
    for name, c in result["per_class"].items():
        per_class.add_row(name, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
                          f"{c['support']:,}")
    console.print(per_class)
    names = result["confusion"]["labels"]
    confusion = Table("true \\ predicted", *names, box=style, pad_edge=False)
    for name, row in zip(names, result["confusion"]["matrix"], strict=True):
        confusion.add_row(name, *(f"{n:,}" for n in row))
    console.print(confusion)
