"""Decoding weights' dtype on a CPU with native bf16: fp32 below the cache, measured above."""

from __future__ import annotations

import math

import pytest
import torch

from lmtool import device as dev
from lmtool.device import CpuFacts
from lmtool.inference import decode_dtype as dd
from lmtool.inference import runs
from lmtool.models import ModelConfig, build_model, build_seq2seq
from lmtool.models.seq2seq_config import Seq2SeqConfig

CPU = torch.device("cpu")


def tiny(arch="transformer"):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, vocab_size=40, context=16, layers=2, heads=2,
                                   dim=16, hidden=24, dropout=0.0)).eval()


@pytest.fixture
def big_cache_miss(monkeypatch):
    """A CPU with AVX512-BF16 whose last-level cache holds none of the model."""
    monkeypatch.setattr(dev, "cpu_facts", lambda: CpuFacts("test CPU", False, True))
    monkeypatch.setattr(runs, "last_level_cache_bytes", lambda: 1)


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_the_measurement_decodes_in_both_dtypes(arch):
    model = tiny(arch)
    ratio = dd.measure(model)
    assert math.isfinite(ratio) and ratio > 0
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched


@pytest.mark.parametrize("ratio, dtype", [(1.5, torch.bfloat16), (1.05, torch.float32)])
def test_above_the_cache_bf16_only_when_it_decoded_faster(big_cache_miss, monkeypatch, ratio,
                                                           dtype):
    calls = []
    monkeypatch.setattr(dd, "measure", lambda model: calls.append(1) or ratio)
    model = tiny()
    assert runs.inference_dtype("auto", CPU, model) is dtype
    assert runs.inference_dtype("auto", CPU, model) is dtype  # cached: measured once
    assert calls == [1]
    assert dev.recall_speedup("decode", dd.decode_key(model)) == ratio
    assert runs.inference_dtype("fp32", CPU, model) is torch.float32  # asked for: no say


def test_below_the_cache_or_without_native_bf16_fp32_and_nothing_measured(monkeypatch):
    monkeypatch.setattr(dd, "measure", lambda model: pytest.fail("measured"))
    monkeypatch.setattr(runs, "last_level_cache_bytes", lambda: 1 << 40)
    monkeypatch.setattr(dev, "cpu_facts", lambda: CpuFacts("test CPU", False, True))
    assert runs.inference_dtype("auto", CPU, tiny()) is torch.float32
    monkeypatch.setattr(runs, "last_level_cache_bytes", lambda: 1)
    monkeypatch.setattr(dev, "cpu_facts", lambda: CpuFacts("test CPU", False, False))
    assert runs.inference_dtype("auto", CPU, tiny()) is torch.float32


def test_a_sequence_to_sequence_model_above_the_cache_takes_bf16(big_cache_miss, monkeypatch):
    monkeypatch.setattr(dd, "measure", lambda model: pytest.fail("measured"))
    model = build_seq2seq(Seq2SeqConfig(vocab_size=40, context=16))
    assert runs.inference_dtype("auto", CPU, model) is torch.bfloat16
