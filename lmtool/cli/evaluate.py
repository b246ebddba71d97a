"""`lmtool evaluate`: perplexity (causal) or masked-token loss/accuracy of a run."""

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
    Format,
    OutputFormat,
    Precision,
    Seed,
)

HELP_EXAMPLES = (
    "lmtool evaluate runs/lm data/",
    "lmtool evaluate runs/lm held_out/*.txt --format json",
    "cat notes.txt | lmtool evaluate runs/mlm - --seed 1",
)
SUMMARY = (
    "Score a run on text (files, directories, globs or - for stdin, tokenized with the "
    "run's own tokenizer) or on a shard directory (its validation split by default). "
    "Prints perplexity for a causal model, masked-token loss and accuracy for a masked one."
)


class Split(str, Enum):
    train = "train"
    val = "val"


def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory from lmtool pretrain.")],
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
    format: Format = OutputFormat.text,
) -> None:
    from lmtool.training.evaluate import evaluate as run_evaluate

    result = run_evaluate(
        run, sources, split=split.value, seed=seed, batch_size=batch_size,
        device=device, precision=precision, document=document.value,
        encoding_errors=encoding_errors.value,
    )
    if format in (OutputFormat.json, OutputFormat.jsonl):
        typer.echo(json.dumps(result))
    elif format == OutputFormat.tsv:
        typer.echo("\t".join(result))
        typer.echo("\t".join(str(v) for v in result.values()))
    elif "perplexity" in result:
        typer.echo(f"loss {result['loss']:.4f}  perplexity {result['perplexity']:.3f}  "
                   f"({result['tokens']:,} tokens)")
    else:
        typer.echo(f"masked loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f}  "
                   f"({result['tokens']:,} masked tokens)")
