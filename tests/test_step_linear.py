"""Decoding steps' linear layers: a blocked transposed copy where it measured faster."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmtool.models import step_linear as sl


@pytest.fixture(autouse=True)
def _forget():
    sl._speedups.clear()
    sl._chosen.clear()
    yield
    sl._speedups.clear()
    sl._chosen.clear()


@pytest.mark.parametrize("V, C, blocks, bias", [(10, 4, 2, True), (9, 4, 2, False),
                                                (7, 3, 3, True), (5, 6, 1, False)])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 1), (2, 4)])
def test_the_blocked_copy_computes_the_linear_layer(V, C, blocks, bias, lead):
    torch.manual_seed(0)
    layer = nn.Linear(C, V, bias=bias)
    x = torch.randn(*lead, C)
    got = sl.BlockedLinear(layer.weight, layer.bias, blocks)(x)
    assert got.shape == (*lead, V) and got.is_contiguous()
    torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_rows", [1, sl.MAX_ROWS])
def test_more_rows_than_max_rows_take_f_linear(monkeypatch, max_rows):
    layer = nn.Linear(4, 6)
    blocked = sl.BlockedLinear(layer.weight, layer.bias, 2)
    blocked.max_rows = max_rows
    monkeypatch.setattr(torch, "bmm", lambda *a: pytest.fail("bmm for many rows"))
    x = torch.randn(max_rows + 1, 4)
    torch.testing.assert_close(blocked(x), layer(x))


@pytest.mark.parametrize("ratios, max_rows", [((2.0, 1.5), sl.MAX_ROWS), ((2.0, 0.9), 1),
                                              ((1.05,), 0)])
def test_the_copy_is_taken_only_where_measured_faster(monkeypatch, ratios, max_rows):
    calls = []

    def measured(plain, blocked, x):
        calls.append(x.size(0))
        with monkeypatch.context() as m:  # the copy is what is timed
            m.setattr(sl.F, "linear", lambda *a: pytest.fail("F.linear timed twice"))
            got = blocked(x)
        torch.testing.assert_close(got, plain(x))
        return ratios[len(calls) - 1]

    monkeypatch.setattr(sl, "speedup", measured)
    layer, twin = nn.Linear(4, 6), nn.Linear(4, 6)
    with torch.inference_mode():
        chosen = sl.step_linear(layer)
        assert getattr(chosen, "max_rows", 0) == max_rows
        assert sl.step_linear(layer) is chosen  # remembered for the weight
        sl.step_linear(twin)  # the same shape: not measured again
    assert calls == [1, sl.MAX_ROWS][: len(ratios)]


def test_a_weight_changed_in_place_gets_a_fresh_copy(monkeypatch):
    monkeypatch.setattr(sl, "speedup", lambda *a: 2.0)
    layer = nn.Linear(4, 6)
    x = torch.randn(1, 4)
    with torch.inference_mode():
        before = sl.step_linear(layer)
    with torch.no_grad():
        layer.weight.add_(1.0)  # an optimiser step, a loaded checkpoint
    with torch.inference_mode():
        after = sl.step_linear(layer)
        assert after is not before
        torch.testing.assert_close(after(x), layer(x))


def test_training_and_gradients_keep_f_linear(monkeypatch):
    monkeypatch.setattr(sl, "speedup", lambda *a: pytest.fail("measured"))
    layer = nn.Linear(4, 6)
    x = torch.randn(1, 4, requires_grad=True)
    sl.step_linear(layer)(x).sum().backward()
    torch.testing.assert_close(x.grad[0], layer.weight.sum(0))


def test_the_measurement_runs_here():
    layer = nn.Linear(16, 64)
    ratio = sl.speedup(sl._plain(layer), sl.BlockedLinear(layer.weight, layer.bias, 2),
                       torch.randn(1, 16))
    assert 0 < ratio < float("inf")


def test_a_model_converted_to_bf16_is_not_served_its_fp32_copy(monkeypatch):
    monkeypatch.setattr(sl, "speedup", lambda *a: 2.0)
    layer = nn.Linear(4, 6)
    with torch.inference_mode():
        sl.step_linear(layer)  # an fp32 copy
    layer.to(torch.bfloat16)  # the same Parameter objects, their data swapped
    x = torch.randn(1, 4, dtype=torch.bfloat16)
    with torch.inference_mode():
        got = sl.step_linear(layer)(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, layer(x))
