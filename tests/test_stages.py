"""ULMFiT's plan of stages (training/freezing.py): a cycle per stage at its own peak,
every group trained under any limit that allows a step per stage, said when not."""

from __future__ import annotations

import math

import pytest

from lmtool.training.freezing import StagePlan, ulmfit_stages
from lmtool.training.schedules import stlr


def test_fastai_recipe_for_four_groups():
    """fastai's IMDb classifier: the head at 2e-2, then 1e-2, 5e-3, and 1e-3 with every
    group for twice as long; one epoch a stage."""
    plan, epochs = ulmfit_stages(4, 10, lr=2e-2)
    assert [(s.steps, s.trainable) for s in plan.stages] == [(10, 1), (10, 2), (10, 3),
                                                             (20, 4)]
    assert [s.peak for s in plan.stages] == pytest.approx([2e-2, 1e-2, 5e-3, 1e-3])
    assert epochs == 5 and plan.total == 50 and not plan.notes and not plan.warnings
    # more groups: the middle stages halve, never below the last stage's peak
    peaks = [s.peak for s in ulmfit_stages(8, 10, lr=2e-2)[0].stages]
    assert peaks == pytest.approx([2e-2, 1e-2, 5e-3, 2.5e-3, 1.25e-3, 1e-3, 1e-3, 1e-3])


def test_each_stage_is_a_slanted_triangle_of_its_own():
    plan, _ = ulmfit_stages(3, 21, lr=2e-2)
    start = 0
    for stage in plan.stages:
        rates = [plan.lr(start + t) for t in range(stage.steps)]
        want = [stlr(t / (stage.steps - 1), stage.peak) for t in range(stage.steps)]
        assert rates == pytest.approx(want)
        assert rates[0] == pytest.approx(stage.peak / 32) == pytest.approx(rates[-1])
        assert max(rates) == pytest.approx(stage.peak, rel=0.05)
        assert [plan.trainable(start + t, 3) for t in range(stage.steps)] == (
            [stage.trainable] * stage.steps)
        start += stage.steps
    assert plan.lr(start + 5) == pytest.approx(plan.stages[-1].peak / 32)  # past the end
    assert StagePlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("groups", [2, 4, 5, 14])
@pytest.mark.parametrize("spe", [1, 3, 57])
@pytest.mark.parametrize("epochs", [None, 1, 1.5, 2, 9])
def test_every_group_trains_at_any_epochs(groups, spe, epochs):
    """Whatever --epochs (>= 1) or the data size, every stage gets a step when the
    budget allows one per stage, and the last stage trains every group."""
    plan, span = ulmfit_stages(groups, spe, lr=1e-2, epochs=epochs)
    budget = math.ceil(span * spe)
    assert plan.total == budget
    assert all(s.steps >= 1 for s in plan.stages) and plan.stages[-1].trainable == groups
    if budget >= groups:
        assert len(plan.stages) == groups and not plan.warnings
        assert plan.stages[-1].steps >= max(s.steps for s in plan.stages) - 1  # the longest
    else:  # stages merged: several groups unfreeze at once, and the log says so
        assert len(plan.stages) == budget and "several at a time" in plan.warnings[0]


def test_limits_compress_the_plan_and_say_so():
    plan, span = ulmfit_stages(5, 10, lr=2e-2, epochs=2)  # --epochs 2 on a 5-group model
    assert span == 2 and plan.total == 20 and len(plan.stages) == 5
    assert "--epochs 2" in plan.notes[0] and not plan.warnings
    plan, _ = ulmfit_stages(5, 10, lr=2e-2, max_steps=7)
    assert plan.total == 7 and len(plan.stages) == 5 and "--max-steps 7" in plan.notes[0]
    plan, _ = ulmfit_stages(5, 10, lr=2e-2, max_steps=2)  # cannot fit: merged, and said
    assert [(s.steps, s.trainable) for s in plan.stages] == [(1, 3), (1, 5)]
    assert [s.peak for s in plan.stages] == pytest.approx([5e-3, 1e-3])
    assert plan.warnings == ("the limits allow 2 steps, fewer than the plan's 5 stages: "
                             "layer groups unfreeze several at a time",)
    plan, _ = ulmfit_stages(5, 10, lr=2e-2, max_steps=1000)  # a cap, not a target
    assert plan.total == 60


def test_one_stage_when_not_gradual():
    plan, span = ulmfit_stages(4, 10, lr=1e-2, gradual=False)
    assert [(s.steps, s.trainable, s.peak) for s in plan.stages] == [(50, 4, 1e-2)]
    assert span == 5  # as long as the gradual plan


def test_the_default_stage_is_an_epoch_or_enough_steps_to_train():
    """fastai's epoch-long stages on a large set; on a small one a stage of a few steps
    trains nothing, so the default stage runs MIN_STAGE_STEPS steps at least."""
    from lmtool.training.freezing import MIN_STAGE_STEPS, default_stage_epochs

    assert default_stage_epochs(2 * MIN_STAGE_STEPS) == 1.0
    assert default_stage_epochs(MIN_STAGE_STEPS // 4) == 4.0
    plan, _ = ulmfit_stages(5, 25, lr=0.02, every=default_stage_epochs(25))
    assert [s.steps for s in plan.stages] == [100, 100, 100, 100, 200]
