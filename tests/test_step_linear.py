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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 1), (2, 4)])
def test_the_packed_copy_computes_the_linear_layer(dtype, bias, lead):
    torch.manual_seed(0)
    layer = nn.Linear(24, 40, bias=bias).to(dtype)
    packed = sl.PackedLinear.of(layer)
    if packed is None:
        pytest.skip(f"oneDNN cannot pack {dtype} weights here")
    x = torch.randn(*lead, 24, dtype=dtype)
    with torch.inference_mode():
        got = packed(x)
    assert got.shape == (*lead, 40) and got.dtype == dtype
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, layer(x).detach(), **tolerance)


@pytest.mark.parametrize("one, few", [(True, True), (True, False), (False, True)])
def test_the_copy_serves_only_the_row_counts_it_won(one, few):
    layer = nn.Linear(4, 6)
    served = []

    def copy(x):
        served.append(x.numel() // 4)
        return layer(x)

    split = sl.RowsSplit(sl._plain(layer), copy, one, few)
    for rows in (1, 2, sl.MAX_ROWS, sl.MAX_ROWS + 1):
        x = torch.randn(rows, 1, 4)
        torch.testing.assert_close(split(x), layer(x))
    assert served == [1] * one + [2, sl.MAX_ROWS] * few


def _kind(name: str) -> type:
    """A copy kind for the choice tests: computes the layer, named like a real kind."""
    def of(cls, layer):
        copy = cls()
        copy.layer = layer
        return copy
    return type(name, (), {"of": classmethod(of), "__call__": lambda self, x: self.layer(x)})


# Measured speed-ups of each kind at (1 row, MAX_ROWS rows) → the kind kept, one, few.
CHOICES = [
    ({"Blocked": (2.0, 1.5), "Packed": (1.0, 1.0)}, ("Blocked", True, True)),
    ({"Blocked": (0.9, 0.9), "Packed": (0.9, 1.7)}, ("Packed", False, True)),
    ({"Blocked": (1.3, 1.0), "Packed": (1.2, 1.6)}, ("Packed", True, True)),
    ({"Blocked": (2.0, 0.9), "Packed": (1.05, 1.0)}, ("Blocked", True, False)),
    ({"Blocked": (1.05, 1.0), "Packed": (0.5, 1.08)}, None),
]


@pytest.mark.parametrize("ratios, kept", CHOICES)
def test_the_copy_that_gained_most_is_kept_where_it_was_faster(monkeypatch, ratios, kept):
    timed = []

    def measured(plain, copy, x):
        kind = type(copy).__name__
        timed.append((kind, x.size(0)))
        return ratios[kind][x.size(0) != 1]  # the same at 2 rows as at MAX_ROWS

    monkeypatch.setattr(sl, "speedup", measured)
    monkeypatch.setattr(sl, "COPY_KINDS", (_kind("Blocked"), _kind("Packed")))
    layer, twin = nn.Linear(4, 6), nn.Linear(4, 6)
    with torch.inference_mode():
        chosen = sl.step_linear(layer)
        assert sl.step_linear(layer) is chosen  # remembered for the weight
        sl.step_linear(twin)  # the same shape: not measured again
    if kept is None:
        assert not isinstance(chosen, sl.RowsSplit)
    else:
        assert (type(chosen.copy).__name__, chosen.one, chosen.few) == kept
    assert sorted(timed) == [(k, r) for k in ("Blocked", "Packed") for r in (1, 2, sl.MAX_ROWS)]


def test_a_shape_measured_before_makes_only_the_winners_copy(monkeypatch):
    monkeypatch.setattr(sl, "speedup", lambda plain, copy, x: 2.0 if type(copy).__name__ == "Packed"
                        else 0.5)
    kinds = (_kind("Blocked"), _kind("Packed"))
    made = []
    for kind in kinds:
        monkeypatch.setattr(kind, "of", classmethod(
            lambda cls, layer, of=kind.of: made.append(cls.__name__) or of.__func__(cls, layer)))
    monkeypatch.setattr(sl, "COPY_KINDS", kinds)
    layer, twin = nn.Linear(4, 6), nn.Linear(4, 6)
    with torch.inference_mode():
        sl.step_linear(layer)
        made.clear()
        chosen = sl.step_linear(twin)
    assert made == ["Packed"] and type(chosen.copy).__name__ == "Packed"


def test_a_copy_that_loses_at_two_rows_serves_only_one(monkeypatch):
    monkeypatch.setattr(sl, "speedup", lambda plain, copy, x: {1: 1.6, 2: 0.4}.get(x.size(0), 1.5))
    monkeypatch.setattr(sl, "COPY_KINDS", (_kind("Blocked"),))
    layer = nn.Linear(4, 6)
    with torch.inference_mode():
        chosen = sl.step_linear(layer)
    assert (chosen.one, chosen.few) == (True, False)


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


def test_autocast_keeps_f_linear(monkeypatch):
    monkeypatch.setattr(sl, "speedup", lambda *a: 2.0)
    layer = nn.Linear(4, 6)
    x = torch.randn(1, 4)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = sl.step_linear(layer)(x)
    assert got.dtype == torch.bfloat16  # what F.linear gives under autocast


def test_a_layer_made_under_inference_mode_is_served_f_linear(monkeypatch):
    monkeypatch.setattr(sl, "speedup", lambda *a: 2.0)
    with torch.inference_mode():
        layer = nn.Linear(4, 6)
        x = torch.randn(1, 4)
        torch.testing.assert_close(sl.step_linear(layer)(x), layer(x))
