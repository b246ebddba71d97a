"""Faults from outside, injected, through every command that writes: a full disk, a parent
that is a file, an unwritable location. Each is one stderr line naming the path and the
cause, exit 1 (the machine failed) or 2 (the path given is wrong), and no temporary file
is left behind."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys

import pytest
from lm_fixtures import TINY, make_shards
from test_resume import checkpoint_step, env, lmtool

FAST = [*TINY, "--batch-size", "4", "--eval-every", "0", "--quiet"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from lmtool.training import pretrain

    root = tmp_path_factory.mktemp("faults")
    shards = make_shards(root, kind="char", vocab_size=64)
    base = root / "base"
    pretrain(shards, base, overrides=dict(layers=1, heads=2, dim=16, context=16, batch_size=4,
                                          max_steps=1, eval_every=0), sample_chars=0)
    labelled = root / "labelled.tsv"
    labelled.write_text("".join(f"{'ab'[i % 2]}\tthe cat sees the ball {i}\n" for i in range(20)))
    return {"text": root / "data.txt", "tok": root / "data-tok.json", "shards": shards,
            "base": base, "labelled": labelled}


def writers(inputs, out):
    """Every command that writes, with `out` as its output."""
    text, tok, shards = inputs["text"], inputs["tok"], inputs["shards"]
    return {
        "tokenize train": ["tokenize", "train", text, "--kind", "char", "-o", out / "tok.json"],
        "tokenize encode": ["tokenize", "encode", text, "-t", tok, "-o", out / "data"],
        "pretrain": ["pretrain", shards, "-o", out / "run", *FAST, "--max-steps", "2"],
        "corpus download": ["corpus", "download", "tiny-shakespeare", "--cache-dir", out / "c"],
        "finetune lm": ["finetune", "lm", inputs["base"], text, "-o", out / "lm", "--max-steps",
                        "1", "-q"],
        "finetune classifier": ["finetune", "classifier", inputs["base"], inputs["labelled"],
                                "-o", out / "clf", "--max-steps", "1", "-q"],
    }


def one_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("lmtool: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    return result.stderr


COMMANDS = ["tokenize train", "tokenize encode", "pretrain", "corpus download", "finetune lm",
            "finetune classifier"]


@pytest.mark.parametrize("command", COMMANDS)
def test_output_under_a_file(inputs, tmp_path, cli, command):
    (tmp_path / "notes.txt").write_text("keep")
    err = one_line(cli(*writers(inputs, tmp_path / "notes.txt")[command]), 2)
    assert f"{tmp_path / 'notes.txt'}: Not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize("command", COMMANDS)
def test_unwritable_location(inputs, tmp_path, cli, read_only, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    err = one_line(cli(*writers(inputs, locked)[command]), 2)
    assert f"{locked}/" in err and "Permission denied" in err and "permissions" in err
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("command", ["tokenize train", "tokenize encode"])
def test_full_disk_while_writing(inputs, tmp_path, cli, monkeypatch, command):
    """ENOSPC where NFS and delayed allocation report it: at fsync."""
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    args = writers(inputs, tmp_path)[command]
    err = one_line(cli(*args), 1)
    assert f"{args[-1]}" in err and "No space left on device (free some space" in err
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_a_checkpoint_keeps_the_last_one(inputs, tmp_path, cli, monkeypatch):
    """The second save hits a full disk inside safetensors (its real message on a full
    tmpfs): one line, exit 1, the first checkpoint intact and loadable, nothing else."""
    import safetensors.torch
    from safetensors import SafetensorError

    from lmtool.checkpoint import load_checkpoint

    real, run = safetensors.torch.serialize_file, tmp_path / "run"

    def serialize_file(tensors, filename, metadata=None):
        if checkpoint_step(run) == 2 and filename.endswith("model.safetensors"):
            raise SafetensorError("Error while serializing: I/O error: No space left on "
                                  "device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "serialize_file", serialize_file)
    err = one_line(cli("pretrain", inputs["shards"], "-o", run, *FAST, "--max-steps", "4",
                       "--save-every", "2"), 1)
    assert f"{run / 'model.safetensors'}: No space left on device" in err
    assert load_checkpoint(run, trainer=True).trainer.step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_pretrain_onto_an_existing_file_even_with_force(inputs, tmp_path, cli):
    out = tmp_path / "notes.txt"
    out.write_text("keep")
    for force in ([], ["--force"]):
        err = one_line(cli("pretrain", inputs["shards"], "-o", out, *FAST, "--max-steps", "2",
                           *force), 2)
        assert f"{out} is a file, not a run directory" in err
    assert out.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_real_write_failure_from_the_kernel(inputs, tmp_path):
    """`ulimit -f`: the kernel itself fails the weights' write (EFBIG) inside the Rust
    writer; Python ignores SIGXFSZ, so the write returns the error."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    run = tmp_path / "run"
    proc = subprocess.run(lmtool("pretrain", inputs["shards"], "-o", run, *FAST,
                                 "--max-steps", "2"),
                          env=env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"lmtool: error: {run / 'model.safetensors'}: File too large "
                           "(the file system or `ulimit -f` limits the file size)\n")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_input_names_it(inputs, tmp_path, cli, monkeypatch):
    import builtins

    real_open = builtins.open
    secret = tmp_path / "secret.txt"
    secret.write_text("text\n")

    def deny(file, *args, **kwargs):
        if os.fspath(file) == str(secret):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(secret))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    err = one_line(cli("tokenize", "stats", "-t", inputs["tok"], secret), 2)
    assert f"{secret}: Permission denied" in err


def test_tracebacks_only_with_lmtool_debug(inputs, tmp_path):
    args = lmtool("tokenize", "train", inputs["text"], "-o", inputs["text"] / "tok.json")
    quiet = subprocess.run(args, env=env(), capture_output=True, text=True)
    debug = subprocess.run(args, env={**env(), "LMTOOL_DEBUG": "1"}, capture_output=True,
                           text=True)
    assert quiet.returncode == debug.returncode == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in debug.stderr
    assert debug.stderr.endswith(quiet.stderr)


if sys.platform != "linux":  # renameat2, /proc, RLIMIT_FSIZE semantics
    pytestmark = pytest.mark.skip("Linux-only faults")
