"""The optional extra `lmtool[plot]`: its libraries, imported on first use, or one line
saying what to install (MissingExtra, exit 4)."""

from __future__ import annotations

from typing import Any

from lmtool.errors import MissingExtra


def new_figure(**options: Any) -> Any:
    """A matplotlib Figure, made without pyplot: no backend is chosen, no window can open
    and no display is needed; `savefig` renders with Agg (or the SVG/PDF writers)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra("matplotlib", "plot") from None
    return Figure(**options)

