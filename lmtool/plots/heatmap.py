"""Heatmaps as files: one function for every matrix with labelled rows and columns
(attention: query tokens x key tokens; seq2seq: target x source; a confusion matrix:
true x predicted labels).

    figure = heatmap_figure(weights, rows, columns, title="layer 2, mean of 4 heads")
    figure = confusion_figure(labels, counts)     # normalised by row, counts in the cells
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CELL_MAX, CELL_MIN = 0.4, 0.16  # inches per cell: 2 classes and 77 classes (BANKING77) fit
TEXT_MIN_PT = 3.5  # smaller cell text would be unreadable even zoomed in: left out
MARGIN = 1.4  # inches around the grid for the title, axis names and the colour bar


def _cell_inches(n: int) -> float:
    """Cells shrink as the matrix grows so the figure stays a page wide (about 13 inches
    of grid at most), never below CELL_MIN."""
    return float(np.clip(13.0 / max(n, 1), CELL_MIN, CELL_MAX))


def _label_inches(labels: Sequence[str], font_pt: float) -> float:
    """How much room the longest tick label takes (a character is about 0.6 em wide)."""
    longest = max((len(s) for s in labels), default=1)
    return longest * 0.6 * font_pt / 72


def heatmap_figure(matrix: Any, row_labels: Sequence[str], column_labels: Sequence[str], *,
                   title: str = "", xlabel: str = "", ylabel: str = "",
                   cell_text: Sequence[Sequence[str]] | None = None,
                   vmax: float | None = None, colorbar: str = "") -> Any:
    """A matplotlib Figure of `matrix` (rows x columns, values from 0 to `vmax`, default
    its largest), labelled on both axes, row 0 at the top. `cell_text` (the same shape)
    is written in the cells when the cells are large enough to read it; "" leaves a
    cell blank. Sized by the matrix: readable from 2 x 2 to about 80 x 80."""
    from lmtool.plots.extra import new_figure

    values = np.asarray(matrix, dtype=float)
    rows, cols = values.shape
    cell = _cell_inches(max(rows, cols))
    font = float(np.clip(cell * 72 * 0.55, 4.5, 10))  # tick labels: a little under a cell
    # Cell text: the widest entry must fit in a cell (0.6 em a character).
    widest = max((len(t) for r in cell_text or [] for t in r), default=1)
    text_pt = min(9.0, cell * 72 * 0.8 / (0.6 * max(widest, 2)))
    width = cols * cell + _label_inches(row_labels, font) + MARGIN + 0.8  # + colour bar
    height = rows * cell + _label_inches(column_labels, font) + MARGIN
    fig = new_figure(figsize=(max(width, 3.5), max(height, 3.0)), layout="constrained")
    ax = fig.subplots()
    top = float(vmax if vmax is not None else (values.max() if values.size else 1.0)) or 1.0
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=top, aspect="equal",
                      interpolation="nearest")
    ax.set_xticks(range(cols), labels=list(column_labels), rotation=90, fontsize=font)
    ax.set_yticks(range(rows), labels=list(row_labels), fontsize=font)
    ax.tick_params(length=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if cell_text is not None and text_pt >= TEXT_MIN_PT:
        for (i, j), value in np.ndenumerate(values):
            text = cell_text[i][j]
            if text:  # dark text on light cells, white on dark ones
                ax.text(j, i, text, ha="center", va="center", fontsize=text_pt,
                        color="white" if value > 0.55 * top else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    if colorbar:
        bar.set_label(colorbar)
    return fig


def confusion_figure(labels: Sequence[str], counts: Any, *, title: str = "") -> Any:
    """The confusion matrix (rows true labels, columns predicted) coloured by the share
    of each true label's examples (each row sums to 1), with the counts in the cells
    (blank for 0), where they fit."""
    counts = np.asarray(counts, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    text = [[f"{n:,}" if n else "" for n in row] for row in counts.tolist()]
    return heatmap_figure(shares, labels, labels, title=title, xlabel="predicted",
                          ylabel="true", cell_text=text, vmax=1.0,
                          colorbar="share of the true label's examples")
