"""Training curves: the series of runs' metrics.jsonl, and the figure that draws them.

    curves = read_curves(["runs/a", "runs/b"], x="step", smooth=0.6)
    curves.panels["loss"]    # [Series("runs/a", "loss", x, y), Series("runs/a", "val_loss", ...)]
    curves.notes             # ["runs/b has no evaluation rows yet: training loss alone"]
    figure = curves_figure(curves)

Panels: "loss" (training loss, validation loss), "accuracy" (validation accuracy: masked
and classifier runs) and "learning rate", each shown when some run has it. A run still
training is read as far as it got (a torn last line is left out, checkpoint.read_metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmtool.errors import BadInput

XS = ("step", "tokens", "time")
X_LABELS = {"step": "step", "tokens": "tokens seen", "time": "time (s)"}
# (panel, metric, legend suffix): what is drawn where, in this order.
METRICS = (
    ("loss", "loss", "train"),
    ("loss", "val_loss", "val"),
    ("accuracy", "val_accuracy", "val"),
    ("learning rate", "lr", ""),
)
SMOOTHED = ("loss",)  # the metrics that are noisy enough to smooth (training loss)


@dataclass
class Series:
    run: str  # the legend's name for the run, as the user wrote it
    metric: str  # a metrics.jsonl key: "loss", "val_loss", "val_accuracy", "lr"
    x: list[float]
    y: list[float]  # the values as logged
    smooth: list[float] | None = None  # the EMA of y, for a smoothed metric


@dataclass
class Curves:
    x: str  # "step", "tokens" or "time"
    panels: dict[str, list[Series]]  # panel name -> its series, in METRICS order
    runs: list[str]
    notes: list[str] = field(default_factory=list)  # for stderr: what is missing


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, debiased (as TensorBoard's smoothing): the first
    points are not pulled towards 0. weight 0 returns the values; near 1, a long memory."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i) if weight else v)
    return out


def _x_values(rows: list[dict], x: str, train: list[dict], run: str) -> list[float]:
    """Each row's x. Evaluation rows have no token count: theirs is read off the training
    rows by step (the count at the last logged step at or before it)."""
    if x == "step":
        return [float(r["step"]) for r in rows]
    if x == "time":
        if not all("elapsed_s" in r for r in rows):
            raise BadInput(f"{run}'s metrics have no elapsed_s", "plot against --x step")
        return [float(r["elapsed_s"]) for r in rows]
    known = [(r["step"], r["tokens"]) for r in train if "tokens" in r]
    if not known:
        raise BadInput(f"{run}'s metrics have no token counts", "plot against --x step")
    steps, tokens = zip(*known, strict=True)
    return [float(r["tokens"]) if "tokens" in r
            else float(np.interp(r["step"], steps, tokens)) for r in rows]


def run_series(run: Path, name: str, x: str, smooth: float) -> list[Series]:
    """The series of one run's metrics.jsonl, raw values as logged."""
    from lmtool.checkpoint import read_metrics, read_run_config

    read_run_config(Path(run), "lmtool pretrain")  # a run at all, else one line saying so
    rows = [r for r in read_metrics(run) if isinstance(r.get("step"), (int, float))]
    train = [r for r in rows if isinstance(r.get("loss"), (int, float))]
    series = []
    for _, metric, _ in METRICS:
        # A diverged step's NaN or inf is no point on a line (JSON writes them as NaN).
        have = [r for r in rows if isinstance(r.get(metric), (int, float))
                and math.isfinite(r[metric])]
        if not have:
            continue
        y = [float(r[metric]) for r in have]
        s = Series(name, metric, _x_values(have, x, train, name), y)
        if metric in SMOOTHED and smooth > 0:
            s.smooth = ema(y, smooth)
        series.append(s)
    return series


def read_curves(runs: Sequence[Path | str], *, x: str = "step", smooth: float = 0.6,
                names: Sequence[str] | None = None) -> Curves:
    """The curves of `runs` (run directories), named in legends by `names` (default:
    the paths as given). A run with nothing logged yet is left out with a note; none
    with anything at all is BadInput."""
    if x not in XS:
        raise BadInput(f"--x must be one of {', '.join(XS)}, not {x!r}")
    if not 0 <= smooth < 1:
        raise BadInput(f"--smooth must be in [0, 1), not {smooth}", "0 is no smoothing")
    names = list(names) if names is not None else [str(r).rstrip("/") or str(r) for r in runs]
    panels: dict[str, list[Series]] = {}
    notes, shown = [], []
    for run, name in zip(runs, names, strict=True):
        series = run_series(Path(run), name, x, smooth)
        metrics = {s.metric for s in series}
        if not series:
            notes.append(f"{name} has logged no rows yet: left out")
            continue
        shown.append(name)
        if "loss" in metrics and "val_loss" not in metrics:
            notes.append(f"{name} has no evaluation rows yet: training loss alone")
        for s in series:
            panel = next(p for p, m, _ in METRICS if m == s.metric)
            panels.setdefault(panel, []).append(s)
    if not shown:
        raise BadInput("nothing to plot: no run has logged a row yet",
                       "a run logs every --log-every steps; try again in a moment")
    order = [p for p, _, _ in METRICS]
    panels = dict(sorted(panels.items(), key=lambda item: order.index(item[0])))
    return Curves(x, panels, shown, notes)


def label(series: Series, runs: int) -> str:
    """The legend entry: "runs/a train", or "train" alone when there is one run."""
    suffix = next(s for _, m, s in METRICS if m == series.metric)
    return " ".join(part for part in (series.run if runs > 1 else "", suffix) if part) \
        or series.run


def curves_figure(curves: Curves) -> Any:
    """A matplotlib Figure: one panel side by side per kind of metric, one colour per run
    (training loss solid, validation dashed with dots), the raw training loss faint
    behind its smoothed line. Each line's gid is "RUN:METRIC" ("RUN:METRIC:raw" for the
    faint one), so its data can be found again."""
    from lmtool.plots.extra import new_figure

    panels = list(curves.panels.items())
    fig = new_figure(figsize=(4.6 * len(panels), 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colour = {run: f"C{i % 10}" for i, run in enumerate(curves.runs)}
    many = len(curves.runs)
    for ax, (panel, series) in zip(axes, panels, strict=True):
        for s in series:
            c, gid = colour[s.run], f"{s.run}:{s.metric}"
            if s.metric.startswith("val_"):
                ax.plot(s.x, s.y, color=c, linestyle="--", marker="o", markersize=3,
                        label=label(s, many), gid=gid)
            elif s.smooth is not None:
                ax.plot(s.x, s.y, color=c, alpha=0.25, linewidth=1, gid=gid + ":raw")
                ax.plot(s.x, s.smooth, color=c, linewidth=1.6, label=label(s, many), gid=gid)
            else:
                ax.plot(s.x, s.y, color=c, linewidth=1.4, label=label(s, many), gid=gid)
        ax.set_title(panel)
        ax.set_xlabel(X_LABELS[curves.x])
        ax.grid(alpha=0.3)
        if panel == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if panel != "learning rate" or many > 1:
            ax.legend(fontsize="small")
    return fig
