"""The documents to classify: one per file (or stdin), or one per line with `per_line`.

    for source, text in read_documents(["inbox/", "-"], per_line=True, report=report):
        ...   # source is the file, or "file:line"

Unlike a corpus (sources.py), nothing is dropped or merged: every file, and with
`per_line` every line (an empty one too), is one document with its own source name, so
results line up with the input. Each loses the whitespace around it, as every
document does (text/boundaries.py). A binary, unreadable or (with strict decoding) invalid
UTF-8 file is recorded in the `SkipReport` and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmtool.errors import BadInput
from lmtool.text.boundaries import document_text
from lmtool.text.files import NotText, check_encoding_errors, display_name, read_text
from lmtool.text.sources import ReadReport, iter_lines, resolve_sources
from lmtool.wording import count


@dataclass
class SkipReport:
    """Inputs left out while reading; the CLI exits non-zero when there are any."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    undecodable_files: int = 0  # files whose invalid UTF-8 --encoding-errors changed

    def warnings(self) -> list[str]:
        out = [f"skipped {path}: {why}" for path, why in self.skipped[:10]]
        if len(self.skipped) > 10:
            out.append(f"... and {count(len(self.skipped) - 10, 'more skipped file')}")
        if self.undecodable_files:
            files = count(self.undecodable_files, "file")
            out.append(f"invalid UTF-8 replaced or dropped in {files}")
        return out


def read_documents(
    sources: Sequence[str | Path],
    *,
    per_line: bool = False,
    encoding_errors: str = "strict",
    max_chars: int = 1 << 20,
    report: SkipReport | None = None,
) -> Iterator[tuple[str, str]]:
    """(source, text) for every document of `sources` (files, directories, globs, "-").

    A file (or stdin) is one document, of which the first `max_chars` characters are
    kept; with `per_line` each line is one (an empty line too, never dropped). The
    sources are checked at once (a missing file is BadInput before anything is read).
    """
    check_encoding_errors(encoding_errors)
    report = report if report is not None else SkipReport()
    found = ReadReport()
    files = resolve_sources(list(sources), report=found)
    report.skipped.extend((path, "binary") for path in found.skipped_binary)
    return _documents(files, per_line, encoding_errors, max_chars, report)


def _documents(files: list[Path | str], per_line: bool, errors: str, max_chars: int,
               report: SkipReport) -> Iterator[tuple[str, str]]:
    for source in files:
        name = display_name(source)
        if per_line:
            yield from _lines_of(source, name, errors, max_chars, report)
            continue
        try:
            # A character is 4 bytes at most: max_chars * 4 bytes hold max_chars of them.
            text, replaced = read_text(source, errors, max_bytes=max_chars * 4)
        except NotText as e:
            report.skipped.append((name, e.why))
            continue
        report.undecodable_files += bool(replaced)
        yield name, document_text(text)[:max_chars]


def _lines_of(source: Path | str, name: str, errors: str, max_chars: int,
              report: SkipReport) -> Iterator[tuple[str, str]]:
    """Each line of one file as a document; a line longer than `max_chars` is cut."""
    found = ReadReport()
    number, parts, size = 0, [], 0
    try:
        for _, piece in iter_lines([source], encoding_errors=errors, report=found,
                                   limit=max(max_chars, 1)):
            if size < max_chars:  # the parts of a huge line past max_chars are dropped
                parts.append(piece)
                size += len(piece)
            if piece.endswith("\n"):
                number += 1
                yield f"{name}:{number}", document_text("".join(parts))[:max_chars]
                parts, size = [], 0
        if parts:
            number += 1
            yield f"{name}:{number}", document_text("".join(parts))[:max_chars]
    except BadInput as e:  # invalid UTF-8 in strict mode, an unreadable file
        report.skipped.append((name, e.message))
    if found.skipped_binary:
        report.skipped.append((name, "binary"))
    report.undecodable_files += bool(found.undecodable_bytes)
