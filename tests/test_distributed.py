"""The same `pretrain` under torchrun: two CPU processes with gloo (PyTorch DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from lm_fixtures import TINY, make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("ddp"), kind="char", vocab_size=64)


def test_torchrun_two_processes_train_and_the_checkpoint_loads(shards, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "lmtool", "pretrain", str(shards), "-o", str(run),
           *TINY, "--batch-size", "4", "--max-steps", "6", "--log-every", "1",
           "--eval-every", "3", "--eval-batches", "2", "--save-every", "3",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from lmtool.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run, trainer=True)
    assert ckpt.trainer.step == 6
    # both ranks' data counted: 6 steps x 2 ranks x batch 4 x context 32
    assert ckpt.trainer.tokens_seen == 6 * 2 * 4 * 32
    # one writer: every step logged exactly once, each eval once, one summary line
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]
    assert proc.stderr.count("step 6: loss") == 1
    assert proc.stderr.count(f"{run}: 6 steps") == 1
    assert not [p for p in run.parent.iterdir() if p.name != "run"]  # no stray temp dirs
