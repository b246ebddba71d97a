"""Parallel text: (source, target) pairs from one file or two aligned ones.

    for source, target in iter_pairs("pairs.tsv"): ...
    for source, target in iter_pairs(source="train.de", target="train.en"): ...

One file, by its extension:
- .jsonl: one object a line with "source" and "target" strings (other keys ignored);
- .csv: a header row naming a `source` and a `target` column (others ignored);
- anything else is TSV: a header naming `source` and `target` (others ignored, e.g.
  Tatoeba's attribution), or no header and then exactly source<TAB>target a line.
Two files: plain text, one sentence a line, line i of one translating line i of the
other; they must have as many lines.

Everything wrong is refused before any training, naming the file and line: a missing
column, a line of the wrong shape (more fields than the header names: a tab or comma
inside a sentence would otherwise shift the rest of it into the next column), an
empty source or target, files of different lengths (both counts said). Lines are read
as they come (memory flat).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from lmtool.errors import BadInput

COLUMNS = ("source", "target")


def iter_pairs(path: str | Path | None = None, *, source: str | Path | None = None,
               target: str | Path | None = None) -> Iterator[tuple[str, str]]:
    """(source, target) strings of a pairs file, or of two aligned files."""
    if path is not None and (source is not None or target is not None):
        raise BadInput("give a pairs file or --source and --target files, not both")
    if path is None:
        if source is None or target is None:
            raise BadInput("aligned files need both --source FILE and --target FILE")
        yield from _aligned(Path(source), Path(target))
        return
    path = Path(path)
    if path.is_dir() or not path.exists():
        raise BadInput(f"{path} is not a file of pairs",
                       "pass a TSV, CSV or JSONL file with source and target columns")
    suffix = path.suffix.lower()
    rows = _jsonl(path) if suffix == ".jsonl" else _table(path, "," if suffix == ".csv" else "\t")
    for where, src, tgt in rows:
        for side, text in (("source", src), ("target", tgt)):
            if not text.strip():
                raise BadInput(f"{where}: empty {side}", "every pair needs both sides")
        yield src, tgt


def looks_like_pairs(path: str | Path) -> bool:
    """True for a file whose first line names source and target columns (or is a JSON
    object with both): what an LM command is refused when given pairs."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return False
    if first.startswith("{"):
        try:
            row = json.loads(first)
        except ValueError:
            return False
        return isinstance(row, dict) and all(k in row for k in COLUMNS)
    fields = {f.strip().lower() for f in first.replace(",", "\t").split("\t")}
    return all(c in fields for c in COLUMNS)


def _open(path: Path):
    try:
        return open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None


def _lines(f, path: Path) -> Iterator[str]:
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text ({e.reason})") from None


def _jsonl(path: Path) -> Iterator[tuple[str, str, str]]:
    with _open(path) as f:
        for n, line in enumerate(_lines(f, path), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise BadInput(f"{path}:{n}: not a JSON object") from None
            if not isinstance(row, dict):
                raise BadInput(f"{path}:{n}: not a JSON object")
            missing = [c for c in COLUMNS if c not in row]
            if missing:
                raise BadInput(f"{path}:{n}: no {' or '.join(repr(c) for c in missing)} key",
                               'each line needs {"source": ..., "target": ...}')
            if not all(isinstance(row[c], str) for c in COLUMNS):
                raise BadInput(f"{path}:{n}: source and target must be strings")
            yield f"{path}:{n}", row["source"], row["target"]


def _table(path: Path, delimiter: str) -> Iterator[tuple[str, str, str]]:
    kind = "CSV" if delimiter == "," else "TSV"
    with _open(path) as f:
        reader = csv.reader(_lines(f, path), delimiter=delimiter,
                            quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE)
        header: list[str] | None = None
        columns = (0, 1)
        for n, row in enumerate(reader, 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                names = [c.strip().lower() for c in row]
                if any(c in names for c in COLUMNS) or delimiter == ",":
                    header = names
                    missing = [c for c in COLUMNS if c not in names]
                    if missing:
                        raise BadInput(
                            f"{path} has no {' or '.join(missing)} column (its header: "
                            f"{', '.join(row)})", "name the columns source and target")
                    columns = (names.index("source"), names.index("target"))
                    continue
                header = []  # no header: exactly source<TAB>target from here on
            if not header and len(row) != 2:
                raise BadInput(f"{path}:{n}: {len(row)} fields; a {kind} without a header "
                               "has exactly two, source<TAB>target",
                               "or give it a header row naming source and target")
            if len(row) <= max(columns):
                raise BadInput(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
            if header and len(row) > len(header):  # a separator inside a sentence
                raise BadInput(f"{path}:{n}: {len(row)} fields, the header has {len(header)}",
                               "replace the tab inside the sentence with a space"
                               if kind == "TSV" else "quote the fields that hold a comma")
            yield f"{path}:{n}", row[columns[0]], row[columns[1]]


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _aligned(source: Path, target: Path) -> Iterator[tuple[str, str]]:
    for p in (source, target):
        if not p.is_file():
            raise BadInput(f"{p} is not a file")
    ns, nt = _count_lines(source), _count_lines(target)
    if ns != nt:
        raise BadInput(f"{source} has {ns} lines but {target} has {nt}",
                       "aligned files need one sentence a line, line for line")
    with _open(source) as fs, _open(target) as ft:
        for n, (s, t) in enumerate(zip(_lines(fs, source), _lines(ft, target), strict=True), 1):
            s, t = s.rstrip("\r\n"), t.rstrip("\r\n")
            for side, p, text in (("source", source, s), ("target", target, t)):
                if not text.strip():
                    raise BadInput(f"{p}:{n}: empty {side}", "every pair needs both sides")
            yield s, t
