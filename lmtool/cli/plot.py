"""`lmtool plot`: runs' training curves, in the terminal or to a file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Literal

import typer

from lmtool.cli.common import Force, Quiet, info
from lmtool.errors import BadInput

HELP_EXAMPLES = (
    "lmtool plot runs/lm",
    "lmtool plot runs/stateful runs/stateless --x tokens -o curves.png",
    "lmtool plot runs/clf --no-smooth -o clf.svg",
)
SUMMARY = (
    "Draw runs' training and validation loss (and validation accuracy and the learning "
    "rate, when logged) against steps, tokens or time, several runs overlaid and named "
    "in the legend: in the terminal, or to a PNG, SVG or PDF file with -o (the format "
    "from the suffix). A run still training is drawn as far as its metrics.jsonl goes. "
    "Files need the plot extra: pip install 'lmtool[plot]'."
)

XAxis = Annotated[Literal["step", "tokens", "time"], typer.Option(
    "--x", help="What the x axis counts: optimiser steps, tokens seen or seconds.")]
Smooth = Annotated[float, typer.Option(
    "--smooth", help="Weight of the moving average drawn over the training loss (0 to "
                     "<1; the raw values stay faint behind it).")]
NoSmooth = Annotated[bool, typer.Option("--no-smooth", help="Draw the training loss as "
                                                            "logged, unsmoothed.")]
PictureOutput = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write a picture: .png, .svg or .pdf.", show_default=False)]


def terminal_size(fallback: tuple[int, int] = (100, 30)) -> tuple[int, int]:
    size = shutil.get_terminal_size(fallback)
    return size.columns, size.lines


def plot(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN", help="Run directories.")],
    x: XAxis = "step",
    smooth: Smooth = 0.6,
    no_smooth: NoSmooth = False,
    output: PictureOutput = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    from lmtool.plots import terminal
    from lmtool.plots.curves import read_curves

    if output is None and not terminal.stdout_is_terminal():
        raise BadInput("stdout is not a terminal: no picture is drawn into a pipe or file",
                       "write one with -o curves.png (or .svg, .pdf)")
    if output is not None:
        from lmtool.plots.files import check_picture

        check_picture(output, force=force)  # before reading anything
    curves = read_curves(runs, x=x, smooth=0.0 if no_smooth else smooth)
    for note in curves.notes:
        info(f"lmtool: note: {note}", quiet)
    if output is None:
        width, height = terminal_size()
        from rich.console import Console

        height = max(16, min(height - 2, 48))
        Console(highlight=False).print(terminal.curves_text(curves, width, height))
        return
    from lmtool.plots.curves import curves_figure
    from lmtool.plots.files import save_figure

    save_figure(curves_figure(curves), output, force=force)
    info(f"wrote {output}", quiet)
