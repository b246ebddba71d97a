"""Labelled data readers: TSV, CSV, JSONL, folder per class, format detection, bad rows."""

from __future__ import annotations

import io
import json
import sys

import pytest

from lmtool.errors import BadInput
from lmtool.text.labelled import (
    LabelledReport,
    LabelVocab,
    iter_labelled,
    iter_texts,
    labelled_format,
)


def write(path, data: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def pairs(source, **kw):
    return [(e.label, e.text) for e in iter_labelled(source, **kw)]


def test_tsv_with_header_in_any_order_and_extra_columns(tmp_path):
    f = write(tmp_path / "a.tsv", "id\ttext\tlabel\n1\tgood film\tpos\n\n2\tbad\tneg\n")
    assert pairs(f) == [("pos", "good film"), ("neg", "bad")]
    wheres = [e.where for e in iter_labelled(f)]
    assert wheres == [f"{f}:2", f"{f}:4"]  # blank lines count, the header is line 1


def test_tsv_without_header_is_label_then_text(tmp_path):
    f = write(tmp_path / "a.tsv", "pos\tgood film\r\nneg\tit had\ta tab\n")
    # CRLF line ends are handled; a tab inside the last column stays in the text.
    assert pairs(f) == [("pos", "good film"), ("neg", "it had\ta tab")]


def test_tsv_quoting(tmp_path):
    text = (
        'label\ttext\n'
        'pos\t"she said ""wow"", twice"\n'  # a quoted field, doubled quotes inside
        'neg\t"a quoted field\nover two lines"\n'  # a quoted field may span lines
        'pos\t"Great" film, said nobody\n'  # a stray quote is literal text
        'neg\t"unclosed at the end\n'
    )
    f = write(tmp_path / "q.tsv", text)
    assert pairs(f) == [
        ("pos", 'she said "wow", twice'),
        ("neg", "a quoted field\nover two lines"),
        ("pos", '"Great" film, said nobody'),
        ("neg", '"unclosed at the end'),
    ]
    assert [e.where.rsplit(":", 1)[1] for e in iter_labelled(f)] == ["2", "3", "5", "6"]


def test_csv_quoting_and_multiline_rows(tmp_path):
    text = 'text,label\n"a, b and ""c""",x\n"two\nlines",y\nplain text,x\n'
    f = write(tmp_path / "a.csv", text)
    assert pairs(f) == [("x", 'a, b and "c"'), ("y", "two\nlines"), ("x", "plain text")]
    assert [e.where.rsplit(":", 1)[1] for e in iter_labelled(f)] == ["2", "3", "5"]


def test_csv_without_header_joins_commas_of_the_text(tmp_path):
    f = write(tmp_path / "a.csv", "pos,Great, fun film\n")
    assert pairs(f) == [("pos", "Great, fun film")]


def test_jsonl(tmp_path):
    rows = [{"label": "pos", "text": "nice"}, {"text": "meh", "label": 0, "id": 3},
            {"label": True, "text": " padded "}]
    f = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert pairs(f) == [("pos", "nice"), ("0", "meh"), ("true", "padded")]


def test_folder_per_class(tmp_path):
    root = tmp_path / "docs"
    write(root / "pos" / "a.txt", "good\n")
    write(root / "pos" / "deep" / "b.txt", "very good")
    write(root / "neg" / "c.txt", "bad")
    write(root / "neg" / "image.png", b"\x89PNG\0\0\0\0")
    write(root / "neg" / "latin1.txt", b"caf\xe9")
    write(root / "neg" / ".hidden", "secret")
    write(root / "README", "about this set")
    report = LabelledReport()
    assert pairs(root, report=report) == [("neg", "bad"), ("pos", "good"), ("pos", "very good")]
    assert [(p.rsplit("/", 1)[1], why) for p, why in report.skipped] == [
        ("image.png", "binary"), ("latin1.txt", "not valid UTF-8 (byte offset 3)")]
    assert report.ignored == [str(root / "README")]
    assert any("skipped 2 unreadable" in w for w in report.warnings())
    # --encoding-errors replace reads the Latin-1 file instead of skipping it.
    assert ("neg", "caf\ufffd") in pairs(root, encoding_errors="replace")


def test_folder_unreadable_file_is_skipped(tmp_path):
    import os

    root = tmp_path / "docs"
    write(root / "a" / "ok.txt", "fine")
    (root / "a" / "dangling.txt").symlink_to(tmp_path / "gone")
    report = LabelledReport()
    assert pairs(root, report=report) == [("a", "fine")]
    assert report.skipped == [(str(root / "a" / "dangling.txt"), "No such file or directory")]
    locked = write(root / "b" / "locked.txt", "secret")
    write(root / "b" / "ok.txt", "fine too")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        report = LabelledReport()
        assert pairs(root, report=report) == [("a", "fine"), ("b", "fine too")]
        assert report.skipped[0][0] == str(locked)
    finally:
        locked.chmod(0o644)


@pytest.mark.parametrize(
    "name, content, fmt",
    [
        ("data.txt", "label\ttext\npos\tgood\n", "tsv"),
        ("data", "text,label\ngood,pos\n", "csv"),
        ("data.dat", '\n{"label": "pos", "text": "good"}\n', "jsonl"),
    ],
)
def test_format_from_content(tmp_path, name, content, fmt):
    f = write(tmp_path / name, content)
    assert labelled_format(f) is None
    assert pairs(f) == [("pos", "good")]


def test_format_from_extension(tmp_path):
    assert labelled_format(tmp_path / "x.TSV") == "tsv"
    assert labelled_format(tmp_path / "x.csv") == "csv"
    assert labelled_format(tmp_path / "x.jsonl") == "jsonl"
    assert labelled_format(tmp_path) == "folder"


def test_stdin(monkeypatch):
    data = b"label\ttext\npos\tfrom a pipe\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert pairs("-") == [("pos", "from a pipe")]


def test_texts_need_no_label(tmp_path):
    f = write(tmp_path / "t.tsv", "text\nfirst\nsecond\n")
    assert list(iter_texts(f)) == ["first", "second"]
    j = write(tmp_path / "t.jsonl", '{"text": "one"}\n{"text": "two", "label": ""}\n')
    assert list(iter_texts(j)) == ["one", "two"]
    with pytest.raises(BadInput, match="no 'label' column"):
        list(iter_labelled(f))


def test_empty_texts_are_kept_and_reported(tmp_path):
    f = write(tmp_path / "a.tsv", "label\ttext\npos\t\nneg\tbad\n")
    report = LabelledReport()
    assert pairs(f, report=report) == [("pos", ""), ("neg", "bad")]
    assert report.empty_texts == [f"{f}:2"]
    assert "1 document with an empty text" in report.warnings()[0]


def test_reading_streams(tmp_path):
    """The reader hands out the first rows before it has read the rest of the file."""
    f = write(tmp_path / "a.tsv", "label\ttext\npos\tgood\n" + "neg\tbad\n" * 1000 + "x\n")
    rows = iter_labelled(f)
    assert next(rows).label == "pos"  # the broken last row has not been read yet
    with pytest.raises(BadInput, match=r"a.tsv:1003: the row has no text"):
        list(rows)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.tsv", "label\ttext\npos\tgood\nneg\n", r"a.tsv:3: the row has no text \(1 field"),
        ("a.tsv", "label\ttext\n\tno label here\n", r"a.tsv:2: the row has an empty label"),
        ("a.tsv", "label\ttext\n  \tblank label\n", r"a.tsv:2: the row has an empty label"),
        ("a.tsv", "text\tlabel\ngood\n", r"a.tsv:2: the row has no label"),
        ("a.tsv", "text\tscore\ngood\t1\n", r"a.tsv:1: the header has no 'label' column"),
        ("a.tsv", "label\tscore\npos\t1\n", r"a.tsv:1: the header has no 'text' column"),
        ("a.tsv", "just some text\n", r"a.tsv:1: the row has no text"),
        ("a.tsv", "label\ttext\tid\npos\ta\tb\tc\n", r"a.tsv:2: the row has 4 fields"),
        ("a.csv", 'label,text\npos,"unclosed\n', r"a.csv:2: malformed CSV"),
        ("a.jsonl", '{"label": "pos", "text": "x"}\n{"label": "neg"}\n',
         r"a.jsonl:2: the object has no 'text' field"),
        ("a.jsonl", '{"text": "x"}\n', r"a.jsonl:1: the object has no 'label' field"),
        ("a.jsonl", '{"label": " ", "text": "x"}\n', r"a.jsonl:1: the row has an empty label"),
        ("a.jsonl", '{"label": "a", "text": "x"}\n[1, 2]\n', r"a.jsonl:2: a JSON list"),
        ("a.jsonl", '{"label": "a", "text": "x"}\n{oops\n', r"a.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"label": "a", "text": 3}\n', r'a.jsonl:1: "text" must be a string, not int'),
        ("a.txt", "positive: a fine film\n",
         r"cannot tell the format of .*a.txt.*reads TSV or CSV"),
        ("a.tsv", "", r"a.tsv holds no examples"),
        ("a.csv", "label\ttext\npos\tgood\n", r"a.csv:1: the header is TSV, but the file is read"),
        ("a.tsv", "label\ttext\n", r"a.tsv holds no examples"),
        ("a.tsv", b"label\ttext\n\0\1\2", r"a.tsv is a binary file"),
        ("a.tsv", b"label\ttext\npos\tcaf\xe9\n", r"a.tsv is not valid UTF-8 \(byte offset 18\)"),
    ],
)
def test_bad_input(tmp_path, name, content, message):
    f = write(tmp_path / name, content)
    with pytest.raises(BadInput, match=message):
        list(iter_labelled(f))


def test_bad_sources(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        list(iter_labelled(tmp_path / "missing.tsv"))
    (tmp_path / "flat").mkdir()
    write(tmp_path / "flat" / "a.txt", "x")
    with pytest.raises(BadInput, match="has no class sub-directories"):
        list(iter_labelled(tmp_path / "flat"))
    with pytest.raises(BadInput, match="unknown labelled format 'xml'"):
        list(iter_labelled(tmp_path / "flat", format="xml"))
    f = write(tmp_path / "a.tsv", "pos\tx\n")
    with pytest.raises(BadInput, match="is not a directory"):
        list(iter_labelled(f, format="folder"))


def test_label_vocab():
    vocab = LabelVocab.build(["neg", "pos", "neg", "10", "2"])
    assert vocab.names == ("2", "10", "neg", "pos")  # numbers in numeric order first
    assert len(vocab) == 4 and "pos" in vocab and "maybe" not in vocab
    assert vocab.index("neg") == 2 and vocab.get("maybe") is None
    with pytest.raises(BadInput, match="unknown label 'maybe'"):
        vocab.index("maybe")
    vocab.require_classes("train.tsv")
    with pytest.raises(BadInput, match="train.tsv holds one class only \\('pos'\\)"):
        LabelVocab.build(["pos", "pos"]).require_classes("train.tsv")


def test_shipped_reviews_read_whole():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "corpora" / "reviews"
    examples = list(iter_labelled(root / "train.tsv"))
    assert len(examples) == 2000
    assert LabelVocab.build(e.label for e in examples).names == ("negative", "positive")
