"""`lmtool pretrain` from the command line: output, config precedence, bad inputs."""

from __future__ import annotations

import json

import pytest
from lm_fixtures import TINY, make_shards

FAST = [*TINY, "--batch-size", "4", "--max-steps", "4", "--eval-every", "2",
        "--eval-batches", "1", "--log-every", "1"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("cli"), kind="char", vocab_size=64)


@pytest.fixture(scope="module")
def other_shards(tmp_path_factory):
    """Shards made with a different tokenizer (a different corpus)."""
    return make_shards(tmp_path_factory.mktemp("other"), kind="char", vocab_size=64, seed=9,
                       paragraphs=60, name="other")


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("lmtool: error: ")
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    return result.stderr


def test_trains_writes_a_run_and_logs_to_stderr(shards, tmp_path, cli):
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, *FAST)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # nothing but results on stdout; pretrain has none
    assert "step 4: loss" in result.stderr and "eval step 4: val loss" in result.stderr
    assert "sample:" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json", "metrics.jsonl", "model.safetensors", "tokenizer.json", "trainer"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [r["step"] for r in evals] == [2, 4]
    assert all({"tokens_per_s", "elapsed_s", "lr"} <= set(r) for r in train)
    assert all("val_perplexity" in r for r in evals)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["layers"] == 2 and config["model"]["dim"] == 32
    assert config["training"]["max_steps"] == 4 and config["preset"] == "tiny"
    assert config["tokenizer"]["sha256"] == json.loads((shards / "meta.json").read_text())[
        "tokenizer_sha256"]


def test_backward_run_is_shown_and_refused_for_masked(shards, tmp_path, cli):
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, *FAST, "--backward")
    assert result.exit_code == 0, result.stderr
    assert "sample:" in result.stderr
    assert "(causal, backward)" in cli("info", run).stdout
    masked = cli("pretrain", shards, "-o", tmp_path / "m", *FAST, "--backward",
                 "--objective", "masked")
    assert "--backward needs --objective causal" in one_line_error(masked)


def test_quiet_is_silent(shards, tmp_path, cli):
    result = cli("pretrain", shards, "-o", tmp_path / "run", *FAST, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_config_file_is_overridden_by_flags(shards, tmp_path, cli):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"layers": 1, "dim": 16, "heads": 2, "context": 16,
                                  "max_steps": 2, "batch_size": 4, "lr": 0.01,
                                  "objective": "masked"}))
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, "--config", config, "--dim", "24", "--quiet")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((run / "config.json").read_text())
    assert saved["objective"] == "masked"
    assert saved["model"]["layers"] == 1 and saved["model"]["dim"] == 24
    assert saved["training"]["lr"] == 0.01 and saved["training"]["max_steps"] == 2


def test_resume_continues_and_force_replaces(shards, tmp_path, cli):
    run = tmp_path / "run"
    assert cli("pretrain", shards, "-o", run, *FAST, "--quiet").exit_code == 0
    more = [*FAST, "--max-steps", "6"]  # the later flag wins
    result = cli("pretrain", shards, "-o", run, *more, "--resume", "--quiet")
    assert result.exit_code == 0, result.stderr
    state = json.loads((run / "trainer" / "state.json").read_text())
    assert state["step"] == 6
    # --resume cannot change the model
    err = one_line_error(cli("pretrain", shards, "-o", run, *more, "--dim", "64", "--resume"))
    assert "--dim 64" in err
    # --force starts over
    result = cli("pretrain", shards, "-o", run, *FAST, "--force", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "trainer" / "state.json").read_text())["step"] == 4


# --- bad inputs: exit 2, one line, nothing written ------------------------------------


def test_shards_made_with_another_tokenizer(shards, other_shards, tmp_path, cli):
    run = tmp_path / "run"
    err = one_line_error(cli("pretrain", shards, "-o", run, *FAST,
                             "--tokenizer", other_shards / "tokenizer.json"))
    assert "another tokenizer" in err
    assert not run.exists()


def test_directory_without_shards(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    err = one_line_error(cli("pretrain", tmp_path / "empty", "-o", tmp_path / "run", *FAST))
    assert "no token shards" in err and "tokenize encode" in err
    assert not (tmp_path / "run").exists()


def test_context_longer_than_the_data(shards, tmp_path, cli):
    err = one_line_error(cli("pretrain", shards, "-o", tmp_path / "run", *FAST,
                             "--context", "50000"))
    assert "--context 50000" in err and "longer than the training data" in err
    assert not (tmp_path / "run").exists()


def test_existing_output_without_resume_or_force(shards, tmp_path, cli):
    run = tmp_path / "run"
    assert cli("pretrain", shards, "-o", run, *FAST, "--quiet").exit_code == 0
    before = (run / "model.safetensors").read_bytes()
    err = one_line_error(cli("pretrain", shards, "-o", run, *FAST, "--layers", "1"))
    assert "already holds a run (4 steps trained)" in err
    assert "--resume" in err and "--force" in err
    assert (run / "model.safetensors").read_bytes() == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    err = one_line_error(cli("pretrain", shards, "-o", other, *FAST))
    assert "other files" in err
    assert (other / "todo.txt").read_text() == "keep me"


def test_resume_without_a_run(shards, tmp_path, cli):
    err = one_line_error(cli("pretrain", shards, "-o", tmp_path / "run", *FAST, "--resume"))
    assert "no run to resume" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "huge"], "--preset: 'huge' is not one of tiny, small, base"),
        (["--heads", "3"], "--dim (32) must be divisible by --heads (3)"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--schedule", "sometimes"], "sometimes"),
        (["--device", "cuda"], "no CUDA GPU"),
        (["--objective", "masked", "--arch", "lstm"], "needs --arch transformer"),
        (["--stateful"], "--stateful needs --arch lstm"),
        (["--discriminative", "0.5"], "--discriminative must be at least 1"),
        (["--ar", "-1", "--arch", "lstm"], "--ar must not be negative"),
    ],
)
def test_bad_settings(shards, tmp_path, cli, args, expected):
    result = cli("pretrain", shards, "-o", tmp_path / "run", *FAST, *args)
    assert result.exit_code == 2, result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_field_in_config_file(shards, tmp_path, cli):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"layers": 2, "learning_rate": 0.1}))
    err = one_line_error(cli("pretrain", shards, "-o", tmp_path / "run", "--config", config))
    assert "unknown field in --config" in err and "learning_rate" in err
    config.write_text("{not json")
    err = one_line_error(cli("pretrain", shards, "-o", tmp_path / "run", "--config", config))
    assert "not valid JSON" in err


def test_help_has_examples(cli):
    for command in ("pretrain", "evaluate", "info"):
        result = cli(command, "--help")
        assert result.exit_code == 0
        assert "Examples:" in result.stdout and f"lmtool {command}" in result.stdout


def test_format_json_prints_the_result_on_stdout(shards, tmp_path, cli):
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, *FAST, "--format", "json", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert data["run"] == str(run) and data["steps"] == 4 and data["stop_reason"] == "steps"
    assert data["last_loss"] == [r for r in rows if "loss" in r][-1]["loss"]
    assert data["last_eval"]["val_loss"] == [r for r in rows if "val_loss" in r][-1]["val_loss"]


def test_train_flags_have_one_field_per_config_field():
    """A field of ModelConfig or TrainConfig that the flags lack could not be set from a
    --config file or from Python; one the configs lack would be set nowhere."""
    from dataclasses import fields

    from lmtool.training.config import MODEL_FIELDS, TRAIN_FIELDS
    from lmtool.training.flags import TrainFlags

    assert {f.name for f in fields(TrainFlags)} == MODEL_FIELDS | TRAIN_FIELDS


def test_flags_from_the_command_line_reach_the_configs(shards, tmp_path, cli):
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, *FAST, "--precision", "fp32", "--lr", "0.004",
                 "--schedule", "linear", "--dropout", "0.2", "--optimizer", "adamw")
    assert result.exit_code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    t, m = config["training"], config["model"]
    assert (t["precision"], t["lr"], t["schedule"], t["optimizer"]) == ("fp32", 0.004,
                                                                         "linear", "adamw")
    assert m["dropout"] == 0.2
