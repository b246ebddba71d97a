"""One file as text: the files under a directory, telling binary files, decoding UTF-8.

Every reader of text goes through these (`sources.py` for corpora, `labelled.py` for a
folder per class, `documents.py` for the documents to classify), so a file is found,
refused as binary and decoded under --encoding-errors the same way everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from lmtool.errors import BadInput

STDIN = "-"
ENCODING_ERRORS = ("strict", "replace", "ignore")
SNIFF_BYTES = 8192  # a NUL byte in the first 8 KB marks a file as binary


def display_name(source: Path | str) -> str:
    """How messages name a source: stdin as `<stdin>`, a path as given."""
    return "<stdin>" if source == STDIN else str(source)


class NotText(Exception):
    """A file that cannot be read as text; `why` says it in a few words ("binary")."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def check_encoding_errors(errors: str) -> None:
    if errors not in ENCODING_ERRORS:
        raise BadInput(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}")


def walk(directory: Path) -> Iterator[Path]:
    """Files under `directory`, recursively and sorted; hidden entries skipped. A link
    that leads nowhere is listed too: a reader reports it rather than lose it quietly."""
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file are binary data (a NUL in the first 8 KB)."""
    return b"\0" in head[:SNIFF_BYTES]


def is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return looks_binary(f.read(SNIFF_BYTES))


def decode(data: bytes, errors: str, offset: int = 0) -> tuple[str, int]:
    """(text, bytes --encoding-errors replaced or dropped). Under "strict" invalid UTF-8
    raises NotText naming its byte offset (`offset`: where `data` starts in the file)."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError as e:
        if errors == "strict":
            raise NotText(f"not valid UTF-8 (byte offset {offset + e.start})") from None
    # Slow path, only for text with bad bytes: decode span by span to count them.
    parts, pos, bad = [], 0, 0
    while pos < len(data):
        try:
            parts.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            parts.append(data[pos : pos + e.start].decode("utf-8"))
            bad += e.end - e.start
            if errors == "replace":
                parts.append("\ufffd")
            pos += e.end
    return "".join(parts), bad


def char_boundary(data: bytes, cut: int) -> int:
    """`cut` moved back so that it does not split a UTF-8 sequence (`data[cut]` is not a
    continuation byte 10xxxxxx); `data` must go on past `cut`."""
    for back in range(4):
        if cut - back > 0 and (data[cut - back] & 0xC0) != 0x80:
            return cut - back
    return cut  # not UTF-8 here anyway: cut where asked


def read_text(source: Path | str, errors: str = "strict",
              max_bytes: int | None = None) -> tuple[str, int]:
    """(text, bytes --encoding-errors replaced or dropped) of a file or stdin ("-").

    With `max_bytes` only the file's beginning is read, cut between two characters.
    NotText for a binary or unreadable file, or (under "strict") invalid UTF-8.
    """
    limit = -1 if max_bytes is None else max_bytes + 1  # one more: was the file cut?
    try:
        if source == STDIN:
            data = sys.stdin.buffer.read(limit)
        else:
            with open(source, "rb") as f:
                data = f.read(limit)
    except OSError as e:
        raise NotText(e.strerror or str(e)) from None
    if looks_binary(data):
        raise NotText("binary")
    if max_bytes is not None and len(data) > max_bytes:
        data = data[: char_boundary(data, max_bytes)]
    return decode(data, errors)
