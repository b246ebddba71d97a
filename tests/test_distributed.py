"""The same `pretrain` under torchrun: two CPU processes with gloo (PyTorch DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from lm_fixtures import TINY, assert_torchrun_succeeded, make_shards


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
    assert_torchrun_succeeded(proc)

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


def test_resuming_under_another_number_of_processes_is_refused(shards, tmp_path, cli):
    """Two ranks read two slices of every batch: one process would read other data.
    (A stateful AWD-LSTM: its save gathers both ranks' carried state.)"""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "lmtool", "pretrain", str(shards), "-o", str(run),
           "--arch", "lstm", "--layers", "2", "--dim", "16", "--hidden", "32", "--context",
           "16", "--batch-size", "4", "--max-steps", "2", "--eval-every", "0",
           "--device", "cpu", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert_torchrun_succeeded(proc)
    from safetensors.torch import load_file

    carried = load_file(run / "trainer" / "tensors.safetensors")
    assert carried["carried.0.h"].shape == (1, 8, 32)  # 2 ranks x batch 4 rows
    before = (run / "model.safetensors").read_bytes()
    result = cli("pretrain", shards, "-o", run, "--max-steps", "4", "--resume",
                 "--device", "cpu")
    assert result.exit_code == 2, result.stderr
    assert "trained by 2 process(es)" in result.stderr
    assert "--nproc_per_node 2" in result.stderr
    assert result.stderr.count("\n") == 1
    assert (run / "model.safetensors").read_bytes() == before


def test_ranks_agree_on_the_time_before_each_step(shards, tmp_path):
    """Rank 1's clock runs three times as fast as rank 0's. Under --max-time the rate is
    a function of the time, so a rank that followed its own clock would step with
    another rate and the replicas would drift apart; they must end identical. The run
    also unfreezes one more of its 4 layer groups every 2 steps (DDP re-wrapped each
    time): the bottom group, still frozen after 6 steps, must not have moved."""
    out = tmp_path / "params.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", __file__, str(shards), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert_torchrun_succeeded(proc)
    result = json.loads(out.read_text())
    assert 3 <= result["steps"] <= 6, result
    assert result["lr_first"] != result["lr_last"]  # the rate did follow the time
    assert result["max_param_diff"] == 0.0, result
    assert result["unfrozen"] >= 2 and result["bottom_moved"] is False, result


def _clock_worker(shards: str, out: str) -> None:
    """Run by torchrun from the test above: train with a skewed clock on each rank."""
    import torch
    import torch.distributed as dist

    from lmtool.models import build_model, resolve_model_config
    from lmtool.text.shards import open_shards
    from lmtool.training import distributed
    from lmtool.training.batches import WindowSampler
    from lmtool.training.config import TrainConfig
    from lmtool.training.objectives import CausalObjective
    from lmtool.training.optimizers import ulmfit_optimizer as lm_optimizer
    from lmtool.training.trainer import Callback, Trainer

    torch.set_num_threads(1)
    ctx, device = distributed.setup(torch.device("cpu"))
    data = open_shards(shards)
    config = resolve_model_config("transformer", "causal", "tiny",
                                  dict(layers=3, heads=2, dim=16, context=16))
    config.vocab_size = data.vocab_size
    torch.manual_seed(0)
    model = build_model(config)
    train = TrainConfig(batch_size=4, lr=1e-2, optimizer="adamw", schedule="linear",
                        warmup=0, max_time=10.0, max_steps=6, eval_every=0, log_every=1,
                        device="cpu", discriminative=2.6, unfreeze_start=1)
    now, tick = [0.0], 0.5 + 1.0 * ctx.rank  # a fake clock: each reading moves it on

    def clock() -> float:
        now[0] += tick
        return now[0]

    rates: list[float] = []

    class Rates(Callback):
        def on_train_row(self, trainer, row):
            rates.append(row["lr"])

    sampler = WindowSampler(data.train, 16, 17, 4, 0, ctx.rank, ctx.world_size)
    train.unfreeze_every = 2 / sampler.batches_per_epoch  # one more group every 2 steps
    trainer = Trainer(model, CausalObjective(), sampler, train, device,
                      lm_optimizer(model, train, device), dist=ctx, clock=clock,
                      callbacks=[Rates()])
    bottom = [p for g in trainer.optimizer.param_groups if g["layer_group"] == 0
              for p in g["params"]]
    start = [p.detach().clone() for p in bottom]
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, flat)
    if ctx.is_main:
        diff = max(float((g - flat).abs().max()) for g in gathered)
        with open(out, "w") as f:
            json.dump({"steps": trainer.state.step, "max_param_diff": diff,
                       "lr_first": rates[0], "lr_last": rates[-1],
                       "unfrozen": trainer.trainable,
                       "bottom_moved": any(not torch.equal(p, q) for p, q in zip(
                           bottom, start, strict=True))}, f)
    distributed.barrier(ctx)  # neither rank leaves the group while the other still uses it
    distributed.teardown(ctx)


TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


# Finalization is where gloo's surviving threads abort a rank; an atexit handler runs
# exactly when finalization starts, so its silence shows the rank skipped it.
_MAIN_WITH_ATEXIT = """
import atexit, sys
atexit.register(lambda: print("finalized"))
sys.argv = ["lmtool", *{args!r}]
from lmtool.cli.main import main
main()
"""


def test_a_torchrun_rank_skips_finalization_and_keeps_its_output_and_exit_code(tmp_path):
    ok = _python(_MAIN_WITH_ATEXIT.format(args=["--version"]), TORCHRUN_ENV)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith("lmtool ") and "finalized" not in ok.stdout

    bad = _python(_MAIN_WITH_ATEXIT.format(args=["info", str(tmp_path / "none")]),
                  TORCHRUN_ENV)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("lmtool: error: ") and bad.stderr.count("\n") == 1

    usage = _python(_MAIN_WITH_ATEXIT.format(args=["pretrain", "--no-such-flag"]),
                    TORCHRUN_ENV)
    assert usage.returncode == 2 and "finalized" not in usage.stdout


def test_outside_torchrun_the_interpreter_exits_normally():
    plain = _python(_MAIN_WITH_ATEXIT.format(args=["--version"]), {})
    assert plain.returncode == 0 and plain.stdout.endswith("finalized\n")


@pytest.mark.parametrize(("code", "status", "stderr"),
                         [(None, 0, ""), (0, 0, ""), (1, 1, ""), (130, 130, ""),
                          ("'no such run'", 1, "no such run\n")])
def test_exit_rank_flushes_what_was_written_and_exits_with_the_code(code, status, stderr):
    """Buffered output (stdout to a pipe) must reach the reader although os._exit skips
    the interpreter's own flush."""
    run = _python("import sys\nfrom lmtool.training.distributed import exit_rank\n"
                  "sys.stdout.write('result')\nsys.stderr.write('')\n"
                  f"exit_rank({code})", {})
    assert (run.returncode, run.stdout, run.stderr) == (status, "result", stderr)


if __name__ == "__main__":
    from lmtool.training.distributed import exit_rank

    _clock_worker(sys.argv[1], sys.argv[2])
    exit_rank(0)  # as lmtool's CLI leaves under torchrun: no finalization to abort
