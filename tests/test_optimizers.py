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
