"""Pictures in the terminal, with no dependency beyond rich: a sparkline (unicode blocks),
curves (braille dots, a colour per line), heatmaps (coloured cells).

The commands draw these only when stdout is a terminal (DESIGN.md: a pipeline never sees
a picture or a colour code); these functions just build the text.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmtool.plots.curves import X_LABELS, Curves, label

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """One line of unicode blocks, lowest value ▁, highest █; more values than `width`
    are averaged in `width` equal buckets."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return ""
    if v.size > width:
        v = np.array([bucket.mean() for bucket in np.array_split(v, width)])
    low, span = v.min(), np.ptp(v)
    levels = np.zeros(v.size, dtype=int) if span == 0 else \
        np.rint((v - low) / span * (len(BLOCKS) - 1)).astype(int)
    return "".join(BLOCKS[i] for i in levels)


# Braille cells hold 2 x 4 dots; bit of the dot at (column, row) within a cell.
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
PALETTE = ("dodger_blue1", "dark_orange", "green3", "red1", "medium_purple1", "cyan3",
           "gold1", "hot_pink")
GUTTER = 9  # characters left of the plot for the y values


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _panel(title: str, xlabel: str, lines: list[tuple[list, list, str, str]], width: int,
           height: int) -> Any:
    """One panel as rich Text: `lines` of (x, y, colour, legend) drawn in braille dots on
    a `width` x `height` character area (title, plot, x axis, legend)."""
    from rich.text import Text

    cols, rows = max(width - GUTTER - 1, 10), max(height - 3, 3)
    xs = np.concatenate([np.asarray(x, float) for x, *_ in lines])
    ys = np.concatenate([np.asarray(y, float) for _, y, *_ in lines])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    bits = np.zeros((rows, cols), dtype=np.int64)
    owner = np.full((rows, cols), -1)
    for k, (x, y, _, _) in enumerate(lines):
        # Dot coordinates: 2 per character across, 4 down, y growing downwards.
        dx = (np.asarray(x, float) - x0) / (x1 - x0) * (2 * cols - 1)
        dy = (y1 - np.asarray(y, float)) / (y1 - y0) * (4 * rows - 1)
        if dx.size == 1:
            dx, dy = np.repeat(dx, 2), np.repeat(dy, 2)
        for i in range(dx.size - 1):
            ax, ay, bx, by = dx[i], dy[i], dx[i + 1], dy[i + 1]
            n = int(max(abs(bx - ax), abs(by - ay))) + 1  # a dot per step along the segment
            for t in np.linspace(0.0, 1.0, n + 1):
                px, py = int(round(ax + (bx - ax) * t)), int(round(ay + (by - ay) * t))
                bits[py // 4, px // 2] |= _DOTS[py % 4][px % 2]
                owner[py // 4, px // 2] = k
    text = Text(f"{title:^{GUTTER + 1 + cols}}".rstrip() + "\n", style="bold")
    for r in range(rows):
        value = y1 if r == 0 else y0 if r == rows - 1 else (y0 + y1) / 2 \
            if r == rows // 2 else None
        text.append(f"{_tick(value) if value is not None else '':>{GUTTER - 1}} │")
        for c in range(cols):
            k = owner[r, c]
            text.append(chr(0x2800 + int(bits[r, c])) if k >= 0 else " ",
                        style=lines[k][2] if k >= 0 else None)
        text.append("\n")
    left, right = _tick(x0), _tick(x1)
    middle = cols - len(left) - len(right)
    text.append(" " * (GUTTER + 1) + left + f"{xlabel:^{max(middle, 0)}}" + right + "\n")
    text.append(" " * (GUTTER + 1))
    for _, _, colour, name in lines:
        text.append("━━ ", style=colour)
        text.append(name + "   ")
    return text


def curves_text(curves: Curves, width: int, height: int) -> Any:
    """The curves as rich Text for a terminal `width` x `height` characters: one panel
    above the other, a colour per line (the smoothed training loss when smoothed)."""
    from rich.text import Text

    many = len(curves.runs)
    every = [(s.run, s.metric) for series in curves.panels.values() for s in series]
    colour = {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(every)}
    out = Text()
    panel_height = max(height // len(curves.panels), 8)
    for panel, series in curves.panels.items():
        lines = [(s.x, s.smooth if s.smooth is not None else s.y, colour[s.run, s.metric],
                  label(s, many)) for s in series]
        out.append_text(_panel(panel, X_LABELS[curves.x], lines, width, panel_height))
        out.append("\n")
    return out


def _rgb(value: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1), as matplotlib's "Blues" runs."""
    light, dark = np.array([247, 251, 255]), np.array([8, 48, 107])
    t = float(np.clip(value, 0.0, 1.0))
    return tuple(int(c) for c in np.rint(light + (dark - light) * t))  # type: ignore[return-value]


def heatmap_table(matrix: Any, row_labels: Sequence[str], column_labels: Sequence[str], *,
                  title: str = "", vmax: float | None = None) -> Any:
    """A rich Table: one coloured cell per value (darker = larger, the value in percent
    written in it), rows labelled by `row_labels`, columns numbered; the column labels
    are the rows' when they are the same list, else listed under the table."""
    from rich.table import Table
    from rich.text import Text

    values = np.asarray(matrix, dtype=float)
    top = float(vmax if vmax is not None else (values.max() if values.size else 1.0)) or 1.0
    same = list(row_labels) == list(column_labels)
    caption = None if same else "columns: " + "  ".join(
        f"{j} {name}" for j, name in enumerate(column_labels))
    table = Table(title=title or None, caption=caption, box=None, padding=(0, 0),
                  show_edge=False, pad_edge=False, caption_justify="left")
    table.add_column("", justify="left", no_wrap=True)
    for j in range(values.shape[1]):
        table.add_column(f"{j:>4}", justify="right", no_wrap=True, min_width=4)
    for i, name in enumerate(row_labels):
        cells = []
        for value in values[i]:
            share = value / top
            r, g, b = _rgb(share)
            fg = "white" if share > 0.55 else "black"
            text = f"{round(100 * value):>4}" if value >= 0.005 else "    "
            cells.append(Text(text, style=f"{fg} on rgb({r},{g},{b})"))
        table.add_row(Text(f"{i:>3} {name} ", no_wrap=True), *cells)
    return table


def stdout_is_terminal() -> bool:
    """Pictures and colours go to a terminal only (a test may say otherwise)."""
    return sys.stdout.isatty()
