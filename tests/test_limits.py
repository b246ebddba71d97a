"""Limits are caps, never targets, and a time limit shapes the schedule by the steps it
buys: --max-time and --max-steps only cut the default plan short (a longer run is asked
for with --epochs); under --max-time the rates still rise then fall over the steps
trained, however slow the start. And `finetune lm` keeps its best held-out weights."""

from __future__ import annotations

import json

import pytest
import torch
from lm_fixtures import TINY, generate_text, make_shards

LR = 1e-2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("limits"), kind="char", vocab_size=64)


def fake_clock_run(shards, *, max_time: float, first_step: float, epochs: float | None,
                   schedule: str = "stlr", max_steps: int | None = None, batch: int = 2):
    """A tiny causal model trained under a fake clock: every step takes 1 s, the first
    `first_step` s (a slow start: allocation, caches, a busy machine). Returns the trainer
    and the logged rates, one per step."""
    from lmtool.models import build_model, resolve_model_config
    from lmtool.text.shards import open_shards
    from lmtool.training.batches import WindowSampler
    from lmtool.training.config import TrainConfig
    from lmtool.training.objectives import CausalObjective
    from lmtool.training.optimizers import ulmfit_optimizer
    from lmtool.training.trainer import Callback, Trainer

    data = open_shards(shards)
    config = resolve_model_config("transformer", "causal", "tiny",
                                  dict(layers=1, heads=2, dim=16, context=16))
    config.vocab_size = data.vocab_size
    torch.manual_seed(0)
    model = build_model(config)
    train = TrainConfig(batch_size=batch, lr=LR, optimizer="adamw", schedule=schedule,
                        max_time=max_time, max_steps=max_steps, epochs=epochs,
                        eval_every=0, save_every=0, log_every=1, device="cpu")
    now = [0.0]
    rates: list[float] = []

    class Clock(Callback):
        def on_step(self, trainer):
            now[0] += first_step if trainer.state.step == 1 else 1.0

        def on_train_row(self, trainer, row):
            rates.append(row["lr"])

    sampler = WindowSampler(data.train, 16, 17, batch, 0)
    trainer = Trainer(model, CausalObjective(), sampler, train, torch.device("cpu"),
                      ulmfit_optimizer(model, train, torch.device("cpu")),
                      clock=lambda: now[0], callbacks=[Clock()])
    reason = trainer.fit()
    return trainer, rates, reason


def rise_then_fall(rates: list[float]) -> int:
    """The index of the peak, after checking the rates rise to it and fall after it."""
    peak = max(range(len(rates)), key=rates.__getitem__)
    assert all(a <= b for a, b in zip(rates[:peak], rates[1:peak + 1], strict=True)), rates
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:], strict=False)), rates
    return peak


def test_a_slow_start_under_max_time_still_trains_a_whole_triangle(shards):
    from lmtool.training.trainer import Trainer

    """The first step takes 20 of the 60 s: planned by the fraction of time used, the
    triangle had peaked and half fallen by step 2. Fitted to the steps the rest of the
    time buys, the rates rise to the peak and fall to the floor over the steps trained."""
    trainer, rates, reason = fake_clock_run(shards, max_time=60, first_step=20, epochs=1000)
    assert reason == "time"
    assert 30 <= trainer.state.step <= 41, trainer.state.step  # ~40 steps fit in 60 s
    assert trainer.state.elapsed_s <= 60
    peak = rise_then_fall(rates)
    assert rates[peak] == pytest.approx(LR, rel=0.1)  # the triangle's top is reached
    assert 2 <= peak <= len(rates) // 4  # early, as a slanted triangle's is
    assert rates[-1] <= LR / 8  # and the end is near the floor (LR / 32)
    # The fitted horizon is saved with the run, so a resumed run keeps the schedule.
    state = trainer.snapshot()
    assert state.extra["plan"]["end"] == trainer.state.step
    assert state.extra["plan"]["seconds"] is None  # time no longer shapes the rate
    # Resumed with the same limits, it has reached them: the fitted horizon stops it.
    again = Trainer(trainer.model, trainer.objective, trainer.source, trainer.config,
                    trainer.device, trainer.optimizer, state=state)
    assert again.plan == trainer.plan and again.limits.by_time
    assert again.limits.max_steps == trainer.state.step and again.fit() == "done"


def test_cosine_warmup_fits_the_time_too(shards):
    """A warmup of 10% of the steps the time buys, not of the epochs' steps."""
    trainer, rates, _ = fake_clock_run(shards, max_time=60, first_step=20, epochs=1000,
                                       schedule="cosine")
    peak = rise_then_fall(rates)
    assert rates[peak] == pytest.approx(LR, rel=0.05)
    assert peak <= 6 and rates[-1] == pytest.approx(LR * 0.1, rel=0.2)


def test_a_time_limit_alone_does_not_train_past_the_default_epoch(shards):
    """60 s at 1 s a step would buy ~60 steps; one epoch (the default) is fewer: the
    run stops there, its schedule spanning that epoch."""
    trainer, rates, reason = fake_clock_run(shards, max_time=60, first_step=1, epochs=None,
                                            batch=16)
    spe = trainer.limits.steps_per_epoch
    assert spe < 50  # the premise: the time limit is the longer one
    assert trainer.state.step == spe and reason == "steps"
    peak = rise_then_fall(rates)
    assert rates[peak] == pytest.approx(LR, rel=0.15) and rates[-1] == pytest.approx(LR / 32)


def test_max_steps_caps_the_default_epoch_and_epochs_asks_for_more(shards, tmp_path, cli):
    run = tmp_path / "run"
    fast = [*TINY, "--batch-size", "8", "--eval-every", "0", "--log-every", "1",
            "--device", "cpu", "--quiet", "--format", "json"]
    result = cli("pretrain", shards, "-o", run, *fast, "--max-steps", "100")
    assert result.exit_code == 0, result.stderr
    one_epoch = json.loads(result.stdout)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]
    assert rows[-1]["epoch"] == 1.0 and one_epoch["steps"] == rows[-1]["step"] < 50
    assert one_epoch["stop_reason"] == "steps"
    result = cli("pretrain", shards, "-o", tmp_path / "two", *fast, "--max-steps", "100",
                 "--epochs", "2")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 2 * one_epoch["steps"]


def test_pretrain_max_time_alone_stops_after_the_default_epoch(shards, tmp_path, cli):
    """Before, --max-time made the run train for that long, whatever the epochs."""
    result = cli("pretrain", shards, "-o", tmp_path / "run", *TINY, "--batch-size", "8",
                 "--eval-every", "0", "--device", "cpu", "--quiet", "--format", "json",
                 "--max-time", "30")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stop_reason"] == "steps" and summary["elapsed_s"] < 25


# --- finetune lm: the best held-out weights ------------------------------------------


@pytest.fixture(scope="module")
def base(shards, tmp_path_factory):
    from lmtool.training import pretrain

    out = tmp_path_factory.mktemp("base") / "lm"
    pretrain(shards, out, overrides=dict(layers=1, heads=2, dim=16, context=16, batch_size=8,
                                         lr=3e-3, optimizer="adamw", max_steps=30,
                                         epochs=100, eval_every=0, device="cpu"),
             sample_chars=0)
    return out


def test_finetune_lm_keeps_the_best_weights_and_warns_when_it_got_worse(base, tmp_path, cli):
    """A rate far too high makes the held-out loss rise: the run keeps the base run's
    weights (step 0's held-out score was the best), says so, and the last step's
    weights stay beside them for --resume."""
    from safetensors.torch import load_file

    target = tmp_path / "target.txt"
    target.write_text(generate_text(7, 60))
    out = tmp_path / "ft"
    result = cli("finetune", "lm", base, target, "-o", out, "--lr", "0.5", "--max-steps", "8",
                 "--discriminative", "1", "--schedule", "constant", "--eval-every", "0",
                 "--device", "cpu", "--quiet", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["last"]["loss"] > data["before"]["loss"]  # the premise: it got worse
    assert data["kept_step"] == 0 and data["after"] == data["before"]
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "worse" in warning[0], result.stderr
    assert "base run's weights (step 0)" in warning[0]
    assert f"{data['before']['perplexity']:,.1f}" in warning[0]
    kept, base_weights = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert kept.keys() == base_weights.keys()
    assert all(torch.equal(kept[k], base_weights[k]) for k in kept)
    config = json.loads((out / "config.json").read_text())
    assert config["best"]["step"] == 0
    shown = cli("info", out)
    assert shown.exit_code == 0 and "weights     step 0's, the best held-out" in shown.stdout
    last = load_file(out / "trainer" / "tensors.safetensors")  # --resume goes on from these
    assert set(last) >= {f"last.{k}" for k in kept}
    assert any(not torch.equal(last[f"last.{k}"], kept[k]) for k in kept)


def test_finetune_lm_that_improves_keeps_its_last_weights_without_a_word(base, tmp_path, cli):
    target = tmp_path / "target.txt"
    target.write_text(generate_text(7, 60))
    out = tmp_path / "ft"
    result = cli("finetune", "lm", base, target, "-o", out, "--lr", "3e-3", "--max-steps",
                 "8", "--eval-every", "0", "--device", "cpu", "--quiet", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["after"]["loss"] < data["before"]["loss"]
    assert data["kept_step"] == data["steps"] and data["warnings"] == []
    assert "warning" not in result.stderr


def test_classifier_time_limit_alone_trains_the_default_plan(base, tmp_path):
    """`finetune classifier --max-time 60` trained 34 epochs instead of its default
    plan: with a time limit that is not reached it trains what it trains without one."""
    from lmtool.training import finetune_classifier

    words = {"pos": ["sun", "warm", "glad", "kind"], "neg": ["rain", "cold", "sad", "mean"]}
    rows = [(label, " ".join(words[label][(i + j) % 4] for j in range(2 + i % 5)))
            for i in range(40) for label in ("pos", "neg")]
    data = tmp_path / "train.tsv"
    data.write_text("label\ttext\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
    opts = dict(batch_size=8, device="cpu")
    plain = finetune_classifier(base, data, tmp_path / "plain", overrides=opts)
    timed = finetune_classifier(base, data, tmp_path / "timed", overrides=dict(opts,
                                                                                max_time=20))
    assert timed.stop_reason == "steps" and timed.elapsed_s < 20
    assert timed.step == plain.step and len(timed.history) == len(plain.history)


def test_finetune_lm_resumes_from_its_last_weights_not_the_kept_ones(base, tmp_path, cli):
    """The kept (best) weights are not where training stands: --resume goes on from the
    last step's, and repeats the uninterrupted run's losses."""
    target = tmp_path / "target.txt"
    target.write_text(generate_text(7, 60))
    args = ["--lr", "0.5", "--discriminative", "1", "--schedule", "constant", "--eval-every",
            "0", "--log-every", "1", "--device", "cpu", "--quiet"]

    def losses(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert cli("finetune", "lm", base, target, "-o", whole, *args, "--max-steps", "10"
               ).exit_code == 0
    assert cli("finetune", "lm", base, target, "-o", cut, *args, "--max-steps", "7"
               ).exit_code == 0
    assert json.loads((cut / "config.json").read_text())["best"]["step"] == 0  # premise
    result = cli("finetune", "lm", base, target, "-o", cut, *args, "--max-steps", "10",
                 "--resume")
    assert result.exit_code == 0, result.stderr
    assert losses(cut) == pytest.approx(losses(whole)) and max(losses(cut)) == 10
