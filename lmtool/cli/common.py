"""What every command shares: option aliases, error conversion, stdout/stderr handling.

Options have the same name and meaning everywhere (DESIGN.md, CLI conventions); define
them here once and use them as `device: Device = "auto"` in a command's signature.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from lmtool.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, LmtoolError
from lmtool.text.sources import DOCUMENT_MODES, ENCODING_ERRORS

# Logs, warnings, errors and progress go to stderr; stdout carries results only.
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    jsonl = "jsonl"
    tsv = "tsv"


Device = Annotated[
    str, typer.Option("--device", help="Where to run: auto, cpu, cuda, cuda:N or mps.")
]
Precision = Annotated[
    str,
    typer.Option("--precision", help="auto, fp32, bf16 or fp16 (autocast; fp16 on CUDA only)."),
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed, for reproducible runs.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or info on stderr.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
Output = Annotated[Path, typer.Option("--output", "-o", help="Where to write the result.")]
Format = Annotated[
    OutputFormat, typer.Option("--format", help="Output format on stdout: text, json, jsonl, tsv.")
]


def choices(name: str, values: Sequence[str]) -> type[Enum]:
    """A str Enum of the values a library module allows, for a Typer option: the list
    lives in one place (the library), and the CLI shows and checks the same one."""
    return Enum(name, {value: value for value in values}, type=str)


# Reading text: the same options wherever a command takes text sources.
DocumentMode = choices("DocumentMode", DOCUMENT_MODES)
EncodingErrors = choices("EncodingErrors", ENCODING_ERRORS)


Sources = Annotated[
    list[str],
    typer.Argument(
        metavar="SOURCES", help="Text files, directories (recursive), globs, or - for stdin."
    ),
]

Document = Annotated[
    DocumentMode,
    typer.Option(
        "--document",
        help="What one document is: paragraph (text between blank lines), line, or file.",
    ),
]
Errors = Annotated[
    EncodingErrors,
    typer.Option(
        "--encoding-errors",
        help="Invalid UTF-8: strict (stop with the file and byte offset), replace (with "
        "U+FFFD) or ignore (drop the bytes); replace and ignore report the counts.",
    ),
]


F = TypeVar("F", bound=Callable)


def with_examples(summary: str, *examples: str) -> str:
    """A help text that ends with an Examples block Click prints verbatim (the \\b marker)."""
    lines = "\n".join(f"  {e}" for e in examples)
    return f"{summary}\n\n\b\nExamples:\n{lines}"


def handle_errors(command: F) -> F:
    """Turn our errors, Ctrl-C and a closed stdout into one stderr line and an exit code.

    Put it under `@app.command()` on every command: CliRunner calls commands directly,
    so a wrapper around `main()` would not be seen by tests. LMTOOL_DEBUG=1 shows the
    traceback.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LmtoolError as e:
            _debug_traceback()
            hint = f" ({e.hint})" if e.hint else ""
            stderr.print(f"lmtool: error: {e.message}{hint}", markup=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _debug_traceback()
            stderr.print("lmtool: interrupted", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`lmtool ... | head`): stop quietly, as `cat` would.
            # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None

    return wrapper  # type: ignore[return-value]


def _debug_traceback() -> None:
    if os.environ.get("LMTOOL_DEBUG"):
        traceback.print_exc(file=sys.stderr)


def show_progress(quiet: bool) -> bool:
    """Progress bars only when a person is watching stderr."""
    return not quiet and sys.stderr.isatty()


def info(message: str, quiet: bool = False) -> None:
    """A line of information for the person at the terminal (stderr)."""
    if not quiet:
        stderr.print(message, markup=False)


def warn(message: str) -> None:
    stderr.print(f"lmtool: warning: {message}", markup=False)
