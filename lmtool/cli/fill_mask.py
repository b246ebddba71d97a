"""`lmtool fill-mask`: a masked run's guesses for each [MASK] in a text."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import Device, OutputFormat, Precision, Quiet, formats, stderr
from lmtool.errors import EXIT_USAGE, BadInput, SomeSkipped
from lmtool.wording import count

TextFormat = formats("text", "jsonl")
HELP_EXAMPLES = (
    'lmtool fill-mask runs/mlm "The cat sat on the [MASK]."',
    'lmtool fill-mask runs/mlm "[MASK] is the capital of [MASK]." --top-k 3 --format jsonl',
    "lmtool fill-mask runs/mlm --file sentences.txt",
    "cat sentences.txt | lmtool fill-mask runs/mlm -",
)
SUMMARY = (
    "Guess the words behind [MASK] with a masked (BERT-style) run. Input: the argument, "
    "--file or stdin (-), one text per line, each with at least one [MASK]. Text output: "
    "the text with each [MASK] filled by the best guess, then one line per mask with "
    "the top-k candidates and their probabilities; jsonl: text, filled and masks "
    "(token, id, probability per candidate). A bad line of several is reported and "
    "skipped, and the exit code is then 3."
)


def fill_mask(
    run: Annotated[Path, typer.Argument(help="A masked run directory.")],
    text: Annotated[
        str | None, typer.Argument(help="Text with [MASK] tokens, or - for stdin.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read texts from this file.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates per mask.")] = 5,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
    format: TextFormat = "text",
) -> None:
    from lmtool.inference.fill_mask import fill_mask as run_fill_mask

    if (text is None) == (file is None):
        raise BadInput("give one text (or - for stdin) or --file")
    if file is not None:
        try:
            texts = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise BadInput(f"cannot read {file}: {e}") from None
    else:
        texts = sys.stdin.read().splitlines() if text == "-" else [text]
    many = len(texts) > 1 or text == "-" or file is not None
    failed = 0

    def report(index: int, error: BadInput) -> None:
        nonlocal failed
        failed += 1
        message = error.message.replace(f"input {index + 1}", f"line {index + 1}") if many \
            else error.message
        hint = f" ({error.hint})" if error.hint else ""
        stderr.print(f"lmtool: error: {message}{hint}" + ("; skipped" if many else ""),
                     markup=False)

    for result in run_fill_mask(run, texts, top_k=top_k, device=device, precision=precision,
                                on_error=report):
        if format == OutputFormat.jsonl:
            typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
            continue
        typer.echo(result.filled)
        for n, candidates in enumerate(result.masks, start=1):
            guesses = "  ".join(f"{c.token or repr(c.token)} {c.probability:.3f}"
                                for c in candidates)
            typer.echo(f"  [MASK] {n}: {guesses}")
    if failed and many:  # the others were written: exit 3, as for any input left out
        raise SomeSkipped(f"skipped {count(failed, 'text')}", "see the errors above")
    if failed:
        raise typer.Exit(EXIT_USAGE)
