"""`lmtool classify`: label files, directories or stdin with a trained classifier."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import (
    Device,
    EncodingErrors,
    OutputFormat,
    Precision,
    Quiet,
    formats,
    show_progress,
    stderr,
    warn,
)
from lmtool.wording import count

HELP_EXAMPLES = (
    "lmtool classify runs/clf inbox/*.txt > labels.txt",
    "cat questions.txt | lmtool classify runs/clf - --per-line --format tsv",
    "lmtool classify runs/clf docs/ --format jsonl --top-k 2 --threshold 0.7",
    "lmtool classify runs/clf-fwd --ensemble runs/clf-bwd reviews/ > labels.txt",
)
SUMMARY = (
    "Classify documents with a classifier from `lmtool finetune classifier`: one per "
    "file (files, directories, globs, or - for stdin), or one per line with --per-line. "
    "Prints one result per document, in input order: source, label, probability "
    "(text), every class's probability (--format jsonl or tsv). A binary or unreadable "
    "file is reported and skipped, and the exit code is then 3."
)
ABSTAIN = "-"  # the label printed when --threshold abstains


ClassifyFormat = formats("text", "jsonl", "tsv")  # a stream: one result per document


def _opt(flag: str, help: str):
    return typer.Option(flag, help=help, show_default=False)


def classify(
    run: Annotated[Path, typer.Argument(help="A classifier run directory.", metavar="CLF")],
    sources: Annotated[list[str], typer.Argument(
        metavar="SOURCES", help="Files, directories (recursive), globs, or - for stdin.")],
    per_line: Annotated[bool, _opt("--per-line", "Each line is a document (an empty one "
                                   "too: it is classified and flagged).")] = False,
    format: ClassifyFormat = "text",
    top_k: Annotated[int, _opt("--top-k", "Show the k most probable labels (1).")] = 1,
    threshold: Annotated[float | None, _opt(
        "--threshold", f"Abstain (label {ABSTAIN}) when the best probability is below P.")
    ] = None,
    ensemble: Annotated[list[Path] | None, _opt(
        "--ensemble", "Average with this classifier's probabilities (repeatable; e.g. the "
        "backward one). Labels must match.")] = None,
    batch_size: Annotated[int, _opt("--batch-size", "Documents per batch (64).")] = 64,
    encoding_errors: Annotated[EncodingErrors, typer.Option(
        "--encoding-errors", help="Invalid UTF-8: strict (report the file and skip it), "
        "replace (with U+FFFD) or ignore (drop the bytes).")] = EncodingErrors.strict,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
) -> None:
    from lmtool.errors import BadInput, SomeSkipped
    from lmtool.inference.classify import SkipReport, classify_sources

    if top_k < 1:
        raise BadInput("--top-k must be at least 1")
    report = SkipReport()
    progress = _Progress(show_progress(quiet))
    predictions = classify_sources(
        run, sources, per_line=per_line, encoding_errors=encoding_errors.value,
        report=report, ensemble=ensemble or [], threshold=threshold, batch_size=batch_size,
        device=device, precision=precision, progress=progress.update,
    )
    empty: list[str] = []
    truncated = 0
    try:
        for i, p in enumerate(predictions):
            if i == 0 and format == OutputFormat.tsv:
                typer.echo("\t".join(["source", "label", "probability", *p.labels,
                                      "empty", "truncated"]))
            typer.echo(_render(p, format, top_k))
            if p.empty:
                empty.append(p.source)
            truncated += p.truncated
    finally:
        progress.close()
    if not quiet:
        if empty:
            warn(f"classified {count(len(empty), 'empty document')}: " + ", ".join(empty[:3])
                 + (" ..." if len(empty) > 3 else ""))
        if truncated:
            warn(f"classified the beginning of {count(truncated, 'document')} longer than the "
                 "classifier reads")
    for line in report.warnings():
        warn(line)
    if report.skipped:
        raise SomeSkipped(f"skipped {count(len(report.skipped), 'input')}",
                          "see the warnings above")


def _render(p, format: OutputFormat, top_k: int) -> str:
    label = p.label if p.label is not None else ABSTAIN
    if format == OutputFormat.jsonl:
        row = {"source": p.source, "label": p.label, "probability": p.probability,
               "probabilities": dict(zip(p.labels, p.probabilities.tolist(), strict=True))}
        if top_k > 1:
            row["top"] = [{"label": name, "probability": q} for name, q in p.top(top_k)]
        row.update(tokens=p.tokens, empty=p.empty, truncated=p.truncated)
        return json.dumps(row, ensure_ascii=False)
    source = p.source.replace("\t", " ").replace("\n", " ")
    if format == OutputFormat.tsv:
        return "\t".join([source, label, f"{p.probability:.6f}",
                          *(f"{q:.6f}" for q in p.probabilities), str(int(p.empty)),
                          str(int(p.truncated))])
    fields = [source, label, f"{p.probability:.4f}"]
    for name, q in p.top(top_k)[1:]:
        fields += [name, f"{q:.4f}"]
    return "\t".join(fields)


class _Progress:
    """Documents done and documents/s on stderr when it is a terminal; else nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._status = None
        self._start = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        rate = done / max(time.perf_counter() - self._start, 1e-9)
        text = f"classified {count(done, 'document')} ({rate:,.0f}/s)"
        if self._status is None:
            self._status = stderr.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()


# --- `lmtool evaluate CLF LABELLED` (the command lives in cli/evaluate.py) -------------------


def evaluate_classifier(run: Path, sources: list[str], *, ensemble: list[Path], batch_size: int,
                        encoding_errors: str, device: str, precision: str,
                        format: OutputFormat) -> None:
    """Score a classifier on a labelled source and print accuracy, macro-F1, per-class
    precision/recall/F1 and the confusion matrix."""
    from lmtool.errors import BadInput
    from lmtool.inference.classify import evaluate_classifier as run_evaluation
    from lmtool.text.labelled import LabelledReport

    if len(sources) != 1:
        raise BadInput(f"a classifier is evaluated on one labelled source, not {len(sources)}",
                       "pass one TSV, CSV or JSONL file, a folder per class, or -")
    report = LabelledReport()
    result = run_evaluation(run, sources[0], ensemble=ensemble, batch_size=batch_size,
                            encoding_errors=encoding_errors, device=device,
                            precision=precision, report=report)
    for line in report.warnings():
        warn(line)
    for name, n in result["unseen_labels"].items():
        warn(f"label {name!r} ({count(n, 'example')}) is not one the classifier knows: "
             "counted as wrong")
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
