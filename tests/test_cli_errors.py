"""Errors of every kind, from every command, become one stderr line and an exit code."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import typer

from lmtool.cli.main import app
from lmtool.errors import BadInput


def one_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("lmtool: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix("lmtool: error: ").rstrip("\n")


@pytest.mark.parametrize(("args", "expected"), [
    (["pretran"], "unknown command 'pretran' (did you mean 'pretrain'?)"),
    (["tokenize", "trian"], "unknown command 'trian' (did you mean 'train'?)"),
    (["pretrain", "data", "-o", "r", "--objectiv", "causal"],
     "lmtool pretrain has no option --objectiv (did you mean --objective?)"),
    (["--bogus"], "lmtool has no option --bogus (see `lmtool --help`)"),
    (["pretrain", "data"], "missing option '--output' / '-o' (see `lmtool pretrain --help`)"),
    (["info"], "missing argument 'run' (see `lmtool info --help`)"),
    (["tokenize", "train", "x", "-o", "t.json", "--kind", "bpee"],
     "--kind: 'bpee' is not one of bpe, wordpiece, unigram, char (did you mean bpe?)"),
    (["tokenize", "train", "x", "-o", "t.json", "--vocab-size=8k"],
     "--vocab-size: expects an integer, not '8k' (see `lmtool tokenize train --help`)"),
    (["pretrain", "d", "-o", "r", "--lr"],
     "option '--lr' requires an argument (see `lmtool pretrain --help`)"),
    (["pretrain", "d", "-o", "r", "--lr", "fast"],
     "--lr: expects a number, not 'fast' (see `lmtool pretrain --help`)"),
])
def test_usage_errors_are_one_line_with_a_suggestion(cli, args, expected):
    assert one_line(cli(*args), 2) == expected


def test_no_validation_library_wording(cli):
    for args in (["tokenize", "train", "x", "-o", "t", "--kind", "x"],
                 ["tokenize", "train", "x", "-o", "t", "--min-frequency", "x"]):
        err = one_line(cli(*args), 2)
        assert "Value error" not in err and "Input should be" not in err


def test_a_group_without_a_command_still_shows_its_help(cli):
    result = cli("tokenize")
    assert result.exit_code == 2 and "Usage: lmtool tokenize" in result.stdout + result.stderr


def raising(error: BaseException):
    def command() -> None:
        raise error

    return command


@pytest.fixture
def extra_command():
    """Add a command to the real app the way a new module would, then take it away."""
    added = []

    def add(error: BaseException):
        app.command("boom")(raising(error))
        added.append(app.registered_commands[-1])

    yield add
    for command in added:
        app.registered_commands.remove(command)


@pytest.mark.parametrize(("error", "code", "line"), [
    (BadInput("no good", "do this"), 2, "no good (do this)"),
    (OSError(errno.ENOSPC, "No space left on device", "out/x"), 1,
     "out/x: No space left on device (free some space"),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/x"), 2,
     "/etc/x: Permission denied (check its permissions"),
    (ZeroDivisionError("division by zero"), 1,
     "unexpected ZeroDivisionError: division by zero (a bug in lmtool"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_a_new_command_is_covered_without_doing_anything(cli, extra_command, error, code,
                                                         line):
    """No decorator, no wrapper: the app's group converts whatever a command raises."""
    extra_command(error)
    assert one_line(cli("boom"), code).startswith(line)


def test_an_explicit_exit_passes_through(cli, extra_command):
    extra_command(typer.Exit(3))
    result = cli("boom")
    assert result.exit_code == 3 and result.stderr == ""


def test_closed_stdout_exits_141_silently(tmp_path):
    """`lmtool ... | head`: the reader goes away; no error line, no traceback."""
    text = tmp_path / "big.txt"
    text.write_text("word " * 50 + "\n" * 1)
    tok = tmp_path / "tok.json"
    subprocess.run([sys.executable, "-m", "lmtool", "tokenize", "train", text, "--kind",
                    "char", "-o", tok, "-q"], check=True)
    lines = tmp_path / "lines.txt"
    lines.write_text("word word\n" * 200_000)
    proc = subprocess.Popen([sys.executable, "-m", "lmtool", "tokenize", "ids", "-t", tok,
                             lines], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""
