"""The optimiser choice: which parameters Muon takes, and the composite's contract."""

from __future__ import annotations

import pytest
import torch

from lmtool.errors import BadInput
from lmtool.models import ModelConfig, build_model
from lmtool.training.optimizers import build_optimizer

CPU = torch.device("cpu")


def model(arch: str = "transformer"):
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, vocab_size=50, context=16, layers=2, heads=2, dim=16,
                         hidden=24)
    return build_model(config)


def build(m, name: str):
    return build_optimizer(m, name, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), device=CPU)


def owned(opt) -> set[int]:
    return {id(p) for g in opt.param_groups for p in g["params"]}


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    m = model()
    opts = build(m, "muon").named
    muon, adamw = owned(opts["muon"]), owned(opts["adamw"])
    expected = {id(p) for name, p in m.named_parameters() if name.startswith("blocks.")
                and p.dim() == 2}
    assert muon == expected and len(muon) == 2 * 4  # qkv, attn proj, fc, mlp proj per block
    assert not muon & adamw and muon | adamw == {id(p) for p in m.parameters()}
    assert id(m.tok_emb.weight) in adamw  # the (tied) embedding and head stay with AdamW


def test_adamw_alone_decays_matrices_but_not_gains():
    m = model()
    (decay, plain) = build(m, "adamw").named["adamw"].param_groups
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in plain["params"])


def test_muon_on_the_lstm_takes_its_recurrent_matrices():
    m = model("lstm")
    muon = owned(build(m, "muon").named["muon"])
    names = {name for name, p in m.named_parameters() if id(p) in muon}
    assert names and all(name.startswith("rnns.") for name in names)


def test_learning_rate_reaches_every_optimiser_and_state_round_trips():
    m = model()
    opt = build(m, "muon")
    for group in opt.param_groups:
        group["lr"] = 0.5
    assert all(g["lr"] == 0.5 for o in opt.named.values() for g in o.param_groups)
    m(torch.randint(0, 50, (2, 16))).sum().backward()
    opt.step()
    again = build(model(), "muon")
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["muon"]["state"].keys() == opt.state_dict()["muon"]["state"].keys()
    with pytest.raises(BadInput, match="--optimizer"):
        build(model(), "adamw").load_state_dict(opt.state_dict())


# --- BatchedMuon against torch.optim.Muon ---------------------------------------------

def _muon_pair(shapes, blocks):
    """The same matrices twice: whole (for BatchedMuon, `blocks` row blocks each) and cut
    into their blocks (separate parameters for torch.optim.Muon)."""
    gen = torch.Generator().manual_seed(0)
    whole = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
    parts = [torch.nn.Parameter(b.detach().clone())
             for p, k in zip(whole, blocks, strict=True) for b in p.chunk(k)]
    return whole, parts


# "original" scales a tall matrix's rate by sqrt(rows / cols), so its factor must come
# from the block's own shape, not from its transposed (wide) form in the stack.
@pytest.mark.parametrize("adjust", ["match_rms_adamw", "original"])
def test_batched_muon_matches_torch_muon_block_by_block(adjust):
    from lmtool.training.optimizers import BatchedMuon

    # Wide, tall (orthogonalised transposed), two squares that share a batch, and a fused
    # (3 x 4, 4) matrix that must behave as three separate (4, 4) ones.
    shapes, blocks = [(4, 8), (8, 4), (4, 4), (4, 4), (12, 4)], [1, 1, 1, 1, 3]
    whole, parts = _muon_pair(shapes, blocks)
    settings = dict(lr=0.1, weight_decay=0.1, adjust_lr_fn=adjust)
    ours = BatchedMuon(whole, row_blocks=dict(zip(whole, blocks, strict=True)), **settings)
    theirs = torch.optim.Muon(parts, **settings)
    start = [p.detach().clone() for p in whole]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # several steps: the momentum buffers must agree too
        for p in whole:
            p.grad = torch.randn(p.shape, generator=gen)
        for q, g in zip(parts, [c for p, k in zip(whole, blocks, strict=True)
                                for c in p.grad.chunk(k)], strict=True):
            q.grad = g.clone()
        ours.step()
        theirs.step()
    cut = [c for p, k in zip(whole, blocks, strict=True) for c in p.detach().chunk(k)]
    moved = max((p.detach() - s).abs().max() for p, s in zip(whole, start, strict=True))
    assert moved > 0.1  # the steps did something
    for mine, reference in zip(cut, parts, strict=True):
        # bf16 Newton-Schulz: batched and single products round differently, by far
        # less than the step.
        assert (mine - reference.detach()).abs().max() < 0.02 * moved
    # The state is torch's: its momentum buffers, in the same layout.
    buf = ours.state[whole[-1]]["momentum_buffer"]
    for chunk, q in zip(buf.chunk(3), parts[-3:], strict=True):
        torch.testing.assert_close(chunk, theirs.state[q]["momentum_buffer"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_newton_schulz_orthogonalises_each_matrix_of_a_stack(dtype):
    from lmtool.training.optimizers import newton_schulz

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, 48, generator=gen)
    x[1] *= 1000  # each matrix is scaled by its own norm, not the stack's
    out = newton_schulz(x.to(dtype), (3.4445, -4.7750, 2.0315), 5, 1e-7)
    singular = torch.linalg.svdvals(out.float())  # (5, 16)
    assert singular.min() > 0.5 and singular.max() < 1.5  # Muon's band around 1
    # The same directions as the input: U V^T of each matrix's SVD, up to that band.
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    cosine = (out.float() * (u @ vh)).sum((1, 2)) / (out.float().norm(dim=(1, 2)) * 4)
    assert cosine.min() > 0.9


def test_fused_matrices_are_orthogonalised_per_block():
    from lmtool.training.optimizers import fused_row_blocks

    m = model()
    blocks = {name: fused_row_blocks(m).get(p, 1) for name, p in m.named_parameters()}
    assert blocks["blocks.0.attn.qkv.weight"] == 3 and blocks["blocks.1.attn.qkv.weight"] == 3
    assert blocks["blocks.0.mlp.fc.weight"] == 1
    lstm = model("lstm")
    gates = {name for name, p in lstm.named_parameters() if fused_row_blocks(lstm).get(p) == 4}
    assert gates == {f"rnns.{i}.{w}" for i in range(2)
                     for w in ("weight_hh_raw", "lstm.weight_ih_l0")}


def test_batched_muon_stacks_across_groups_and_keeps_each_groups_rate():
    from lmtool.training.optimizers import BatchedMuon

    whole, parts = _muon_pair([(4, 4), (4, 4)], [1, 1])  # one shape: one stack
    ours = BatchedMuon([{"params": [whole[0]], "lr": 0.1}, {"params": [whole[1]], "lr": 0.01}],
                       weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    theirs = torch.optim.Muon([{"params": [parts[0]], "lr": 0.1},
                               {"params": [parts[1]], "lr": 0.01}],
                              weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    start = [p.detach().clone() for p in whole]
    for p, q in zip(whole, parts, strict=True):
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(2))
        q.grad = p.grad.clone()
    ours.step()
    theirs.step()
    moved = [(p.detach() - s).abs().max() for p, s in zip(whole, start, strict=True)]
    assert moved[0] > 5 * moved[1]  # the rates differ by 10x
    for p, q, step in zip(whole, parts, moved, strict=True):
        assert (p.detach() - q.detach()).abs().max() < 0.02 * step
