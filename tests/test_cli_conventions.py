"""What a new user meets: options that mean the same everywhere, honest choices, modes that
follow the umask, messages that say what is really the matter."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from lm_fixtures import TINY, generate_text, make_shards
from typer.main import get_command

from lmtool.cli.main import app


def commands():
    """(path, command) of every leaf command in the app."""
    found = []

    def walk(command, path):
        for name, child in getattr(command, "commands", {}).items():
            walk(child, [*path, name])
        if not hasattr(command, "commands"):
            found.append((" ".join(path), command))

    walk(get_command(app), [])
    return found


def test_every_command_accepts_quiet():
    for path, command in commands():
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        assert {"--quiet", "-q"} <= options, path


@pytest.mark.parametrize(("args", "offered"), [
    (["info", "run"], "text, json, jsonl"),
    (["tokenize", "stats", "-t", "tok.json", "x"], "text, json"),
    (["finetune", "lm", "run", "x", "-o", "out"], "text, json"),
    (["finetune", "classifier", "run", "x.tsv", "-o", "out"], "text, json"),
])
def test_format_offers_only_what_the_command_writes(cli, args, offered):
    result = cli(*args, "--format", "tsv")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"lmtool: error: --format: 'tsv' is not one of {offered} (")


def test_help_shows_real_choices_and_preset_sizes(cli):
    text = cli("pretrain", "--help").stdout
    assert "--preset <tiny|small|base>" in text
    assert "tiny: 4 layers x 128 wide, 4 heads, context 64" in " ".join(text.split())
    assert "--precision <auto|fp32|bf16|fp16>" in text
    assert "--device <auto|cpu|cuda|cuda:N|mps>" in text


def test_spelled_out_precisions_match_the_library():
    from lmtool.cli.common import PRECISIONS
    from lmtool.device import PRECISIONS as LIBRARY

    assert PRECISIONS == LIBRARY


def complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "_LMTOOL_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(cword)}
    out = subprocess.run([sys.executable, "-m", "lmtool"], env=env, capture_output=True,
                         text=True, timeout=120)
    return out.stdout.split()


def test_preset_device_and_precision_complete():
    assert complete("lmtool pretrain --preset ", 3) == ["tiny", "small", "base"]
    assert complete("lmtool pretrain --precision b", 3) == ["bf16"]
    assert complete("lmtool evaluate --device c", 3) == ["cpu", "cuda", "cuda:0"]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    text = root / "small.txt"
    text.write_text(generate_text(0, 40))
    return text


def test_a_smaller_vocabulary_than_asked_is_said_once_with_the_reason(cli, small_corpus,
                                                                      tmp_path):
    result = cli("tokenize", "train", small_corpus, "--vocab-size", "8000", "-o",
                 tmp_path / "tok.json")
    assert result.exit_code == 0, result.stderr
    got = json.loads((tmp_path / "tok.json").read_text())["model"]["vocab"]
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [f"lmtool: warning: the vocabulary has {len(got):,} tokens, not the "
                        "8,000 asked for: no further merge occurs at least 2 times (a larger "
                        "corpus, or a lower --min-frequency, gives more)"]


def test_counts_are_singular_or_plural(cli, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("just one paragraph here\n")
    result = cli("tokenize", "train", one, "--kind", "char", "-o", tmp_path / "tok.json")
    assert " on 1 document (" in result.stderr


def test_only_binary_files_says_they_were_skipped_as_binary(cli, tmp_path):
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(b"PK\x03\x04\x00\x00binary")
    result = cli("tokenize", "train", tmp_path / "a.bin", tmp_path / "b.bin", "-o",
                 tmp_path / "tok.json")
    assert result.exit_code == 2
    assert result.stderr == (f"lmtool: error: the sources hold no text: 2 files skipped as "
                             f"binary (a NUL byte in the first 8 KB): {tmp_path / 'a.bin'}, "
                             f"{tmp_path / 'b.bin'} (pass text files)\n")


def test_tokenizer_and_shards_follow_the_umask(cli, small_corpus, tmp_path):
    old = os.umask(0o002)  # a shared machine's group-writable umask
    try:
        assert cli("tokenize", "train", small_corpus, "--kind", "char", "-o",
                   tmp_path / "tok.json", "-q").exit_code == 0
        assert cli("tokenize", "encode", small_corpus, "-t", tmp_path / "tok.json", "-o",
                   tmp_path / "data", "-q").exit_code == 0
    finally:
        os.umask(old)
    for path in [tmp_path / "tok.json", tmp_path / "data", *(tmp_path / "data").iterdir()]:
        want = 0o775 if path.is_dir() else 0o664
        assert stat.S_IMODE(path.stat().st_mode) == want, path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lmtool.training import pretrain

    root = tmp_path_factory.mktemp("info")
    shards = make_shards(root, kind="char", vocab_size=64)
    made = {}
    for arch, extra in (("transformer", dict(heads=2)), ("lstm", dict(hidden=32))):
        made[arch] = root / arch
        pretrain(shards, made[arch], arch=arch,
                 overrides=dict(layers=2, dim=16, context=16, batch_size=4, max_steps=1,
                                eval_every=0, **extra), sample_chars=0)
    return made


def test_info_json_shows_only_the_runs_own_backbone_fields(cli, runs):
    transformer = json.loads(cli("info", runs["transformer"], "--format", "json").stdout)
    lstm = json.loads(cli("info", runs["lstm"], "--format", "json").stdout)
    assert "hidden" not in transformer["model"] and "weight_dropout" not in transformer["model"]
    assert transformer["model"]["heads"] == 2
    assert "heads" not in lstm["model"] and "positions" not in lstm["model"]
    assert lstm["model"]["hidden"] == 32


def test_rerunning_the_same_command_says_the_run_is_there(cli, runs, tmp_path):
    data = runs["transformer"].parent / "data"
    args = ["pretrain", data, "-o", tmp_path / "run", *TINY, "--max-steps", "2", "-q"]
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == 2
    assert "already holds a run (2 steps trained)" in again.stderr
    assert "different" not in again.stderr


def test_evaluate_says_which_files_it_skipped_as_binary(cli, runs, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01binary")
    only = cli("evaluate", runs["transformer"], blob)
    assert only.exit_code == 2
    assert "1 file skipped as binary" in only.stderr and only.stderr.count("\n") == 1
    text = tmp_path / "text.txt"
    text.write_text(generate_text(3, 20))
    mixed = cli("evaluate", runs["transformer"], text, blob)
    assert mixed.exit_code == 0, mixed.stderr
    assert mixed.stderr == f"lmtool: warning: skipped 1 binary file: {blob}\n"
