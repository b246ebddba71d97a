"""The CPU attention's precision under bf16 autocast, chosen by measurement per shape."""

from __future__ import annotations

import math

import pytest
import torch

from lmtool import device as dev
from lmtool.models import attention_dtype as ad
from lmtool.models.transformer import attention


@pytest.fixture(autouse=True)
def _forget():
    ad._known.clear()
    yield
    ad._known.clear()


def qkv(T=8, grad=True):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 2, T, 4, generator=g, dtype=torch.bfloat16).requires_grad_(grad)
            for _ in range(3)]


def test_the_key_rounds_lengths_up_to_powers_of_two_and_drops_the_batch():
    q, k = torch.zeros(3, 4, 70, 32), torch.zeros(3, 4, 70, 32)
    assert ad.shape_key(q, k, True, False, True) == "4x128x128x32 causal"
    assert (ad.shape_key(q, torch.zeros(3, 4, 9, 32), False, True, False)
            == "4x128x16x32 masked forward")


@pytest.mark.parametrize("key", ["2x16x16x8 causal", "2x16x16x8 masked forward"])
def test_the_measurement_times_both_ways_on_this_cpu(key):
    ratio = ad.measure(key)
    assert math.isfinite(ratio) and ratio > 0


@pytest.mark.parametrize("ratio, in_bf16", [(2.0, True), (1.05, False), (0.3, False)])
def test_bf16_only_when_measured_faster_by_ten_percent_and_remembered(monkeypatch, ratio, in_bf16):
    calls = []
    monkeypatch.setattr(ad, "measure", lambda key, clock=None: calls.append(key) or ratio)
    q, k, v = qkv()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, True, 0.0)
        out.float().sum().backward()
    assert out.dtype == (torch.bfloat16 if in_bf16 else torch.float32)
    assert q.grad is not None and q.grad.dtype == torch.bfloat16
    assert calls == ["2x8x8x4 causal"]
    assert dev.recall_speedup("attention", "2x8x8x4 causal") == ratio  # in precision.json
    ad._known.clear()  # a new process: the cache answers, nothing is measured again
    assert ad.bf16_attention_pays(q, k, True) is in_bf16
    assert calls == ["2x8x8x4 causal"]


@pytest.mark.parametrize("ratio, dtype", [(1.5, torch.bfloat16), (0.9, torch.float32)])
def test_a_forward_alone_is_measured_as_such(monkeypatch, ratio, dtype):
    calls = []
    monkeypatch.setattr(ad, "measure", lambda key, clock=None: calls.append(key) or ratio)
    q, k, v = qkv(grad=False)
    mask = torch.ones(2, 1, 1, 8, dtype=torch.bool)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention(q, k, v, False, 0.0, mask).dtype == dtype
    assert calls == ["2x8x8x4 masked forward"]


def test_under_torchrun_nothing_is_measured_and_fp32_is_kept(monkeypatch):
    monkeypatch.setattr(ad, "measure", lambda *a, **k: pytest.fail("measured"))
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    q, k, _ = qkv()
    assert ad.bf16_attention_pays(q, k, True) is False
    assert ad.bf16_attention_pays(q, k, False, torch.ones(2, 1, 1, 8, dtype=torch.bool)) is False


def test_the_attention_cache_keeps_the_bf16_speedup_beside_it():
    dev.remember_bf16_speedup(1.4)
    dev.remember_speedup("attention", "4x64x64x32 causal", 0.5)
    dev.remember_bf16_speedup(1.6)
    assert dev.recall_speedup("attention", "4x64x64x32 causal") == 0.5
    assert dev.cached_bf16_speedup() == 1.6
