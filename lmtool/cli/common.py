"""What every command shares: option aliases and stderr output (errors: cli/errors.py).

Options have the same name and meaning everywhere (DESIGN.md, CLI conventions); define
them here once and use them as `device: Device = "auto"` in a command's signature.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from lmtool.text.files import ENCODING_ERRORS
from lmtool.text.sources import DOCUMENT_MODES

# Logs, warnings, errors and progress go to stderr; stdout carries results only.
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    jsonl = "jsonl"
    tsv = "tsv"


def formats(*names: str) -> Any:
    """The --format option of a command that writes exactly these formats (the value is
    the name): `InfoFormat = formats("text", "json")`, then `format: InfoFormat = "text"`."""
    return Annotated[Literal[names], typer.Option(
        "--format", help=f"What stdout gets: {', '.join(names)}.")]


# Spelled out, not imported: lmtool.device loads torch, which --help must not (a test
# checks they equal lmtool.device.PRECISIONS).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "cuda:0", "mps")  # and any cuda:N


def _complete_device(incomplete: str) -> list[str]:
    return [d for d in DEVICES if d.startswith(incomplete)]


def _presets_help() -> str:
    """The presets' sizes, from the one table of them (models/config.py)."""
    from lmtool.models.config import PRESETS

    t, lstm = PRESETS["transformer"], PRESETS["lstm"]
    sizes = [f"{name}: {t[name]['layers']} layers x {t[name]['dim']} wide, {t[name]['heads']} "
             f"heads, context {t[name]['context']} (LSTM {lstm[name]['layers']} x "
             f"{lstm[name]['hidden']}, embedding {lstm[name]['dim']})" for name in t]
    return "Model size (default tiny). " + "; ".join(sizes) + "."


def _presets() -> tuple[str, ...]:
    from lmtool.models.config import PRESETS

    return tuple(PRESETS["transformer"])


Device = Annotated[str, typer.Option(
    "--device", metavar="<auto|cpu|cuda|cuda:N|mps>", autocompletion=_complete_device,
    help="Where to run: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps.")]
Precision = Annotated[Literal[PRECISIONS], typer.Option(
    "--precision", help="auto, fp32, bf16 or fp16 (autocast; fp16 on CUDA only).")]
Preset = Annotated[Literal[_presets()], typer.Option(
    "--preset", help=_presets_help(), rich_help_panel="Model", show_default=False)]
Seed = Annotated[int, typer.Option("--seed", help="Random seed, for reproducible runs.")]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Nothing on stderr but warnings and errors.")]
Force = Annotated[bool, typer.Option(
    "--force", help="Replace an earlier output of the same kind (never other files).")]
Output = Annotated[Path, typer.Option("--output", "-o", help="Where to write the result.")]
Format = formats("text", "json", "jsonl", "tsv")


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


def with_examples(summary: str, *examples: str) -> str:
    """A help text that ends with an Examples block Click prints verbatim (the \\b marker)."""
    lines = "\n".join(f"  {e}" for e in examples)
    return f"{summary}\n\n\b\nExamples:\n{lines}"


def show_progress(quiet: bool) -> bool:
    """Progress bars only when a person is watching stderr."""
    return not quiet and sys.stderr.isatty()


def info(message: str, quiet: bool = False) -> None:
    """A line of information for the person at the terminal (stderr)."""
    if not quiet:
        stderr.print(message, markup=False)


def warn(message: str) -> None:
    stderr.print(f"lmtool: warning: {message}", markup=False)
