"""Device and precision choice. This machine (and CI) has no GPU."""

from __future__ import annotations

import os

import pytest
import torch

from lmtool import device as dev
from lmtool.errors import BadInput

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_cpu_and_auto_resolve_to_devices_that_exist():
    assert dev.resolve_device("cpu") == torch.device("cpu")
    auto = dev.resolve_device("auto")
    torch.zeros(1, device=auto)  # usable
    if not torch.cuda.is_available() and not dev._mps_available():
        assert auto == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1", "CUDA"])
def test_cuda_without_a_gpu_is_bad_input(name):
    with pytest.raises(BadInput, match="no CUDA GPU is available") as err:
        dev.resolve_device(name)
    assert err.value.hint and "--device cpu" in err.value.hint


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", "cpu:0:1"])
def test_unknown_device_is_bad_input(name):
    with pytest.raises(BadInput, match="unknown --device"):
        dev.resolve_device(name)


def test_fp16_on_cpu_is_bad_input():
    with pytest.raises(BadInput, match="fp16 needs a CUDA GPU"):
        dev.resolve_precision("fp16", torch.device("cpu"))


def test_unknown_precision_is_bad_input():
    with pytest.raises(BadInput, match="unknown --precision"):
        dev.resolve_precision("int8", torch.device("cpu"))


def test_explicit_precisions_on_cpu():
    cpu = torch.device("cpu")
    assert dev.resolve_precision("fp32", cpu) is None
    assert dev.resolve_precision("bf16", cpu) is torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native)
    expected = torch.bfloat16 if native else None
    assert dev.resolve_precision("auto", torch.device("cpu")) is expected


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="Linux only")
def test_auto_precision_on_this_cpu_matches_its_flags():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = f.read()
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    assert dev.cpu_has_native_bf16() is native
    expected = torch.bfloat16 if native else None
    assert dev.resolve_precision("auto", torch.device("cpu")) is expected


def test_autocast_context_changes_matmul_dtype_only_when_asked():
    cpu = torch.device("cpu")
    a = torch.randn(4, 4)
    with dev.autocast(cpu, None):
        assert (a @ a).dtype == torch.float32
    with dev.autocast(cpu, torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16


def test_grad_scaler_only_for_fp16_on_cuda():
    assert dev.needs_grad_scaler(torch.device("cuda"), torch.float16)
    assert not dev.needs_grad_scaler(torch.device("cuda"), torch.bfloat16)
    assert not dev.needs_grad_scaler(torch.device("cpu"), torch.bfloat16)
    assert not dev.needs_grad_scaler(torch.device("cpu"), None)
