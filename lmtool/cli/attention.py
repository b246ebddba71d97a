"""`lmtool attention`: a Transformer run's self-attention over a text, as a heatmap."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import Device, Force, Quiet, info
from lmtool.cli.plot import PictureOutput
from lmtool.errors import BadInput

HELP_EXAMPLES = (
    'lmtool attention runs/lm "The baker opened the shop."',
    'lmtool attention runs/lm "The baker opened the shop." --layer 3 --head 0 -o attn.png',
    'lmtool attention runs/mlm "The baker opened the [MASK]." -o attn.svg',
)
SUMMARY = (
    "Draw the self-attention of a Transformer run (causal or masked) over a text as a "
    "token x token heatmap: row i shows how much query token i attends to each key token "
    "(each row sums to 1). One layer and head, or the mean over layers and heads. In the "
    "terminal as coloured cells (percent), or to a PNG, SVG or PDF file with -o. An "
    "AWD-LSTM has no attention and is refused. Files need the plot extra: "
    "pip install 'lmtool[plot]'."
)


def attention(
    run: Annotated[Path, typer.Argument(help="A Transformer run directory.")],
    text: Annotated[str, typer.Argument(help="The text to read, or - for stdin.")],
    layer: Annotated[int | None, typer.Option(
        "--layer", help="Which block, from 0 at the bottom (default: the mean of all).",
        show_default=False)] = None,
    head: Annotated[int | None, typer.Option(
        "--head", help="Which head, from 0 (default: the mean of all).",
        show_default=False)] = None,
    output: PictureOutput = None,
    force: Force = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    from lmtool.inference.attention import attention_maps
    from lmtool.plots import terminal

    if output is None and not terminal.stdout_is_terminal():
        raise BadInput("stdout is not a terminal: no picture is drawn into a pipe or file",
                       "write one with -o attention.png (or .svg, .pdf)")
    if output is not None:
        from lmtool.plots.files import check_picture

        check_picture(output, force=force)  # before loading the model
    if text == "-":
        text = sys.stdin.read()
    maps = attention_maps(run, text, device=device)
    weights = maps.select(layer, head)
    layers, heads = maps.weights.shape[:2]
    title = (f"layer {layer}" if layer is not None else f"mean of {layers} layers") + ", " + \
        (f"head {head}" if head is not None else f"mean of {heads} heads")
    if output is None:
        from rich.console import Console

        Console(highlight=False).print(terminal.heatmap_table(
            weights, maps.tokens, maps.tokens, title=f"{run}: {title} (rows: query, "
            "columns: key, percent)"))
        return
    from lmtool.plots.files import save_figure
    from lmtool.plots.heatmap import heatmap_figure

    figure = heatmap_figure(weights, maps.tokens, maps.tokens, title=f"{run}: {title}",
                            xlabel="key (attended to)", ylabel="query (attending)",
                            colorbar="attention weight")
    save_figure(figure, output, force=force)
    info(f"wrote {output}", quiet)
