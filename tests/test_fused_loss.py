"""linear_cross_entropy: F.cross_entropy(F.linear(...)) to rounding, loss and gradients,
in blocks of rows; and the causal objective that uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lmtool.models import build_model, resolve_model_config
from lmtool.training import fused_loss, objectives
from lmtool.training.fused_loss import linear_cross_entropy
from lmtool.training.objectives import Batch, CausalObjective


def inputs(n: int = 11, c: int = 6, v: int = 23, bias: bool = True, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, c, generator=gen).requires_grad_()
    weight = torch.randn(v, c, generator=gen).requires_grad_()
    b = torch.randn(v, generator=gen).requires_grad_() if bias else None
    targets = torch.randint(0, v, (n,), generator=gen)
    return hidden, weight, b, targets


def loss_and_grads(fn, hidden, weight, bias, targets, scale: float = 1.0):
    params = [p for p in (hidden, weight, bias) if p is not None]
    for p in params:
        p.grad = None
    loss = fn(hidden, weight, bias, targets)
    (loss * scale).backward()
    return loss.detach(), [p.grad.clone() for p in params]


def reference(hidden, weight, bias, targets):
    return F.cross_entropy(F.linear(hidden, weight, bias).float(), targets)


@pytest.mark.parametrize("rows", [1, 4, 512])  # many blocks, a short last block, one block
@pytest.mark.parametrize("bias", [True, False])
def test_matches_cross_entropy_of_linear(monkeypatch, rows, bias):
    monkeypatch.setattr(fused_loss, "BLOCK_ROWS", rows)
    args = inputs(bias=bias)
    want, want_grads = loss_and_grads(reference, *args, scale=3.0)
    got, got_grads = loss_and_grads(linear_cross_entropy, *args, scale=3.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [4, 512])
@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_matches_cross_entropys(monkeypatch, rows, smoothing):
    monkeypatch.setattr(fused_loss, "BLOCK_ROWS", rows)
    args = inputs()

    def smoothed(hidden, weight, bias, targets):
        return F.cross_entropy(F.linear(hidden, weight, bias).float(), targets,
                               label_smoothing=smoothing)

    want, want_grads = loss_and_grads(smoothed, *args, scale=3.0)
    got, got_grads = loss_and_grads(
        lambda *a: linear_cross_entropy(*a, label_smoothing=smoothing), *args, scale=3.0)
    plain, _ = loss_and_grads(reference, *args)
    assert abs(float(want) - float(plain)) > 1e-3  # smoothing does change the loss
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(*args, smoothing), want)


def test_bf16_autocast_matches_autocast_reference(monkeypatch):
    """Under autocast the products run in bf16 as F.linear's would; the softmax in fp32."""
    monkeypatch.setattr(fused_loss, "BLOCK_ROWS", 4)
    args = inputs(n=13, c=16, v=40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, want_grads = loss_and_grads(reference, *args)
        got, got_grads = loss_and_grads(linear_cross_entropy, *args)
    exact, _ = loss_and_grads(reference, *args)
    assert abs(got - want) < 1e-2 and abs(got - exact) < 5e-2
    for g, w in zip(got_grads, want_grads, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-3)


def test_without_gradients_only_the_loss():
    hidden, weight, bias, targets = inputs()
    with torch.no_grad():
        got = linear_cross_entropy(hidden, weight, bias, targets)
        want = reference(hidden, weight, bias, targets)
    torch.testing.assert_close(got, want)
    frozen = [t.detach() for t in (hidden, weight, bias)]
    torch.testing.assert_close(linear_cross_entropy(*frozen, targets), want)


def test_a_frozen_head_gets_no_gradient():
    hidden, weight, bias, targets = inputs()
    weight.requires_grad_(False)
    bias.requires_grad_(False)
    linear_cross_entropy(hidden, weight, bias, targets).backward()
    assert hidden.grad is not None and weight.grad is None and bias.grad is None


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_causal_objective_loss_and_gradients_as_from_the_logits(monkeypatch, arch):
    """The objective's fused head + loss trains the model exactly as the logits would:
    same loss (AR/TAR included) and same gradients, dropout on (the same masks, seeded)."""
    monkeypatch.setattr(fused_loss, "BLOCK_BYTES", 4 * 29 * 5)  # blocks of 5 rows
    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return linear_cross_entropy(*args)

    monkeypatch.setattr(objectives, "linear_cross_entropy", spy)
    values = dict(layers=2, dim=16, context=8, hidden=24, dropout=0.5)
    if arch == "transformer":
        values.update(heads=2, dropout=0.1)
    config = resolve_model_config(arch, "causal", "tiny", values)
    config.vocab_size = 29
    torch.manual_seed(0)
    model = build_model(config).train()
    ids = torch.randint(7, 29, (3, 9), generator=torch.Generator().manual_seed(1))
    batch = Batch(ids[:, :-1], ids[:, 1:])

    def fused():
        torch.manual_seed(5)
        return CausalObjective().loss(model, batch)[0]

    def from_logits():
        torch.manual_seed(5)
        logits = model(batch.inputs)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten())
        penalty = model.take_penalty()
        return loss if penalty is None else loss + penalty

    results = []
    for fn in (fused, from_logits):
        model.zero_grad()
        loss = fn()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (got, got_grads), (want, want_grads) = results
    assert calls == [(3 * 8, config.dim)]  # the objective did take the fused path
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_under_ddp_the_replicas_stay_identical(tmp_path):
    """Two ranks train an AWD-LSTM with the fused loss on different rows: the head's
    gradients are made outside the model's forward, yet DDP must still average them (a
    rank that kept its own would drift away from the other)."""
    from lm_fixtures import assert_torchrun_succeeded, make_shards

    shards = make_shards(tmp_path / "data", kind="char", vocab_size=64)
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", __file__, str(shards), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert_torchrun_succeeded(proc)
    result = json.loads(out.read_text())
    assert result["fused_calls"] == 3, result
    assert result["head_moved"] and result["max_param_diff"] == 0.0, result


def _ddp_worker(shards: str, out: str) -> None:
    """Run by torchrun from the test above."""
    import torch.distributed as dist

    from lmtool.models import build_model, resolve_model_config
    from lmtool.text.shards import open_shards
    from lmtool.training import distributed
    from lmtool.training.config import TrainConfig
    from lmtool.training.optimizers import ulmfit_optimizer as lm_optimizer
    from lmtool.training.streams import StreamSampler
    from lmtool.training.trainer import Trainer

    torch.set_num_threads(1)
    ctx, device = distributed.setup(torch.device("cpu"))
    data = open_shards(shards)
    config = resolve_model_config("lstm", "causal", "tiny",
                                  dict(layers=2, dim=16, hidden=24, context=8))
    config.vocab_size = data.vocab_size
    fused_loss.BLOCK_BYTES = 4 * config.vocab_size * 5  # blocks of 5 rows: the fused path
    calls = []

    def counted(*args):
        calls.append(1)
        return linear_cross_entropy(*args)

    objectives.linear_cross_entropy = counted
    torch.manual_seed(0)
    model = build_model(config)
    head = model.lm_head.bias.detach().clone()
    train = TrainConfig(batch_size=4, lr=1e-2, optimizer="adamw", warmup=0, max_steps=3,
                        eval_every=0, log_every=1, device="cpu")
    sampler = StreamSampler(data.train, 8, 4, 0, ctx.rank, ctx.world_size)
    trainer = Trainer(model, CausalObjective(), sampler, train, device,
                      lm_optimizer(model, train, device), dist=ctx)
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, flat)
    if ctx.is_main:
        diff = max(float((g - flat).abs().max()) for g in gathered)
        with open(out, "w") as f:
            json.dump({"fused_calls": len(calls), "max_param_diff": diff,
                       "head_moved": not torch.equal(head, model.lm_head.bias.detach())}, f)
    distributed.barrier(ctx)  # neither rank leaves the group while the other still uses it
    distributed.teardown(ctx)


if __name__ == "__main__":
    from lmtool.training.distributed import exit_rank

    _ddp_worker(sys.argv[1], sys.argv[2])
    exit_rank(0)  # as lmtool's CLI leaves under torchrun: no finalization to abort
