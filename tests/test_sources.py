"""Reading text sources: resolution, document modes, pieces, binary files, bad UTF-8, stdin."""

from __future__ import annotations

import io
import sys

import pytest

from lmtool.errors import BadInput
from lmtool.text import sources
from lmtool.text.sources import (
    ReadReport,
    iter_documents,
    iter_lines,
    iter_pieces,
    resolve_sources,
)


def write(path, data: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_resolve_files_directories_globs_and_stdin(tmp_path):
    a = write(tmp_path / "d" / "b.txt", "b\n")
    b = write(tmp_path / "d" / "sub" / "a.txt", "a\n")
    c = write(tmp_path / "d" / "a.md", "c\n")
    write(tmp_path / "d" / ".hidden.txt", "hidden\n")
    write(tmp_path / "d" / "image.bin", b"\x89PNG\0\0\0")
    loose = write(tmp_path / "loose.txt", "x\n")

    report = ReadReport()
    found = resolve_sources([tmp_path / "d", "-", str(loose)], report=report)
    # Directory entries are recursive and sorted, text files only; "-" stays a string.
    assert found == [c, a, b, "-", loose]
    assert report.skipped_binary == [str(tmp_path / "d" / "image.bin")]
    assert resolve_sources([str(tmp_path / "d" / "**" / "*.txt")]) == [a, b]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.txt", "does not exist"),
        (lambda p: p / "*.nothing", "matches no files"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no text files"),
        (
            lambda p: write(p / "bins" / "x.bin", b"\0\1\2").parent,
            "holds no text files",
        ),
    ],
)
def test_resolve_bad_sources(tmp_path, make, message):
    with pytest.raises(BadInput, match=message):
        resolve_sources([make(tmp_path)])


def test_paragraph_line_and_file_documents(tmp_path):
    f = write(tmp_path / "t.txt", "first para\nstill first\n\n  \t\nsecond\n\n\nthird")
    g = write(tmp_path / "u.txt", "other file\n")
    assert list(iter_documents([f, g])) == [
        "first para\nstill first",
        "second",
        "third",
        "other file",
    ]
    assert list(iter_documents([f], document="line")) == [
        "first para",
        "still first",
        "second",
        "third",
    ]
    # The whitespace around a document is no part of it (text/boundaries.py).
    assert list(iter_documents([f, g], document="file")) == [f.read_text().strip(),
                                                             g.read_text().strip()]


def test_whitespace_only_file_is_no_document(tmp_path):
    f = write(tmp_path / "blank.txt", "\n  \n\t\n")
    report = ReadReport()
    assert list(iter_documents([f], document="file", report=report)) == []
    assert report.documents == 0 and report.files == 1


def test_long_document_comes_in_bounded_pieces(tmp_path):
    lines = [f"line {i} " + "é" * (i % 7) + "\n" for i in range(500)]
    f = write(tmp_path / "long.txt", "".join(lines))
    report = ReadReport()
    pieces = list(iter_pieces([f], document="file", piece_chars=200, report=report))
    assert len(pieces) > 10
    assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
    assert "".join(text for text, _ in pieces) == f.read_text().strip()
    # Cut at line boundaries (the line end starts the next piece), each piece only a
    # line past the bound.
    assert all(text[: len(text) - len(text.lstrip())].endswith("\n") for text, _ in pieces[1:])
    assert max(len(text) for text, _ in pieces) < 200 + max(len(x) for x in lines)
    assert report.documents == 1 and report.characters == len(f.read_text().strip())


def test_one_huge_line_is_cut_between_characters(tmp_path):
    text = "ab😀ç" * 1000  # no newline at all; multi-byte characters everywhere
    f = write(tmp_path / "line.txt", text)
    parts = [line for _, line in iter_lines([f], limit=101)]
    assert len(parts) > 10
    assert "".join(parts) == text


def test_binary_file_is_skipped_and_counted(tmp_path):
    good = write(tmp_path / "good.txt", "hello\n")
    bad = write(tmp_path / "data.bin", b"abc\0def")
    report = ReadReport()
    assert list(iter_documents([good, bad], report=report)) == ["hello"]
    assert report.skipped_binary == [str(bad)]
    assert "skipped 1 binary file" in report.warnings()[0]


def test_invalid_utf8_strict_names_file_and_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "READ_BYTES", 16)  # the bad byte lies in a later chunk
    data = b"0123456789\n" * 5 + b"abc\xffdef\n"
    f = write(tmp_path / "latin.txt", data)
    with pytest.raises(BadInput) as e:
        list(iter_documents([f]))
    assert str(f) in e.value.message
    offset = data.index(b"\xff")
    assert f"byte offset {offset}" in e.value.message


def test_invalid_utf8_replace_and_ignore_count_bytes(tmp_path):
    f = write(tmp_path / "latin.txt", b"caf\xe9 and \xff\xfe end\n")
    report = ReadReport()
    assert list(iter_documents([f], encoding_errors="replace", report=report)) == [
        "caf\ufffd and \ufffd\ufffd end"
    ]
    assert report.undecodable_bytes == 3 and report.undecodable_files == [str(f)]
    assert "replaced 3 bytes of invalid UTF-8 in 1 file" in report.warnings("replace")[0]
    report = ReadReport()
    assert list(iter_documents([f], encoding_errors="ignore", report=report)) == ["caf and  end"]
    assert report.undecodable_bytes == 3


def test_stdin_dash(monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO("from stdin\n\nsecond ✓\n".encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    report = ReadReport()
    assert list(iter_documents(["-"], report=report)) == ["from stdin", "second ✓"]
    assert report.files == 1 and report.bytes == len("from stdin\n\nsecond ✓\n".encode())


def test_bad_modes_are_bad_input(tmp_path):
    f = write(tmp_path / "t.txt", "x\n")
    with pytest.raises(BadInput, match="--document"):
        list(iter_documents([f], document="sentence"))
    with pytest.raises(BadInput, match="--encoding-errors"):
        list(iter_documents([f], encoding_errors="surrogateescape"))


def test_every_reader_tells_binary_and_bad_utf8_files_alike(tmp_path):
    """Corpora, folders of labelled documents and documents to classify read a file
    through one function: the same files are refused for the same reasons."""
    from lmtool.text.documents import SkipReport, read_documents
    from lmtool.text.labelled import LabelledReport, iter_labelled

    write(tmp_path / "set" / "pos" / "ok.txt", "fine")
    latin = write(tmp_path / "set" / "pos" / "latin1.txt", b"caf\xe9 ole")
    blob = write(tmp_path / "set" / "pos" / "blob.txt", b"x" * 8000 + b"\0")
    folder = LabelledReport()
    assert [e.text for e in iter_labelled(tmp_path / "set", report=folder)] == ["fine"]
    classify = SkipReport()
    assert [text for _, text in read_documents([blob, latin, latin.parent / "ok.txt"],
                                               report=classify)] == ["fine"]
    reasons = [("binary", str(blob)), ("not valid UTF-8 (byte offset 3)", str(latin))]
    assert sorted((why, path) for path, why in folder.skipped) == reasons
    assert sorted((why, path) for path, why in classify.skipped) == reasons
    corpus = ReadReport()
    with pytest.raises(BadInput, match=r"latin1.txt is not valid UTF-8 \(byte offset 3\)"):
        list(iter_documents([tmp_path / "set"], report=corpus))
    assert corpus.skipped_binary == [str(blob)]
    # --encoding-errors replace: all three read the same text.
    text = "caf\ufffd ole"
    assert list(iter_documents([latin], encoding_errors="replace")) == [text]
    assert next(read_documents([latin], encoding_errors="replace"))[1] == text
    replaced = {e.where: e.text for e in iter_labelled(tmp_path / "set",
                                                       encoding_errors="replace")}
    assert replaced[str(latin)] == text
