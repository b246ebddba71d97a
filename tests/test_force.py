"""--force replaces only an earlier lmtool output of the same kind; nothing else, ever.

Each case a user met (issue 14) or could meet: the user's file must still be there
afterwards, and the refusal is one stderr line with exit code 2.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from lm_fixtures import TINY, make_shards
from typer.testing import CliRunner

from lmtool.errors import BadInput
from lmtool.rundir import check_run_output

FAST = [*TINY, "--batch-size", "4", "--max-steps", "2", "--eval-every", "2",
        "--eval-batches", "1", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A corpus, its tokenizer, shards and a run: outputs lmtool wrote, to copy and use."""
    from lmtool.cli.main import app

    root = tmp_path_factory.mktemp("made")
    shards = make_shards(root, kind="char", vocab_size=64)
    run = root / "run"
    result = CliRunner().invoke(app, ["pretrain", str(shards), "-o", str(run), *FAST])
    assert result.exit_code == 0, result.stderr
    return {"corpus": root / "data.txt", "tok": root / "data-tok.json", "shards": shards,
            "run": run}


def refused(result, *words: str) -> str:
    """The one-line refusal (exit 2, nothing on stdout, no traceback) naming `words`."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("lmtool: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes, to check that nothing changed."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def commands(made, out) -> dict[str, list]:
    """Each command that takes -o and --force, writing to `out`."""
    return {
        "tokenize train": ["tokenize", "train", made["corpus"], "--kind", "char",
                           "--vocab-size", "64", "-o", out, "--quiet"],
        "tokenize encode": ["tokenize", "encode", made["corpus"], "-t", made["tok"],
                            "-o", out, "--quiet"],
        "pretrain": ["pretrain", made["shards"], "-o", out, *FAST],
    }


@pytest.fixture
def standing_in(tmp_path, monkeypatch) -> Path:
    """The user stands in a directory of their own, with a file in it."""
    here = tmp_path / "home" / "work"
    here.mkdir(parents=True)
    (here / "mine.txt").write_text("precious")
    monkeypatch.chdir(here)
    return here


@pytest.mark.parametrize("command", ["tokenize train", "tokenize encode", "pretrain"])
@pytest.mark.parametrize(("target", "why"), [
    (".", "is the current directory"),
    ("CWD", "is the current directory"),  # -o "$(pwd)"
    ("..", "is above the current directory"),
    ("/", "is the root directory"),
])
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_never_the_current_directory_or_above(cli, made, standing_in, command, target, why,
                                              force):
    out = str(standing_in) if target == "CWD" else target
    before = tree(standing_in.parent)
    refused(cli(*commands(made, out)[command], *force), f"{out} {why}", "give -o a new name")
    assert (standing_in / "mine.txt").read_text() == "precious"
    assert tree(standing_in.parent) == before
    assert sorted(os.listdir(standing_in.parent)) == ["work"]  # no lock or temporary left


@pytest.mark.parametrize("command", ["tokenize train", "tokenize encode", "pretrain"])
def test_never_the_home_directory(cli, made, tmp_path, monkeypatch, command):
    home = tmp_path / "me"
    home.mkdir()
    (home / "notes.txt").write_text("precious")
    monkeypatch.setenv("HOME", str(home))
    refused(cli(*commands(made, home)[command], "--force"), f"{home} is your home directory")
    refused(cli(*commands(made, tmp_path)[command], "--force"), "is above your home directory")
    assert (home / "notes.txt").read_text() == "precious"


def test_an_empty_current_directory_is_refused_too(cli, made, tmp_path, monkeypatch):
    """lmtool swaps its output in whole: the shell would be left in a deleted directory."""
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    for command in commands(made, ".").values():
        refused(cli(*command), ". is the current directory")
    assert (tmp_path / "empty").is_dir() and not os.listdir(tmp_path / "empty")


@pytest.mark.parametrize("command", ["tokenize encode", "pretrain"])
def test_force_keeps_a_directory_lmtool_did_not_make(cli, made, tmp_path, command):
    scratch = tmp_path / "scratch"
    (scratch / "keep").mkdir(parents=True)
    (scratch / "keep" / "file.txt").write_text("precious")
    for force in ([], ["--force"]):
        refused(cli(*commands(made, scratch)[command], *force),
                f"{scratch} already holds other files", "choose another -o")
    assert (scratch / "keep" / "file.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch"]


def test_force_never_replaces_a_run_with_shards(cli, made, tmp_path):
    run = tmp_path / "lm"
    shutil.copytree(made["run"], run)
    before = tree(run)
    refused(cli(*commands(made, run)["tokenize encode"], "--force"),
            f"{run} holds a run, not token shards")
    assert tree(run) == before


def test_force_never_replaces_shards_with_a_run(cli, made, tmp_path):
    shards = tmp_path / "data"
    shutil.copytree(made["shards"], shards)
    before = tree(shards)
    refused(cli(*commands(made, shards)["pretrain"], "--force"),
            f"{shards} holds token shards, not a run")
    assert tree(shards) == before


def test_force_never_writes_inside_a_run(cli, made, tmp_path):
    """A tokenizer written into a run would no longer match its model; a run inside a
    run would be deleted by the outer run's next save."""
    run = tmp_path / "lm"
    shutil.copytree(made["run"], run)
    before = tree(run)
    refused(cli(*commands(made, run / "tokenizer.json")["tokenize train"], "--force"),
            f"is inside {run}, a run directory")
    refused(cli(*commands(made, run / "sub")["pretrain"]), "is inside")
    assert tree(run) == before


def test_a_users_file_beside_an_earlier_output_is_kept(cli, made, tmp_path):
    """Replacing a run or shards replaces the whole directory: a file the user put in it
    would go too, so it is refused (--resume too: its next save replaces the run)."""
    run, shards = tmp_path / "lm", tmp_path / "data"
    shutil.copytree(made["run"], run)
    shutil.copytree(made["shards"], shards)
    for out in (run, shards):
        (out / "notes.txt").write_text("precious")
    before = tree(tmp_path)
    for args in (["--force"], ["--resume", "--max-steps", "4"]):
        refused(cli(*commands(made, run)["pretrain"], *args),
                f"{run} holds a run and files lmtool did not write (notes.txt)", "move them out")
    refused(cli(*commands(made, shards)["tokenize encode"], "--force"),
            f"{shards} holds token shards and files lmtool did not write (notes.txt)")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("content", [
    "my notes\n",
    '{"model": {"type": "BPE"}, "added_tokens": []}',  # a tokenizer, but not lmtool's
])
def test_tokenize_train_force_keeps_a_file_that_is_no_lmtool_tokenizer(cli, made, tmp_path,
                                                                       content):
    out = tmp_path / "tok.json"
    out.write_text(content)
    for force in ([], ["--force"]):
        refused(cli(*commands(made, out)["tokenize train"], *force),
                f"{out} is not a tokenizer lmtool wrote")
    assert out.read_text() == content


def test_tokenize_train_onto_a_directory_says_so_and_keeps_it(cli, made, tmp_path):
    out = tmp_path / "tokdir"
    out.mkdir()
    (out / "f").write_text("precious")
    for force in ([], ["--force"]):
        err = refused(cli(*commands(made, out)["tokenize train"], *force),
                      f"{out} is a directory, in the way of the tokenizer file",
                      "choose a file name")
        assert "->" not in err
    assert (out / "f").read_text() == "precious"


def test_force_replaces_an_earlier_output_of_the_same_kind(cli, made, tmp_path):
    tok, shards = tmp_path / "tok.json", tmp_path / "data"
    shutil.copyfile(made["tok"], tok)
    shutil.copytree(made["shards"], shards)
    for out, command in ((tok, "tokenize train"), (shards, "tokenize encode")):
        refused(cli(*commands(made, out)[command]), f"{out} already exists", "--force")
        result = cli(*commands(made, out)[command], "--force")
        assert result.exit_code == 0, result.stderr
    assert json.loads((shards / "meta.json").read_text())["format"] == "lmtool-shards"


def test_any_run_may_replace_another_run_under_force(tmp_path):
    """A classifier run over a language-model run (or back) is what --force asks for."""
    run = tmp_path / "clf"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "lmtool-run", "task": "classifier"}))
    with pytest.raises(BadInput, match="already holds a run"):
        check_run_output(run, resume=False, force=False)
    check_run_output(run, resume=False, force=True)
    check_run_output(run, resume=True, force=False)


def test_finetune_force_keeps_a_directory_lmtool_did_not_make(cli, made, tmp_path):
    out = tmp_path / "scratch"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "file.txt").write_text("precious")
    refused(cli("finetune", "lm", made["run"], made["corpus"], "-o", out, "--max-steps", "2",
                "--quiet", "--force"),
            f"{out} already holds other files")
    assert (out / "keep" / "file.txt").read_text() == "precious"


def test_finetune_classifier_force_never_replaces_shards(cli, made, tmp_path):
    shards = tmp_path / "data"
    shutil.copytree(made["shards"], shards)
    before = tree(shards)
    rows = "".join(f"the cat sees the ball {i}\tpos\na dog calls his hat {i}\tneg\n"
                   for i in range(8))
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + rows)
    refused(cli("finetune", "classifier", made["run"], tmp_path / "train.tsv", "-o", shards,
                "--quiet", "--force"), f"{shards} holds token shards, not a run")
    assert tree(shards) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["tokenize train", "tokenize encode", "pretrain"])
def test_an_unwritable_location_is_named_as_the_user_gave_it(cli, made, command):
    """Neither the run's lock nor a temporary sibling: names the user never typed."""
    out = "/proc/lmtool-out"
    err = refused(cli(*commands(made, out)[command]), f"{out}: ")
    assert ".lock" not in err and ".tmp-" not in err
