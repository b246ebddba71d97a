"""The run builder (training/builder.py): a kind of run states its parts, the builder
claims -o, trains, writes config.json, metrics and checkpoints, resumes and reports."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from lm_fixtures import make_shards

from lmtool.errors import BadInput


def toy_task(shards, output, *, resume: bool, max_steps: int, fail_at: int | None = None):
    """A kind of run written against the builder alone: a tiny causal model on the
    shards' training tokens, with its own config.json entry and its own result."""
    from lmtool.checkpoint import TrainerState
    from lmtool.errors import RuntimeFailure
    from lmtool.models import build_model
    from lmtool.models.config import ModelConfig
    from lmtool.text.shards import open_shards
    from lmtool.training.batches import WindowSampler
    from lmtool.training.builder import Parts, RunPlan, build_run
    from lmtool.training.config import TrainConfig
    from lmtool.training.objectives import CausalObjective
    from lmtool.training.optimizers import ulmfit_optimizer
    from lmtool.training.trainer import Callback

    data = open_shards(shards)
    model_config = ModelConfig(vocab_size=data.vocab_size, context=16, layers=1, heads=2,
                               dim=16)
    train = TrainConfig(batch_size=4, max_steps=max_steps, device="cpu", eval_every=0,
                        save_every=0, log_every=1, lr=3e-3)

    def parts(env):
        if env.resume:
            model, state, rows = env.resumed()
        else:
            torch.manual_seed(0)
            model, state, rows = build_model(model_config).to(env.device), TrainerState(), []
        return Parts(
            model=model, objective=CausalObjective(),
            source=WindowSampler(data.train, 16, 17, 4, seed=0), eval_source=None,
            optimizer=ulmfit_optimizer(model, train, env.device),
            config={"task": "lm", "data": {"toy": True}},
            tokenizer_json=(shards / "tokenizer.json").read_text(), state=state, rows=rows,
            finish=lambda result, trainer, metrics: replace(result, sample="the toy's"))

    class Boom(Callback):  # a runtime failure (e.g. a non-finite loss) at step `fail_at`
        def on_step(self, trainer):
            if trainer.state.step == fail_at:
                raise RuntimeFailure("boom")

    return build_run(output, lambda: RunPlan(train, model_config, parts), resume=resume,
                     force=False, callbacks=[Boom()])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("builder"), kind="char", vocab_size=64)


def test_a_kind_of_run_states_only_its_parts(shards, tmp_path):
    out = tmp_path / "run"
    result = toy_task(shards, out, resume=False, max_steps=3)
    assert (result.step, result.stop_reason, result.sample) == (3, "steps", "the toy's")
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == {"toy": True} and config["training"]["max_steps"] == 3
    assert config["num_parameters"] == result.num_parameters > 0
    assert config["model"]["dim"] == 16 and config["arch"] == "transformer"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["loss"] == result.last_loss

    with pytest.raises(BadInput, match="already holds a run"):  # the claim of -o
        toy_task(shards, out, resume=False, max_steps=3)
    resumed = toy_task(shards, out, resume=True, max_steps=5)
    assert (resumed.resumed_from, resumed.step) == (3, 5)


def test_a_new_run_that_fails_before_its_first_save_leaves_nothing(shards, tmp_path):
    from lmtool.errors import RuntimeFailure

    out = tmp_path / "run"
    with pytest.raises(RuntimeFailure, match="boom"):
        toy_task(shards, out, resume=False, max_steps=3, fail_at=1)
    assert not out.exists()
