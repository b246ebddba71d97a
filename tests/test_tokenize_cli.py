"""`lmtool tokenize ...` as a user runs it: outputs, stdout/stderr, exit codes, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lmtool.text.shards import open_shards

TEXT = (
    "The cat sat on the mat.\nIt was a sunny day.\n\n"
    "A dog ran far away, quickly.\n\n"
    "Naïve café owners serve crème brûlée 😀.\n\n"
    "Never say never; always say always.\n\n"
)


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text(TEXT * 5, encoding="utf-8")
    (d / "sub" / "b.txt").write_text(TEXT.upper() * 3, encoding="utf-8")
    return d


@pytest.fixture
def tok(cli, corpus, tmp_path):
    path = tmp_path / "tok.json"
    result = cli("tokenize", "train", corpus, "-o", path, "--vocab-size", "300")
    assert result.exit_code == 0, result.stderr
    return path


def assert_bad_input(result, *words):
    """Exit 2, one clear line on stderr naming the problem, no traceback, no stdout."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtool: error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram", "char"])
def test_train_each_kind(cli, corpus, tmp_path, kind):
    out = tmp_path / f"{kind}.json"
    result = cli("tokenize", "train", corpus, "--kind", kind, "--vocab-size", "280", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"trained a {kind} tokenizer" in result.stderr
    model = json.loads(out.read_text())["model"]
    assert model["type"] == {"bpe": "BPE", "wordpiece": "WordPiece", "unigram": "Unigram"}.get(
        kind, "WordLevel"
    )


def test_a_smaller_vocabulary_is_a_warning_only_when_a_size_was_asked_for(cli, corpus, tmp_path):
    unasked = cli("tokenize", "train", corpus, "--kind", "char", "-o", tmp_path / "a.json")
    assert unasked.exit_code == 0, unasked.stderr
    assert "warning" not in unasked.stderr and "trained a char tokenizer" in unasked.stderr
    asked = cli("tokenize", "train", corpus, "--kind", "char", "--vocab-size", "8000",
                "-o", tmp_path / "b.json")
    assert asked.exit_code == 0, asked.stderr
    [warning] = [line for line in asked.stderr.splitlines() if "warning" in line]
    assert "not the 8,000 asked for" in warning
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_train_from_stdin_with_normalization(cli, tmp_path):
    out = tmp_path / "tok.json"
    result = cli(
        "tokenize", "train", "-", "--kind", "char", "--lowercase", "--strip-accents",
        "--vocab-size", "60", "--min-frequency", "1", "-o", out, input=TEXT,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    ids = cli("tokenize", "ids", "-t", out, input="CAFÉ\n")
    assert ids.exit_code == 0
    back = cli("tokenize", "decode", "-t", out, input=ids.stdout)
    assert back.stdout == "cafe\n"


def test_encode_writes_shards_and_summary(cli, corpus, tok, tmp_path):
    out = tmp_path / "data"
    result = cli("tokenize", "encode", corpus, "--tokenizer", tok, "-o", out, "--seed", "5")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "encoded" in result.stderr and "tokens" in result.stderr
    shards = open_shards(out)
    docs = (5 + 3) * 4
    assert int((shards.train == 3).sum()) + int((shards.val == 3).sum()) == docs
    assert shards.meta["seed"] == 5 and shards.meta["sources"] == [str(corpus)]
    # --tokenizer may name the shard directory itself
    again = cli("tokenize", "encode", corpus, "-t", out, "-o", tmp_path / "d2", "--seed", "5")
    assert again.exit_code == 0, again.stderr
    assert np.array_equal(open_shards(tmp_path / "d2").train, shards.train)


def test_encode_quiet_prints_nothing(cli, corpus, tok, tmp_path):
    result = cli("tokenize", "encode", corpus, "-t", tok, "-o", tmp_path / "d", "--quiet")
    assert result.exit_code == 0 and result.stderr == "" and result.stdout == ""


def test_ids_decode_round_trip(cli, tok):
    lines = ["The cat sat on the mat.", "", "Naïve 😀 ✓ 日本", "  spaced  out  "]
    ids = cli("tokenize", "ids", "--tokenizer", tok, input="\n".join(lines) + "\n")
    assert ids.exit_code == 0, ids.stderr
    out_lines = ids.stdout.splitlines()
    assert len(out_lines) == len(lines)
    assert out_lines[1] == ""
    assert all(w.isdigit() for line in out_lines for w in line.split())
    text = cli("tokenize", "decode", "--tokenizer", tok, input=ids.stdout)
    assert text.exit_code == 0, text.stderr
    assert text.stdout.splitlines() == lines


def test_ids_reads_files(cli, tok, tmp_path):
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    result = cli("tokenize", "ids", "-t", tok, tmp_path / "in.txt")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2


def test_decode_keeps_special_tokens_unless_skipped(cli, tok):
    ids = cli("tokenize", "ids", "-t", tok, input="cat\n").stdout.strip()
    kept = cli("tokenize", "decode", "-t", tok, input=f"{ids} 3\n")
    assert kept.stdout == "cat[EOS]\n"
    skipped = cli("tokenize", "decode", "-t", tok, "--skip-special", input=f"{ids} 3\n")
    assert skipped.stdout == "cat\n"


@pytest.mark.parametrize("line, words", [("1 2 abc", ["'abc'"]), ("5 999999", ["999999"])])
def test_decode_bad_ids(cli, tok, line, words):
    result = cli("tokenize", "decode", "-t", tok, input=line + "\n")
    assert_bad_input(result, "line 1", *words)


def test_stats_text_and_json(cli, corpus, tok):
    text = cli("tokenize", "stats", "--tokenizer", tok, corpus)
    assert text.exit_code == 0, text.stderr
    for label in (
        "documents",
        "tokens",
        "characters per token",
        "unknown tokens",
        "vocabulary use",
    ):
        assert label in text.stdout
    result = cli("tokenize", "stats", "-t", tok, corpus, "--format", "json")
    stats = json.loads(result.stdout)
    assert stats["documents"] == 32
    assert stats["unknown_tokens"] == 0 and stats["unknown_rate"] == 0.0  # byte-level bpe
    assert stats["chars_per_token"] == pytest.approx(stats["characters"] / stats["tokens"])
    assert 0 < stats["vocab_use"] <= 1


def test_stats_counts_unknown_characters(cli, tmp_path):
    (tmp_path / "a.txt").write_text("aaa bbb\n")
    chars = tmp_path / "chars.json"
    cli(
        "tokenize",
        "train",
        tmp_path / "a.txt",
        "--kind",
        "char",
        "--vocab-size",
        "20",
        "--min-frequency",
        "1",
        "-o",
        chars,
    )
    (tmp_path / "b.txt").write_text("ab xy\n")
    stats = json.loads(
        cli("tokenize", "stats", "-t", chars, tmp_path / "b.txt", "--format", "json").stdout
    )
    assert stats["unknown_tokens"] == 2 and stats["unknown_rate"] == pytest.approx(2 / 5)


def test_help_has_examples(cli):
    for command in ("train", "encode", "ids", "decode", "stats"):
        result = cli("tokenize", command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout


# --- bad input: one line on stderr, exit 2, nothing written ---


def test_missing_path(cli, tok, tmp_path):
    result = cli("tokenize", "train", tmp_path / "nope.txt", "-o", tmp_path / "t.json")
    assert_bad_input(result, "nope.txt", "does not exist")
    assert not (tmp_path / "t.json").exists()
    result = cli("tokenize", "encode", tmp_path / "nope*.txt", "-t", tok, "-o", tmp_path / "o")
    assert_bad_input(result, "matches no files")
    assert not (tmp_path / "o").exists()


def test_directory_without_text_files(cli, tmp_path):
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "x.bin").write_bytes(b"\0\1\2\3")
    result = cli("tokenize", "train", tmp_path / "bins", "-o", tmp_path / "t.json")
    assert_bad_input(result, "holds no text files")


def test_empty_corpus(cli, tok, tmp_path):
    (tmp_path / "e.txt").write_text("\n \n")
    assert_bad_input(
        cli("tokenize", "train", tmp_path / "e.txt", "-o", tmp_path / "t.json"), "empty corpus"
    )
    assert_bad_input(
        cli("tokenize", "encode", tmp_path / "e.txt", "-t", tok, "-o", tmp_path / "o"),
        "empty corpus",
    )
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "o").exists()


def test_binary_file_is_skipped_with_warning(cli, corpus, tok, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\0\0\0")
    result = cli(
        "tokenize", "encode", corpus, tmp_path / "blob.bin", "-t", tok, "-o", tmp_path / "o"
    )
    assert result.exit_code == 0
    assert "lmtool: warning: skipped 1 binary file:" in result.stderr
    assert open_shards(tmp_path / "o").meta["skipped_binary"] == [str(tmp_path / "blob.bin")]


def test_invalid_utf8(cli, tok, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"good line\n\ncaf" + b"\xe9 au lait\n")
    result = cli("tokenize", "encode", bad, "-t", tok, "-o", tmp_path / "o")
    assert_bad_input(result, "latin1.txt", "byte offset 14", "--encoding-errors")
    assert not (tmp_path / "o").exists()
    for mode in ("replace", "ignore"):
        out = tmp_path / mode
        result = cli("tokenize", "encode", bad, "-t", tok, "-o", out, "--encoding-errors", mode)
        assert result.exit_code == 0, result.stderr
        verb = "replaced" if mode == "replace" else "ignored"
        assert f"warning: {verb} 1 byte of invalid UTF-8 in 1 file" in result.stderr


def test_existing_output_without_force(cli, corpus, tok, tmp_path):
    result = cli("tokenize", "train", corpus, "-o", tok)
    assert_bad_input(result, "already exists", "--force")
    out = tmp_path / "data"
    assert cli("tokenize", "encode", corpus, "-t", tok, "-o", out).exit_code == 0
    before = (out / "train.bin").read_bytes()
    assert_bad_input(
        cli("tokenize", "encode", corpus, "-t", tok, "-o", out, "--seed", "9"), "already exists"
    )
    assert (out / "train.bin").read_bytes() == before
    forced = cli("tokenize", "encode", corpus, "-t", tok, "-o", out, "--seed", "9", "--force")
    assert forced.exit_code == 0
    assert open_shards(out).meta["seed"] == 9


def test_vocab_size_too_small(cli, corpus, tmp_path):
    result = cli("tokenize", "train", corpus, "-o", tmp_path / "t.json", "--vocab-size", "100")
    assert_bad_input(result, "--vocab-size 100", "at least 263")
    result = cli(
        "tokenize",
        "train",
        corpus,
        "-o",
        tmp_path / "t.json",
        "--kind",
        "char",
        "--vocab-size",
        "5",
    )
    assert_bad_input(result, "at least 8")


def test_not_a_tokenizer(cli, corpus, tmp_path):
    fake = tmp_path / "fake.json"
    fake.write_text('{"hello": "world"}')
    for args in (
        ("encode", corpus, "-o", tmp_path / "o"),
        ("ids",),
        ("decode",),
        ("stats", corpus),
    ):
        result = cli("tokenize", args[0], "-t", fake, *args[1:], input="x\n")
        assert_bad_input(result, "fake.json is not a tokenizer file")
    assert not (tmp_path / "o").exists()


def lmtool_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "lmtool")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "lmtool"]


def test_broken_pipe_ends_quietly(tok, tmp_path):
    big = tmp_path / "many.txt"
    big.write_text("the cat sat on the mat\n" * 50_000)
    cmd = " ".join(lmtool_command()) + f" tokenize ids -t {tok} {big} | head -1"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True, env=env
    )
    assert len(result.stdout.splitlines()) == 1
    assert result.stdout.split()[0].isdigit()
    assert "Traceback" not in result.stderr and "Error" not in result.stderr
    assert result.returncode in (0, 141)  # SIGPIPE status, as any Unix tool


def test_encode_records_sources_absolute(cli, corpus, tok, tmp_path, monkeypatch):
    """A run trained from another directory can still name the text its shards hold."""
    monkeypatch.chdir(corpus.parent)
    result = cli("tokenize", "encode", corpus.name, "-t", tok, "-o", tmp_path / "rel")
    assert result.exit_code == 0, result.stderr
    assert open_shards(tmp_path / "rel").meta["sources"] == [str(corpus.resolve())]
