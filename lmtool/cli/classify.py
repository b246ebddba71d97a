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
    "cat questions.txt | lmtool classify runs/clf - --per-line --format label | sort | uniq -c",
    "cat questions.txt | lmtool classify runs/clf - --per-line --format tsv",
    "lmtool classify runs/clf docs/ --format jsonl --top-k 2 --threshold 0.7",
    "lmtool classify runs/clf-fwd --ensemble runs/clf-bwd reviews/ > labels.txt",
)
SUMMARY = (
    "Classify documents with a classifier from `lmtool finetune classifier`: one per "
    "file (files, directories, globs, or - for stdin), or one per line with --per-line. "
    "Prints one result per document, in input order: source, label, probability "
    "(text), every class's probability (--format jsonl or tsv), or the label alone "
    "(--format label). An empty document gets no label (-), as one below --threshold "
    "does. A binary or unreadable file is reported and skipped, and the exit code is "
    "then 3."
)
ABSTAIN = "-"  # the label printed for none: below --threshold, or an empty document


ClassifyFormat = formats("text", "jsonl", "tsv", "label")  # a stream: one row per document


def _opt(flag: str, help: str):
    return typer.Option(flag, help=help, show_default=False)


def classify(
    run: Annotated[Path, typer.Argument(help="A classifier run directory.", metavar="CLF")],
    sources: Annotated[list[str], typer.Argument(
        metavar="SOURCES", help="Files, directories (recursive), globs, or - for stdin.")],
    per_line: Annotated[bool, _opt("--per-line", "Each line is a document (an empty one "
                                   f"too: its row has no label, {ABSTAIN}).")] = False,
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
    from lmtool.inference.classify import classify_sources, load_scorer
    from lmtool.text.documents import SkipReport

    if top_k < 1:
        raise BadInput("--top-k must be at least 1")
    if top_k > 1 and format == "label":
        raise BadInput("--format label prints one label a document, not --top-k "
                       f"{top_k}", "use --format text, jsonl or tsv")
    scorer = load_scorer(run, ensemble=ensemble or [], batch_size=batch_size, device=device,
                         precision=precision)
    report = SkipReport()
    progress = _Progress(show_progress(quiet))
    predictions = classify_sources(
        scorer, sources, per_line=per_line, encoding_errors=encoding_errors.value,
        report=report, threshold=threshold, progress=progress.update,
    )
    if format == "tsv":  # even for no document: the columns say what the classes are
        typer.echo("\t".join(["source", "label", "probability", *scorer.labels, "empty",
                              "truncated"]))
    empty: list[str] = []
    truncated = 0
    try:
        for p in predictions:
            typer.echo(_render(p, format, top_k))
            if p.empty:
                empty.append(p.source)
            truncated += p.truncated
    finally:
        progress.close()
    if not quiet:
        if empty:
            warn(f"no label ({ABSTAIN}) for {count(len(empty), 'empty document')}: "
                 + ", ".join(empty[:3]) + (" ..." if len(empty) > 3 else ""))
        if truncated:
            warn(f"classified the beginning of {count(truncated, 'document')} longer than the "
                 "classifier reads")
    for line in report.warnings():
        warn(line)
    if report.skipped:
        raise SomeSkipped(f"skipped {count(len(report.skipped), 'input')}",
                          "see the warnings above")


def _render(p, format: str, top_k: int) -> str:
    label = p.label if p.label is not None else ABSTAIN
    if format == "label":
        return label
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
