"""`lmtool attention`: a Transformer run's self-attention over a text, or a
sequence-to-sequence run's source x target attention while translating it, as a heatmap."""

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
    'lmtool attention runs/mt-lstm "Ein Mann fährt Fahrrad." -o attention.png',
    'lmtool attention runs/mt "Ein Mann fährt Fahrrad." --layer 2 --head 1',
)
SUMMARY = (
    "Draw the self-attention of a Transformer run (causal or masked) over a text as a "
    "token x token heatmap: row i shows how much query token i attends to each key token "
    "(each row sums to 1). One layer and head, or the mean over layers and heads. A "
    "sequence-to-sequence run first translates the text (greedily), then draws target "
    "tokens (rows) x source tokens (columns): an LSTM's Bahdanau attention, or a "
    "Transformer's cross-attention (one layer and head, or the mean); an LSTM trained "
    "with --attention none is refused. In the "
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
    if _is_seq2seq(run):
        _draw_cross_attention(run, text, layer, head, output, force, device, quiet)
        return
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


def _is_seq2seq(run: Path) -> bool:
    from lmtool.checkpoint import read_run_config, run_task
    from lmtool.inference.cross_attention import check_has_attention

    config = read_run_config(run)
    if run_task(config) != "seq2seq":
        return False
    check_has_attention(run, config)  # before loading the model
    return True


def _draw_cross_attention(run: Path, text: str, layer: int | None, head: int | None,
                          output: Path | None, force: bool, device: str, quiet: bool) -> None:
    from lmtool.inference.cross_attention import cross_attention_map

    picture = cross_attention_map(run, text, layer=layer, head=head, device=device)
    info(f"translation: {picture.translation}", quiet)
    title = f"{run}: {picture.title}"
    if output is None:
        from rich.console import Console

        from lmtool.plots import terminal

        Console(highlight=False).print(terminal.heatmap_table(
            picture.weights, picture.targets, picture.sources,
            title=f"{title} (rows: target, columns: source, percent)"))
        return
    from lmtool.plots.files import save_figure
    from lmtool.plots.heatmap import heatmap_figure

    figure = heatmap_figure(picture.weights, picture.targets, picture.sources, title=title,
                            xlabel="source (attended to)", ylabel="target (produced)",
                            colorbar="attention weight")
    save_figure(figure, output, force=force)
    info(f"wrote {output}", quiet)
