"""Text sources: files, directories, globs and `-` (stdin), read as a stream of documents.

Nothing here holds a whole file in memory: files are read in binary chunks, cut at line
ends, decoded piece by piece, and grouped into documents. A document longer than
`PIECE_CHARS` is handed out in several pieces cut at line boundaries, so memory stays
bounded even for `--document file` on a huge file.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lmtool.errors import BadInput
from lmtool.text.boundaries import piece_text
from lmtool.text.files import (
    STDIN,
    NotText,
    char_boundary,
    check_encoding_errors,
    decode,
    display_name,
    is_binary,
    looks_binary,
    walk,
)
from lmtool.wording import count, listing

DOCUMENT_MODES = ("paragraph", "line", "file")
READ_BYTES = 1 << 20  # binary read size
PIECE_CHARS = 1 << 20  # longest piece of a document handed out at once (~1 MB)

_GLOB_CHARS = set("*?[")


@dataclass
class ReadReport:
    """What reading the sources found; filled in as the documents are read."""

    files: int = 0  # files (and stdin) read as text
    bytes: int = 0  # bytes read from them
    documents: int = 0  # documents handed out (a document in pieces counts once)
    characters: int = 0  # characters in those documents
    skipped_binary: list[str] = field(default_factory=list)  # binary files left out
    undecodable_bytes: int = 0  # bytes replaced or ignored (--encoding-errors)
    undecodable_files: list[str] = field(default_factory=list)

    def warnings(self, encoding_errors: str = "replace") -> list[str]:
        """One line per thing the user should know about, for the CLI to print."""
        out = []
        if self.skipped_binary:
            out.append(f"skipped {count(len(self.skipped_binary), 'binary file')}: "
                       f"{listing(self.skipped_binary)}")
        if self.undecodable_bytes:
            verb = "ignored" if encoding_errors == "ignore" else "replaced"
            out.append(f"{verb} {count(self.undecodable_bytes, 'byte')} of invalid UTF-8 in "
                       f"{count(len(self.undecodable_files), 'file')}: "
                       f"{listing(self.undecodable_files)}")
        return out

    def no_text(self) -> BadInput:
        """The error for sources that held no document, saying why when it can."""
        if self.skipped_binary and not self.files:
            return BadInput(
                f"the sources hold no text: {count(len(self.skipped_binary), 'file')} "
                f"skipped as binary (a NUL byte in the first 8 KB): "
                f"{listing(self.skipped_binary)}", "pass text files")
        return BadInput("the sources hold no text (empty corpus)", "check the files")


def resolve_sources(
    sources: Sequence[str | Path], *, report: ReadReport | None = None
) -> list[Path | str]:
    """Expand sources into a list of files ("-" stays "-" for stdin).

    Files are kept as given (a binary one is skipped later, when read); directories
    contribute their text files, recursively and sorted; globs their sorted matches.
    """
    if not sources:
        raise BadInput("no sources given", "pass files, directories, globs or - for stdin")
    out: list[Path | str] = []
    for source in sources:
        text = str(source)
        if text == STDIN:
            out.append(STDIN)
            continue
        path = Path(text).expanduser()
        if path.exists():
            matches = [path]
        elif _GLOB_CHARS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            if not matches:
                raise BadInput(f"{text} matches no files", "check the pattern")
        else:
            raise BadInput(f"{text} does not exist", "check the path")
        for match in matches:
            if match.is_dir():
                files = [f for f in walk(match) if f.is_file()]
                text_files = [f for f in files if not is_binary(f)]
                if not text_files:
                    raise BadInput(
                        f"{match} holds no text files",
                        "point at a directory with .txt (or other plain-text) files",
                    )
                if report is not None:
                    report.skipped_binary.extend(str(f) for f in files if f not in text_files)
                out.extend(text_files)
            else:
                out.append(match)
    return out


def _decode(data: bytes, errors: str, name: str, offset: int, report: ReadReport) -> str:
    """Decode UTF-8, counting the bytes `replace`/`ignore` had to drop."""
    try:
        text, bad = decode(data, errors, offset)
    except NotText as e:
        raise BadInput(f"{name} is {e.why}",
                       "fix the file, or pass --encoding-errors replace or ignore") from None
    if bad:
        report.undecodable_bytes += bad
        if name not in report.undecodable_files:
            report.undecodable_files.append(name)
    return text


def _split_lines(text: str) -> list[str]:
    """Split after each "\\n" only (str.splitlines would also split at \\r, \\f, U+2028...)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _iter_file_lines(
    f: BinaryIO, name: str, errors: str, report: ReadReport, limit: int
) -> Iterator[str]:
    """Lines of one stream, each ending in "\\n" except perhaps the last.

    A line longer than `limit` bytes comes out in parts (only its last part ends in
    "\\n"). `read1` returns what is available, so a pipe yields lines as they arrive.
    """
    carry = b""
    offset = 0  # byte offset of `carry` in the stream, for error messages
    first = True
    read = getattr(f, "read1", f.read)
    while True:
        chunk = read(READ_BYTES)
        if first:
            first = False
            if looks_binary(chunk):
                report.skipped_binary.append(name)
                return
            report.files += 1
        if not chunk:
            break
        report.bytes += len(chunk)
        data = carry + chunk
        end = data.rfind(b"\n") + 1
        if end:
            yield from _split_lines(_decode(data[:end], errors, name, offset, report))
            offset += end
            data = data[end:]
        while len(data) > limit:  # a huge line: hand it out in parts cut between characters
            cut = char_boundary(data, limit)
            yield _decode(data[:cut], errors, name, offset, report)
            offset += cut
            data = data[cut:]
        carry = data
    if carry:
        yield from _split_lines(_decode(carry, errors, name, offset, report))


def iter_lines(
    sources: Sequence[str | Path],
    *,
    encoding_errors: str = "strict",
    report: ReadReport | None = None,
    limit: int = READ_BYTES,
) -> Iterator[tuple[int, str]]:
    """(file index, line) for every line of every source, in order; binary files skipped."""
    check_encoding_errors(encoding_errors)
    report = report if report is not None else ReadReport()
    for index, source in enumerate(resolve_sources(sources, report=report)):
        name = display_name(source)
        if source == STDIN:
            stream = sys.stdin.buffer
            for line in _iter_file_lines(stream, name, encoding_errors, report, limit):
                yield index, line
            continue
        try:
            with open(source, "rb") as f:
                for line in _iter_file_lines(f, name, encoding_errors, report, limit):
                    yield index, line
        except IsADirectoryError:
            raise BadInput(f"{name} is a directory") from None
        except OSError as e:
            raise BadInput(f"cannot read {name}: {e.strerror or e}") from None


def iter_pieces(
    sources: Sequence[str | Path],
    *,
    document: str = "paragraph",
    encoding_errors: str = "strict",
    report: ReadReport | None = None,
    piece_chars: int | None = None,
) -> Iterator[tuple[str, bool]]:
    """(text, is_last) pieces of documents; concatenating a document's pieces gives it back.

    Document modes: "file" (a whole file), "paragraph" (lines between blank or
    whitespace-only lines; the blank lines are dropped), "line" (each non-blank line).
    Every document loses the whitespace around it (text/boundaries.py: the policy every
    reader shares); whitespace-only documents are dropped.
    """
    if document not in DOCUMENT_MODES:
        raise BadInput(f"--document must be one of {', '.join(DOCUMENT_MODES)}, not {document!r}")
    report = report if report is not None else ReadReport()
    piece_chars = piece_chars or PIECE_CHARS
    buf: list[str] = []
    size = 0
    has_text = False  # the current document has a non-whitespace character
    started = False  # part of the current document was already handed out

    def finish() -> Iterator[tuple[str, bool]]:
        nonlocal buf, size, has_text, started
        if has_text:
            text = piece_text("".join(buf), first=not started, last=True)
            report.documents += 1
            report.characters += len(text)
            yield text, True
        elif started:  # only whitespace after the pieces already out: close the document
            report.documents += 1
            yield "", True
        buf, size, has_text, started = [], 0, False, False

    current = -1
    line_limit = max(1, min(READ_BYTES, piece_chars))
    for index, line in iter_lines(
        sources, encoding_errors=encoding_errors, report=report, limit=line_limit
    ):
        if index != current:
            yield from finish()  # a file ends every document
            current = index
        blank = not line.strip()
        if document == "paragraph" and blank and line.endswith("\n"):
            yield from finish()
            continue
        if document == "line" and blank and not buf:
            continue  # a blank line in line mode is no document
        buf.append(line)
        size += len(line)
        has_text = has_text or not blank
        if document == "line" and line.endswith("\n"):
            yield from finish()
        elif size >= piece_chars and has_text:
            # Hand out what we have but its trailing whitespace (which would belong to no
            # piece if the document ended there): the next piece continues with it.
            text = piece_text("".join(buf), first=not started, last=False)
            kept = text.rstrip()
            report.characters += len(kept)
            started = True
            buf = [text[len(kept) :]]
            size = len(buf[0])
            yield kept, False
    yield from finish()


def iter_documents(
    sources: Sequence[str | Path],
    *,
    document: str = "paragraph",
    encoding_errors: str = "strict",
    report: ReadReport | None = None,
) -> Iterator[str]:
    """The documents of `sources`, streamed (a very long one arrives in ~1 MB pieces)."""
    for text, _ in iter_pieces(
        sources, document=document, encoding_errors=encoding_errors, report=report
    ):
        if text:
            yield text
