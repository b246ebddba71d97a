"""Writing a figure to -o: the format from the suffix, lmtool/outputs.py's rule, atomically.

A picture lmtool wrote says so in its metadata (PNG "Software", SVG and PDF "Creator":
"lmtool VERSION"), which is how --force tells an earlier picture of ours, which it may
replace, from a file of the user's, which it never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmtool import __version__
from lmtool.errors import BadInput
from lmtool.outputs import Kind, check_output

FORMATS = ("png", "svg", "pdf")
DPI = 150  # PNG pixels per inch: sharp on a README page, a few hundred KB at most
_HEAD = 8192  # where the marker sits: PNG and SVG near the start, PDF near the end
_MARKERS = {  # magic bytes, then what lmtool's metadata looks like in the file
    "png": (b"\x89PNG\r\n\x1a\n", b"tEXtSoftware\x00lmtool "),
    "svg": (b"<?xml", b"<dc:title>lmtool "),
    "pdf": (b"%PDF-", b"/Creator (lmtool "),
}


def picture_format(path: Path) -> str:
    """"png", "svg" or "pdf", from the suffix; BadInput for anything else."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        shown = f"a .{suffix} file" if suffix else "a file without a suffix"
        raise BadInput(f"{path}: cannot draw {shown}",
                       "name a .png, .svg or .pdf file; the suffix gives the format")
    return suffix


def is_picture(path: Path) -> bool:
    """True when `path` is a picture lmtool wrote (its metadata names lmtool)."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS or not Path(path).is_file():
        return False
    magic, marker = _MARKERS[fmt]
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            f.seek(max(0, os.fstat(f.fileno()).st_size - _HEAD))
            tail = f.read(_HEAD)
    except OSError:
        return False
    return head.startswith(magic) and (marker in head or marker in tail)


PICTURE = Kind("a picture", "the picture file", False, is_picture)


def check_picture(path: Path, *, force: bool) -> str:
    """Refuse a bad suffix or an output lmtool may not replace, before any work; return
    the format."""
    fmt = picture_format(path)
    check_output(Path(path), PICTURE, force=force)
    return fmt


def save_figure(figure: Any, path: Path, *, force: bool) -> None:
    """Write `figure` to `path` in the format its suffix names, whole or not at all."""
    from lmtool.fsio import atomic_file

    fmt = check_picture(path, force=force)
    key = "Software" if fmt == "png" else "Creator"
    with atomic_file(Path(path), "wb") as f:
        figure.savefig(f, format=fmt, dpi=DPI, metadata={key: f"lmtool {__version__}"})
