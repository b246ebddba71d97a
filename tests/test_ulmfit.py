"""The generic trainer's ULMFiT pieces: layer groups and their rates, STLR, freezing and
unfreezing, the AWD-LSTM's streams, carried state and AR/TAR."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
import torch
from lm_fixtures import make_shards

from lmtool.models import build_model, parameter_groups, resolve_model_config
from lmtool.training.config import TrainConfig
from lmtool.training.objectives import CausalObjective
from lmtool.training.optimizers import ulmfit_optimizer as lm_optimizer
from lmtool.training.trainer import Callback, Trainer

CPU = torch.device("cpu")


def tiny(arch: str = "transformer", vocab: int = 16, **overrides):
    values = dict(layers=2, heads=2, dim=16, context=16, hidden=32, dropout=0.0)
    values.update(overrides)
    if arch == "lstm":
        values.pop("heads")
    config = resolve_model_config(arch, "causal", "tiny", values)
    config.vocab_size = vocab
    torch.manual_seed(0)
    return build_model(config)


def blocks(n: int, seed: int) -> np.ndarray:
    """[M K F x 11 K] blocks: the token after the fillers repeats the key 12 tokens back."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for _ in range(n):
        key = int(rng.integers(8, 13))
        out += [7, key] + [13] * 11 + [key]
    return np.array(out, dtype=np.uint16)


def trainer_for(model, config: TrainConfig, train, val=None, **kwargs) -> Trainer:
    from lmtool.training.data import lm_sources

    source, eval_source = lm_sources(model, CausalObjective(), config, train, val)
    return Trainer(model, CausalObjective(), source, config, CPU,
                   lm_optimizer(model, config, CPU), eval_source=eval_source, **kwargs)


class Every(Callback):
    def __init__(self, fn):
        self.fn = fn

    def on_step(self, trainer):
        self.fn(trainer)


# --- layer groups ----------------------------------------------------------------------


def test_the_tied_matrix_goes_to_the_top_for_lm_fine_tuning_and_the_bottom_otherwise():
    model = tiny("lstm", layers=3)
    emb = model.embedding.weight
    bottom = parameter_groups(model, tied="bottom")
    top = parameter_groups(model, tied="top")
    assert any(p is emb for p in bottom[0]) and not any(p is emb for p in bottom[-1])
    # fastai's LM split: the 3 LSTM layers, then embedding + decoder on top: 4 groups
    assert len(top) == 4 and any(p is emb for p in top[-1])
    for groups in (bottom, top):  # every parameter exactly once
        ids = [id(p) for g in groups for p in g]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))


# --- rates: discriminative x STLR, step by step ----------------------------------------------


def stlr_reference(t: int, steps: int, lr: float) -> float:
    """ULMFiT eq. 3, with T = steps - 1 so that the last step is the end of the slope."""
    cut = 0.1 * (steps - 1)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / 0.1 - 1))
    return lr * (1 + p * 31) / 32


def test_per_group_rates_follow_discriminative_factors_and_the_stlr_shape():
    model = tiny("transformer")
    config = TrainConfig(batch_size=4, lr=1e-2, optimizer="adamw", schedule="stlr",
                         discriminative=2.6, max_steps=21, eval_every=0, log_every=100)
    seen: list[list[tuple[int, float]]] = []
    trainer = trainer_for(model, config, blocks(200, 0), callbacks=[Every(
        lambda t: seen.append([(g["layer_group"], g["lr"]) for g in t.optimizer.param_groups]))])
    groups = trainer.groups
    assert groups == 3  # blocks 0 and 1, then ln_f + head + tied embedding
    trainer.fit()
    assert len(seen) == 21
    for step, rates in enumerate(seen):
        top = stlr_reference(step, 21, 1e-2)
        for group, lr in rates:
            assert lr == pytest.approx(top / 2.6 ** (groups - 1 - group), rel=1e-9), (step, group)
    tops = [max(lr for _, lr in rates) for rates in seen]
    assert tops[0] == pytest.approx(1e-2 / 32) and tops[-1] == pytest.approx(1e-2 / 32)
    assert tops[2] == pytest.approx(1e-2)  # the peak at cut_frac = 0.1 of 20 steps
    assert all(a < b for a, b in zip(tops[:2], tops[1:3], strict=True))  # the short rise
    assert all(a > b for a, b in zip(tops[2:], tops[3:], strict=False))  # the long fall


# --- freezing --------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_frozen_group_does_not_move_and_has_no_optimiser_state_until_unfrozen(optimizer):
    model = tiny("transformer", layers=3)
    data = blocks(300, 0)
    config = TrainConfig(batch_size=4, lr=1e-2, optimizer=optimizer, discriminative=2.6,
                         unfreeze_start=1, max_steps=6, eval_every=0, log_every=100)
    probe = trainer_for(model, config, data)
    config.unfreeze_every = 3 / probe.limits.steps_per_epoch  # one more group every 3 steps
    trainer = trainer_for(model, config, data)
    opt = trainer.optimizer
    by_group: dict[int, list] = {}
    for g in opt.param_groups:
        by_group.setdefault(g["layer_group"], []).extend(g["params"])
    G = trainer.groups
    assert G == 4
    start = {id(p): p.detach().clone() for p in model.parameters()}

    def has_state(p) -> bool:
        return any(p in o.state and o.state[p] for o in opt.named.values())

    def moved(p) -> bool:
        return not torch.equal(p.detach(), start[id(p)])

    checks = {}

    def check(t):
        if t.state.step in (3, 6):
            checks[t.state.step] = {g: ([moved(p) for p in ps], [has_state(p) for p in ps])
                                    for g, ps in by_group.items()}

    trainer.callbacks.append(Every(check))
    trainer.fit()
    # steps 0-2: the top group alone trains; steps 3-5: the top two
    for step, training in ((3, {G - 1}), (6, {G - 1, G - 2})):
        for group, (moves, states) in checks[step].items():
            if group in training:
                assert all(moves) and all(states), (step, group)
            else:
                assert not any(moves) and not any(states), (step, group)
    assert any(isinstance(o, torch.optim.Muon) for o in opt.named.values()) == (
        optimizer == "muon")


# --- streams ---------------------------------------------------------------------------------


def test_stream_batches_are_contiguous_variable_and_a_pure_function():
    from lmtool.training.streams import StreamSampler

    data = np.arange(10_001, dtype=np.uint32)
    s = StreamSampler(data, context=70, batch_size=2, seed=3)
    again = StreamSampler(data, context=70, batch_size=2, seed=3)
    assert s.stream_length == 5000 and s.batches_per_epoch == round(5000 / 68.25)
    rows = [s.batch(1, k) for k in range(s.batches_per_epoch)]
    assert torch.equal(again.batch(1, 7), rows[7])
    assert torch.equal(s.batch(0, 0), again.batch(0, 0))
    # each stream continues exactly where its last chunk ended (one token of overlap)
    for a, b in zip(rows, rows[1:], strict=False):
        assert torch.equal(a[:, -1], b[:, 0])
    assert rows[0][0, 0] == 0 and rows[0][1, 0] == 5000 and rows[-1][0, -1] == 5000
    lengths = [r.size(1) - 1 for r in rows]
    assert sum(lengths) == 5000 and len(set(lengths)) > 5  # variable BPTT
    assert any(n < 50 for n in lengths)  # the occasional half-length batch
    assert s.lr_scale(1, 3) == pytest.approx(lengths[3] / 70)
    # another epoch cuts elsewhere; two ranks read disjoint streams
    assert [r.size(1) for r in rows] != [s.batch(2, k).size(1) for k in range(len(rows))]
    r0, r1 = (StreamSampler(data, 70, 1, 3, rank=r, world_size=2).batch(1, 4) for r in (0, 1))
    assert torch.equal(torch.cat([r0, r1]), rows[4])
    # backward: the same chunks walked from the end, in memory order (the objective flips)
    back = StreamSampler(data, context=70, batch_size=2, seed=3, reverse=True)
    first = back.batch(1, 0)
    assert first[0, -1] == 10_000 and torch.equal(first.flip(1)[0, : lengths[0] + 1],
                                                  torch.arange(10_000, 10_000 - lengths[0] - 1, -1))


def test_stream_evaluation_scores_each_token_once():
    from lmtool.training.streams import StreamEval

    data = np.arange(1_003, dtype=np.uint32)
    targets = [t for _, w in StreamEval(data, 16, 10).batches()
               for t in w[:, 1:].flatten().tolist()]
    assert sorted(targets) == list(range(1, 1_001))  # 3 tail tokens, fewer than 10, not scored
    ranks = [t for r in (0, 1, 2) for _, w in StreamEval(data, 16, 10).batches(r, 3)
             for t in w[:, 1:].flatten().tolist()]
    assert sorted(ranks) == sorted(targets)


def test_the_carried_state_beats_a_stateless_read_on_a_model_that_needs_it():
    """Each key is repeated 12 tokens later; the BPTT length is 16, so a window read from
    a fresh state often starts after the key. Trained statefully, the LSTM keeps the key
    across batches: read with its state carried, the held-out loss is far lower."""
    from lmtool.training.batches import WindowEval
    from lmtool.training.evaluate import score

    model = tiny("lstm", layers=1, dim=32, hidden=64, ar=0.0, tar=0.0)
    config = TrainConfig(batch_size=16, lr=1e-2, optimizer="adamw", max_steps=200,
                         epochs=1000, eval_every=0, log_every=100)  # max_steps cuts it
    val = blocks(300, 1)
    trainer = trainer_for(model, config, blocks(2000, 0), val)
    assert trainer.source.stateful and trainer.eval_source.stateful
    trainer.fit()
    model.eval()
    carried = score(model, CausalObjective(), trainer.eval_source, device=CPU)
    fresh = score(model, CausalObjective(), WindowEval(val, 16, 17, 16), device=CPU)
    assert carried["loss"] < fresh["loss"] - 0.2, (carried, fresh)


# --- exact resume: unfreezing plan, carried state ---------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("ulmfit"), kind="char", vocab_size=64)


class Crash(Exception):
    pass


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_resume_is_exact_with_unfreezing_and_carried_state(shards, tmp_path, arch):
    """A run killed after its step-4 checkpoint and resumed repeats the uninterrupted
    one: the unfreezing plan (a function of the step) and the LSTM's carried state."""
    from lmtool.text.shards import open_shards
    from lmtool.training import pretrain
    from lmtool.training.batches import WindowSampler

    spe = WindowSampler(open_shards(shards).train, 16, 17, 8, 0).batches_per_epoch
    settings = dict(layers=3, dim=16, context=16, batch_size=8, lr=1e-2, max_steps=8,
                    save_every=4, log_every=1, eval_every=4, eval_batches=2, seed=1,
                    dropout=0.2, discriminative=2.6, unfreeze_start=1,
                    unfreeze_every=3 / spe, optimizer="adamw")
    if arch == "lstm":
        settings.update(hidden=32)
        settings["unfreeze_every"] = 3 / (len(open_shards(shards).train) // 8 // 16)
    else:
        settings.update(heads=2)

    def run(out, crash_at=None):
        def boom(t):
            if t.state.step == crash_at:
                raise Crash

        with contextlib.suppress(Crash):
            pretrain(shards, out, arch=arch, overrides=settings, callbacks=[Every(boom)],
                     sample_chars=0)
        return out

    whole = run(tmp_path / "whole")
    killed = run(tmp_path / "killed", crash_at=6)
    state = json.loads((killed / "trainer" / "state.json").read_text())
    assert state["step"] == 4
    if arch == "lstm":
        assert (killed / "trainer" / "tensors.safetensors").is_file()  # the carried state
    pretrain(shards, killed, arch=arch, overrides=settings, resume=True, sample_chars=0)

    def rows(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = rows(whole), rows(killed)
    assert [r["step"] for r in a if "loss" in r] == list(range(1, 9))
    for key in ("loss", "val_loss"):
        got = [(r["step"], r[key]) for r in b if key in r]
        want = [(r["step"], r[key]) for r in a if key in r]
        assert [s for s, _ in got] == [s for s, _ in want]
        for (step, x), (_, y) in zip(got, want, strict=True):
            assert x == pytest.approx(y, abs=1e-6), (key, step)
    from safetensors.torch import load_file

    wa, wb = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# --- AR / TAR ---------------------------------------------------------------------------------


def test_ar_and_tar_are_added_to_the_lstm_loss_by_default():
    import torch.nn.functional as F

    from lmtool.training.objectives import Batch

    model = tiny("lstm", layers=2, dim=16, hidden=32)
    assert model.config.ar == 2.0 and model.config.tar == 1.0
    model.train()
    captured = {}
    last = model.rnns[-1]
    last.register_forward_hook(lambda m, i, o: captured.update(raw=o[0]))
    ids = torch.randint(7, 16, (3, 9))
    batch = Batch(ids[:, :-1], ids[:, 1:])
    loss, _ = CausalObjective().loss(model, batch)
    raw = captured["raw"]  # (B, T, E); dropout 0, so the dropped output equals it
    logits = model.lm_head(raw)
    ce = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten())
    expected = ce + 2.0 * raw.pow(2).mean() + 1.0 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.penalty is None  # taken by the objective
    model.eval()
    CausalObjective().loss(model, batch)
    assert model.penalty is None  # not in evaluation
    transformer = tiny("transformer")
    transformer.train()
    plain, _ = CausalObjective().loss(transformer, batch)
    assert math.isfinite(plain.item()) and transformer.penalty is None
