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
    # dropout > 0 so the dropout RNG has to be restored exactly as well
    return lmtool("pretrain", shards, "-o", out, *TINY, "--dropout", "0.1",
                  "--batch-size", "8", "--lr", "3e-3", "--max-steps", steps,
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
