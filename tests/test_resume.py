"""Crash safety: a SIGKILLed run resumes to the same losses, Ctrl-C saves, NaN stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lm_fixtures import TINY, make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("resume"), kind="char", vocab_size=64)


def lmtool(*args) -> list[str]:
    return [sys.executable, "-m", "lmtool", *map(str, args)]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_args(shards: Path, out: Path, steps: int, *extra) -> list[str]:
    # dropout > 0 so the dropout RNG has to be restored exactly as well; a plan of many
    # epochs, which --max-steps (a cap) cuts short
    return lmtool("pretrain", shards, "-o", out, *TINY, "--dropout", "0.1",
                  "--batch-size", "8", "--lr", "3e-3", "--epochs", "100", "--max-steps", steps,
                  "--save-every", "10", "--log-every", "1", "--eval-every", "10",
                  "--eval-batches", "2", "--seed", "5", "--quiet", *extra)


def checkpoint_step(run: Path) -> int:
    try:
        return json.loads((run / "trainer" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, step: int, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while checkpoint_step(run) < step:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.01)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_repeats_the_uninterrupted_losses(shards, tmp_path):
    steps = 80
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(run_args(shards, whole, steps), env=env(), check=True, timeout=300)

    proc = subprocess.Popen(run_args(shards, killed, steps), env=env(),
                            stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(proc, killed, 10)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert still_running, "the run finished before it could be killed"
    stopped_at = checkpoint_step(killed)
    assert 10 <= stopped_at < steps
    resumed = subprocess.run(run_args(shards, killed, steps, "--resume"), env=env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    a, b = rows(whole), rows(killed)
    train_a = [(r["step"], r["loss"]) for r in a if "loss" in r]
    train_b = [(r["step"], r["loss"]) for r in b if "loss" in r]
    assert [s for s, _ in train_b] == list(range(1, steps + 1))  # no duplicated or lost rows
    for (step, la), (_, lb) in zip(train_a, train_b, strict=True):
        assert lb == pytest.approx(la, abs=1e-6), f"step {step}: {la} != {lb}"
    evals_a = [(r["step"], r["val_loss"]) for r in a if "val_loss" in r]
    evals_b = [(r["step"], r["val_loss"]) for r in b if "val_loss" in r]
    assert [s for s, _ in evals_b] == [s for s, _ in evals_a]
    for (_, va), (_, vb) in zip(evals_a, evals_b, strict=True):
        assert vb == pytest.approx(va, abs=1e-6)
    # The model files are the same too.
    from safetensors.torch import load_file

    wa, wb = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all((wa[k] - wb[k]).abs().max() < 1e-6 for k in wa)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(shards, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(run_args(shards, run, 100000), env=env(),
                            stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(proc, run, 10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    assert err.count("\n") == 1  # one line, no traceback
    from lmtool.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run, trainer=True)
    assert ckpt.trainer.step >= 10
    # The metrics on disk stop at the saved step (nothing half-written after it).
    assert max(r["step"] for r in ckpt.metrics) == ckpt.trainer.step


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_checkpoint(shards, tmp_path, cli,
                                                                    monkeypatch):
    import torch

    from lmtool.checkpoint import load_checkpoint
    from lmtool.training.objectives import CausalObjective

    real_loss = CausalObjective.loss
    calls = {"n": 0}

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss, metrics = real_loss(self, model, batch)
        return (loss * float("nan") if calls["n"] >= 13 else loss), metrics

    monkeypatch.setattr(CausalObjective, "loss", poisoned)
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, *TINY, "--batch-size", "8", "--max-steps",
                 "30", "--save-every", "5", "--eval-every", "0", "--quiet")
    assert result.exit_code == 1, result.stderr
    assert "loss became nan at step 13" in result.stderr
    assert "checkpoint at step 10 is kept" in result.stderr
    assert "--lr" in result.stderr
    ckpt = load_checkpoint(run, trainer=True)
    assert ckpt.trainer.step == 10
    assert all(torch.isfinite(p).all() for p in ckpt.model.parameters())


def test_absurd_lr_before_any_checkpoint_leaves_nothing(shards, tmp_path, cli):
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, *TINY, "--batch-size", "8", "--lr", "1e12",
                 "--grad-clip", "0", "--warmup", "0", "--max-steps", "200",
                 "--eval-every", "0", "--quiet")
    assert result.exit_code == 1, result.stderr
    assert "loss became" in result.stderr and "no checkpoint was saved" in result.stderr
    assert not run.exists()


# --- what --resume does with limits and the schedule ---------------------------------

FAST = [*TINY, "--batch-size", "8", "--lr", "1e-2", "--log-every", "1", "--eval-every", "0",
        "--optimizer", "adamw", "--warmup", "0", "--quiet"]


def lrs(run: Path) -> dict[int, float]:
    return {r["step"]: r["lr"] for r in rows(run) if "lr" in r}


def test_resume_of_a_finished_cosine_run_keeps_its_horizon(shards, tmp_path, cli):
    """The schedule is planned when the run starts: the floor is reached on its last step,
    and steps added by `--resume --max-steps` run at the floor, not at a high rate again."""
    run = tmp_path / "run"
    assert cli("pretrain", shards, "-o", run, *FAST, "--max-steps", "6").exit_code == 0
    first = lrs(run)
    assert first[6] == pytest.approx(1e-3)  # the last step that ran: lr * min_lr_ratio
    assert all(first[s] > first[s + 1] for s in range(1, 6))  # decaying all the way
    result = cli("pretrain", shards, "-o", run, *FAST, "--max-steps", "10", "--resume")
    assert result.exit_code == 0, result.stderr
    after = lrs(run)
    assert [after[s] for s in range(1, 7)] == [first[s] for s in range(1, 7)]
    assert [after[s] for s in range(7, 11)] == pytest.approx([1e-3] * 4)


def test_a_limit_given_on_resume_replaces_the_saved_ones(shards, tmp_path, cli):
    """README's "continue a run": after a time-bounded run, --resume --max-steps N trains
    to step N (the saved --max-time no longer applies), the time schedule at its floor."""
    run = tmp_path / "run"
    result = cli("pretrain", shards, "-o", run, *FAST, "--max-time", "0.001")
    assert result.exit_code == 0, result.stderr
    stopped = checkpoint_step(run)
    assert 1 <= stopped < 6  # stopped by the clock after a step or so
    result = cli("pretrain", shards, "-o", run, *FAST, "--max-steps", "6", "--resume")
    assert result.exit_code == 0, result.stderr
    assert checkpoint_step(run) == 6
    assert json.loads((run / "config.json").read_text())["training"]["max_time"] is None
    assert [lrs(run)[s] for s in range(stopped + 1, 7)] == pytest.approx(
        [1e-3] * (6 - stopped))
    # --epochs is a limit too: a tiny fraction of an epoch is one step, and a resume
    # with --max-steps is not held back by it.
    other = tmp_path / "epochs"
    assert cli("pretrain", shards, "-o", other, *FAST, "--epochs", "0.001").exit_code == 0
    assert checkpoint_step(other) == 1
    assert cli("pretrain", shards, "-o", other, *FAST, "--max-steps", "3",
               "--resume").exit_code == 0
    assert checkpoint_step(other) == 3


def test_a_resume_with_nothing_left_to_do_says_so(shards, tmp_path, cli):
    run = tmp_path / "run"
    args = [*FAST[:-1], "--max-steps", "3"]  # not --quiet
    assert cli("pretrain", shards, "-o", run, *args).exit_code == 0
    files = {p.name: p.read_bytes() for p in [run / "model.safetensors", run / "metrics.jsonl"]}
    result = cli("pretrain", shards, "-o", run, *args, "--resume")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "already reached its limits (3 steps) at step 3: nothing to do" in result.stderr
    assert "--max-steps" in result.stderr
    assert {p.name: p.read_bytes() for p in [run / "model.safetensors",
                                             run / "metrics.jsonl"]} == files


def test_metrics_are_live_from_the_first_logged_step(shards, tmp_path):
    """Rows reach RUN/metrics.jsonl as they are logged, long before the first save, and
    the run directory is a resumable run from the start."""
    from lmtool.checkpoint import load_checkpoint
    from lmtool.training import Callback, pretrain

    run = tmp_path / "run"
    seen: list[int] = []

    class Peek(Callback):
        def on_train_row(self, trainer, row):
            seen.append(len(rows(run)))
            if row["step"] == 2:
                assert load_checkpoint(run, trainer=True).trainer.step == 0

    pretrain(shards, run, overrides=dict(layers=2, heads=2, dim=32, context=32, batch_size=8,
                                         max_steps=3, log_every=1, save_every=1000,
                                         eval_every=0),
             callbacks=[Peek()], sample_chars=0)
    assert seen == [1, 2, 3]  # on disk when each row was logged


def test_kill_at_any_moment_leaves_a_loadable_run(shards, tmp_path):
    """Saving at every step, so a kill -9 at a random instant often lands mid-save: the
    run loads every time, and the next --resume goes on from its last checkpoint."""
    import random

    from lmtool.checkpoint import load_checkpoint

    run, rng, last = tmp_path / "run", random.Random(0), 0
    for round_ in range(3):
        proc = subprocess.Popen(run_args(shards, run, 100000, "--save-every", "1",
                                         *(["--resume"] if round_ else [])),
                                env=env(), stderr=subprocess.PIPE, text=True)
        wait_for_checkpoint(proc, run, last + 2)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        step = load_checkpoint(run, trainer=True).trainer.step
        assert step >= last + 2
        last = step
    # What the kills left (a lock file, a half-built checkpoint) goes with the next save.
    done = subprocess.run(run_args(shards, run, last + 1, "--resume"), env=env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
