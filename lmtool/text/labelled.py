"""Labelled documents: TSV, CSV, JSONL and folder-per-class readers, and the label vocabulary.

    for ex in iter_labelled("reviews/train.tsv"):   # Example(label, text, where)
        ...
    for text in iter_texts("reviews/train.tsv"):    # the text column alone
        ...
    for text, last in iter_text_pieces(["notes/", "reviews/train.tsv"]):  # what LMs read
        ...

Formats (told from the extension, else from the content):
  tsv     `label<TAB>text`, a header naming the `label` and `text` columns (any order,
          other columns ignored) or no header and exactly those two columns. A field
          wrapped in double quotes with its inner quotes doubled (what spreadsheets and
          pandas write) is unquoted and may span lines; any other quote is literal text.
  csv     the same with commas, RFC 4180 quoting (Python's csv module).
  jsonl   one JSON object per line with "label" and "text" fields.
  folder  a directory with one sub-directory per class; every file under a class
          directory (recursively) is one document of that class.

A text loses the whitespace around it, as every document does (text/boundaries.py).
Everything streams: one row is parsed at a time, and a folder's files are read one by
one. Rows without a label or a text, or with an empty label, stop reading with an
error that names the file and line; binary or unreadable files in a folder are
reported and skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from lmtool.errors import BadInput
from lmtool.text.boundaries import document_text
from lmtool.text.files import STDIN, NotText, display_name, read_text, walk
from lmtool.text.sources import ReadReport, iter_lines, iter_pieces, resolve_sources
from lmtool.wording import count

FORMATS = ("tsv", "csv", "jsonl", "folder")
EXTENSIONS = {".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".jsonl": "jsonl",
              ".ndjson": "jsonl", ".json": "jsonl"}
LABEL, TEXT = "label", "text"
FORMATS_HELP = (
    "lmtool reads TSV or CSV with label and text columns (.tsv, .csv), JSONL with label "
    "and text fields (.jsonl), or a directory with one sub-directory per class"
)

_NO_LIMIT = 1 << 62  # iter_lines: never cut a row into parts
_MAX_QUOTED_LINES = 10_000  # a TSV quoted field spanning more lines is taken literally
_QUOTED = re.compile(r'"((?:[^"]|"")*)"(?=\t|$)', re.DOTALL)  # a whole quoted TSV field


class Example(NamedTuple):
    label: str  # "" when the reader was asked for texts only and the row has none
    text: str
    where: str  # "file:line" (or the file, for a folder document): for messages


@dataclass
class LabelledReport:
    """What reading found; filled in as the examples are read."""

    examples: int = 0
    empty_texts: list[str] = field(default_factory=list)  # where (documents, never dropped)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) in folders
    ignored: list[str] = field(default_factory=list)  # files beside the class folders

    def warnings(self) -> list[str]:
        out = []
        if self.empty_texts:
            first = ", ".join(self.empty_texts[:3])
            documents = count(len(self.empty_texts), "document")
            out.append(f"{documents} with an empty text (kept): {first}")
        if self.skipped:
            first = ", ".join(f"{path} ({why})" for path, why in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            out.append(f"skipped {count(len(self.skipped), 'unreadable file')}: {first}{more}")
        if self.ignored:
            out.append(f"ignored {count(len(self.ignored), 'file')} outside the class folders: "
                       + ", ".join(self.ignored[:3]))
        return out


# --- the label vocabulary --------------------------------------------------------------


def _label_key(name: str) -> tuple:
    """Integers in numeric order ("2" before "10"), then the rest alphabetically."""
    try:
        return (0, int(name), name)
    except ValueError:
        return (1, 0, name)


@dataclass(frozen=True)
class LabelVocab:
    """Class names in a fixed order; a class's index is its output unit in the head."""

    names: tuple[str, ...]

    @classmethod
    def build(cls, labels: Iterable[str]) -> LabelVocab:
        return cls(tuple(sorted(set(labels), key=_label_key)))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    @property
    def _index(self) -> dict[str, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {name: i for i, name in enumerate(self.names)}
            object.__setattr__(self, "_cache", cache)
        return cache

    def get(self, label: str) -> int | None:
        """The class index, or None for a label the vocabulary does not hold."""
        return self._index.get(label)

    def index(self, label: str) -> int:
        i = self.get(label)
        if i is None:
            raise BadInput(f"unknown label {label!r}", f"known: {', '.join(self.names)}")
        return i

    def require_classes(self, where: str) -> None:
        """Training needs two classes at least."""
        if len(self) < 2:
            only = f" ({self.names[0]!r})" if self.names else ""
            raise BadInput(f"{where} holds one class only{only}",
                           "a classifier needs examples of two classes or more")


# --- format detection ------------------------------------------------------------------


def labelled_format(path: str | Path) -> str | None:
    """The format a path's name announces (a directory is "folder"), or None."""
    if str(path) == STDIN:
        return None
    path = Path(path)
    if path.is_dir():
        return "folder"
    return EXTENSIONS.get(path.suffix.lower())


def _split_header(line: str) -> tuple[str, list[str]] | None:
    """("tsv"|"csv", names) when `line` is a header naming a label or a text column."""
    for fmt, sep in (("tsv", "\t"), ("csv", ",")):
        names = [n.strip().strip('"').strip().lower() for n in line.split(sep)]
        if len(names) > 1 and (LABEL in names or TEXT in names):
            return fmt, names
    return None


def _sniff(first_line: str) -> str | None:
    """Tell the format from a file's first non-blank line, if it says clearly."""
    line = first_line.lstrip("\ufeff").strip()
    if line.startswith("{"):
        return "jsonl"
    header = _split_header(line)
    return header[0] if header else None


def _cannot_tell(name: str, why: str) -> BadInput:
    return BadInput(f"cannot tell the format of {name}: {why}", FORMATS_HELP)


# --- rows to examples ------------------------------------------------------------------


class _Columns:
    """Where the label and the text are in a row, from a header or from the first row."""

    def __init__(self, name: str, fmt: str, need_label: bool):
        self.name, self.fmt, self.need_label = name, fmt, need_label
        self.header: list[str] | None = None
        self.width = 2
        self.label_at: int | None = 0
        self.text_at = 1

    def read_header(self, fields: list[str], line: int) -> bool:
        """Take `fields` as the header if it names a label or text column; else the file
        has none and must hold (label, text) pairs."""
        names = [f.strip().lstrip("\ufeff").strip().lower() for f in fields]
        if LABEL not in names and TEXT not in names:
            other = _split_header(fields[0]) if len(fields) == 1 else None
            if other is not None:  # e.g. "label,text" in a file named .tsv
                raise BadInput(
                    f"{self.name}:{line}: the header is {other[0].upper()}, but the file is "
                    f"read as {self.fmt.upper()}",
                    f"rename the file to .{other[0]}, or write it with "
                    + ("tabs" if self.fmt == "tsv" else "commas"),
                )
            return False
        if TEXT not in names or (self.need_label and LABEL not in names):
            missing = TEXT if TEXT not in names else LABEL
            raise BadInput(
                f"{self.name}:{line}: the header has no {missing!r} column "
                f"(columns: {', '.join(repr(f) for f in fields)})",
                "name the columns label and text",
            )
        self.header = names
        self.width = len(names)
        self.label_at = names.index(LABEL) if LABEL in names else None
        self.text_at = names.index(TEXT)
        return True

    def example(self, fields: list[str], line: int, sep: str) -> Example:
        where = f"{self.name}:{line}"
        if len(fields) > self.width and self.text_at == self.width - 1:
            # The text is the last column: a separator in it split it in several fields.
            fields = fields[: self.text_at] + [sep.join(fields[self.text_at :])]
        shape = (f"the header names {count(self.width, 'column')}: {', '.join(self.header)}"
                 if self.header else "a file without a header holds label, text rows")
        if len(fields) < self.width:
            missing = "text" if len(fields) <= self.text_at else "label"
            raise BadInput(f"{where}: the row has no {missing} "
                           f"({count(len(fields), 'field')}; {shape})",
                           "give every row a label and a text" if self.header else
                           "give every row a label and a text, or add a header line")
        if len(fields) > self.width:
            raise BadInput(f"{where}: the row has {len(fields)} fields ({shape})",
                           "quote the fields that hold a " + ("tab" if sep == "\t" else "comma"))
        label = fields[self.label_at].strip() if self.label_at is not None else ""
        if self.need_label and not label:
            raise BadInput(f"{where}: the row has an empty label", "give every row a label")
        return Example(label, document_text(fields[self.text_at]), where)


def _opens_quote(line: str, pos: int) -> bool:
    """Whether the quote at `pos` is still open at the end of `line` (no closing quote
    after it, once the doubled ones are taken out)."""
    return '"' not in line[pos + 1 :].replace('""', "")


def _tsv_records(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """TSV records with the line each starts on; blank lines skipped.

    A field is split at tabs. One that is wrapped in quotes with its inner quotes
    doubled is unquoted, and one that opens a quote it does not close on its line is
    looked for on the next lines; if no closing quote comes, those lines are given back
    and the quote is literal text.
    """
    pending: deque[tuple[int, str]] = deque()  # lines read ahead and given back

    def next_line() -> tuple[int, str] | None:
        return pending.popleft() if pending else next(lines, None)

    while (item := next_line()) is not None:
        number, line = item
        if not line.strip():
            continue
        line = line.rstrip("\r\n")
        if '"' not in line:
            yield number, line.split("\t")  # the fast path: almost every row
            continue
        fields: list[str] = []
        pos = 0
        while True:
            match = _QUOTED.match(line, pos) if line.startswith('"', pos) else None
            if match is None and line.startswith('"', pos) and _opens_quote(line, pos):
                original, taken = line, []
                while match is None and _opens_quote(line, pos) and len(taken) < _MAX_QUOTED_LINES:
                    more = next_line()
                    if more is None:
                        break
                    taken.append(more)
                    line += "\n" + more[1].rstrip("\r\n")
                    match = _QUOTED.match(line, pos)
                if match is None:  # never closed: give the lines back
                    line = original
                    pending.extendleft(reversed(taken))
            if match is not None:
                fields.append(match.group(1).replace('""', '"'))
                pos = match.end()
            else:  # literal text up to the next tab
                end = line.find("\t", pos)
                end = len(line) if end < 0 else end
                fields.append(line[pos:end])
                pos = end
            if pos >= len(line):
                break
            pos += 1  # the tab
            if pos == len(line):
                fields.append("")
                break
        yield number, fields


def _lines(source: Path | str, encoding_errors: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of one file or stdin; a binary file is refused."""
    read = ReadReport()
    lines = iter_lines([source], encoding_errors=encoding_errors, report=read, limit=_NO_LIMIT)
    for number, (_, line) in enumerate(lines, start=1):
        yield number, line
    if read.skipped_binary:
        raise BadInput(f"{read.skipped_binary[0]} is a binary file, not labelled text",
                       FORMATS_HELP)


def _peek_format(name: str, lines: Iterator[tuple[int, str]]) -> tuple[str, list]:
    """Sniff the format from the first non-blank line; returns it and the lines read."""
    seen = []
    for number, line in lines:
        seen.append((number, line))
        if line.strip():
            fmt = _sniff(line)
            if fmt is None:
                raise _cannot_tell(name, "the first line is neither a JSON object nor a "
                                   "header naming label and text columns")
            return fmt, seen
    raise BadInput(f"{name} holds no examples", "check the file")


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _iter_delimited(name: str, lines: Iterator[tuple[int, str]], fmt: str,
                    need_label: bool) -> Iterator[Example]:
    columns = _Columns(name, fmt, need_label)
    sep = "\t" if fmt == "tsv" else ","
    first = True
    records = _tsv_records(lines) if fmt == "tsv" else _csv_records(name, lines)
    for number, fields in records:
        if first:
            first = False
            if columns.read_header(fields, number):
                continue
            if not need_label and len(fields) == 1:
                columns.width, columns.label_at, columns.text_at = 1, None, 0
        yield columns.example(fields, number, sep)


def _csv_records(name: str, lines: Iterator[tuple[int, str]]
                 ) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the line each starts on (a quoted field may span lines)."""
    at = {"start": 0}

    def feed() -> Iterator[str]:
        for number, line in lines:
            at["start"] = at["start"] or number  # the first line of the current record
            yield line

    reader = csv.reader(feed(), strict=True)  # an unclosed quote is an error
    while True:
        at["start"] = 0
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise BadInput(f"{name}:{at['start']}: malformed CSV ({e})",
                           "check the quoting of that row") from None
        if any(f.strip() for f in fields):  # blank lines are no rows
            yield at["start"], fields


def _iter_jsonl(name: str, lines: Iterator[tuple[int, str]],
                need_label: bool) -> Iterator[Example]:
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise BadInput(f"{where}: not valid JSON ({e})",
                           "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise BadInput(f"{where}: a JSON {type(row).__name__}, not an object",
                           'write one object per line: {"label": ..., "text": ...}')
        if TEXT not in row or (need_label and LABEL not in row):
            missing = TEXT if TEXT not in row else LABEL
            raise BadInput(f"{where}: the object has no {missing!r} field",
                           'write {"label": ..., "text": ...} on every line')
        text, label = row[TEXT], row.get(LABEL)
        if not isinstance(text, str):
            raise BadInput(f"{where}: \"text\" must be a string, not {type(text).__name__}")
        if isinstance(label, (dict, list)):
            raise BadInput(f"{where}: \"label\" must be a string or a number")
        label = "" if label is None else (str(label).lower() if isinstance(label, bool)
                                          else str(label)).strip()
        if need_label and not label:
            raise BadInput(f"{where}: the row has an empty label", "give every row a label")
        yield Example(label, document_text(text), where)


# --- folders ---------------------------------------------------------------------------


def _iter_folder(root: Path, encoding_errors: str, report: LabelledReport) -> Iterator[Example]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise BadInput(f"{root} has no class sub-directories",
                       "put each class's documents in a sub-directory named after the class")
    report.ignored.extend(str(p) for p in sorted(root.iterdir())
                          if p.is_file() and not p.name.startswith("."))
    for class_dir in classes:
        for path in walk(class_dir):
            try:
                text, _ = read_text(path, encoding_errors)
            except NotText as e:
                report.skipped.append((str(path), e.why))
                continue
            yield Example(class_dir.name.strip(), document_text(text), str(path))


# --- the readers -------------------------------------------------------------------------


def iter_labelled(
    source: str | Path,
    *,
    format: str | None = None,
    encoding_errors: str = "strict",
    report: LabelledReport | None = None,
    need_label: bool = True,
) -> Iterator[Example]:
    """The examples of one labelled source (a file, a folder, or "-" for stdin), in order.

    `format` overrides what the extension or content says. With `need_label=False` a
    file may lack the label column (Example.label is then ""): `finetune lm` reads the
    text column of labelled and unlabelled files alike.
    """
    report = report if report is not None else LabelledReport()
    if format is not None and format not in FORMATS:
        raise BadInput(f"unknown labelled format {format!r}", f"choose one of {', '.join(FORMATS)}")
    name = display_name(source)
    path = None if str(source) == STDIN else Path(source).expanduser()
    if path is not None and not path.exists():
        raise BadInput(f"{name} does not exist", "check the path")
    fmt = format or (labelled_format(path) if path is not None else None)
    if path is not None and path.is_dir():
        if fmt != "folder":
            raise BadInput(f"{name} is a directory, not a {fmt} file")
        examples = _iter_folder(path, encoding_errors, report)
    else:
        if fmt == "folder":
            raise BadInput(f"{name} is not a directory", "a folder of labelled documents "
                           "has one sub-directory per class")
        lines = _lines(path if path is not None else STDIN, encoding_errors)
        if fmt is None:
            fmt, seen = _peek_format(name, lines)
            lines = _chain(seen, lines)
        if fmt == "jsonl":
            examples = _iter_jsonl(name, lines, need_label)
        else:
            examples = _iter_delimited(name, lines, fmt, need_label)
    for example in examples:
        report.examples += 1
        if not example.text:
            report.empty_texts.append(example.where)
        yield example
    if report.examples == 0:
        raise BadInput(f"{name} holds no examples", "check the file")


def iter_texts(
    source: str | Path,
    *,
    format: str | None = None,
    encoding_errors: str = "strict",
    report: LabelledReport | None = None,
) -> Iterator[str]:
    """The text column of a labelled source (labels optional), for LM fine-tuning."""
    for example in iter_labelled(source, format=format, encoding_errors=encoding_errors,
                                 report=report, need_label=False):
        yield example.text


def iter_text_pieces(
    sources: Sequence[str | Path],
    *,
    document: str = "paragraph",
    encoding_errors: str = "strict",
    report: ReadReport | None = None,
) -> Iterator[tuple[str, bool]]:
    """(text, is_last) pieces of the documents of plain and labelled files alike, what a
    language model reads: a TSV/CSV/JSONL file (told by its extension) gives each row's
    text as one document (empty ones dropped), any other file or stdin is cut as
    `sources.iter_pieces` cuts it (`document`)."""
    report = report if report is not None else ReadReport()
    for file in resolve_sources(sources, report=report):
        if labelled_format(file) in ("tsv", "csv", "jsonl"):
            report.files += 1
            for text in iter_texts(file, encoding_errors=encoding_errors):
                if text.strip():
                    report.documents += 1
                    report.characters += len(text)
                    yield text, True
        else:
            yield from iter_pieces([file], document=document, encoding_errors=encoding_errors,
                                   report=report)
