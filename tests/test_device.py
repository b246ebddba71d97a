"""Device and precision choice. This machine (and CI) has no GPU."""

from __future__ import annotations

import json

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


SAPPHIRE_RAPIDS = dev.CpuFacts("Intel(R) Xeon(R) Platinum 8488C", amx=True, avx512_bf16=True)
ZEN4 = dev.CpuFacts("AMD EPYC 9R14", amx=False, avx512_bf16=True)
SKYLAKE = dev.CpuFacts("Intel(R) Xeon(R) Gold 6148", amx=False, avx512_bf16=False)


def never_measured():
    raise AssertionError("the flags decide here: nothing should be measured")


@pytest.mark.parametrize("facts, bf16", [(SAPPHIRE_RAPIDS, True), (SKYLAKE, False)])
def test_the_flags_decide_on_amx_and_on_cpus_without_native_bf16(facts, bf16):
    assert dev.choose_cpu_bf16(facts, never_measured)[0] is bf16


@pytest.mark.parametrize("speedup, bf16", [(1.6, True), (1.1, True), (1.05, False),
                                           (0.5, False), (None, False)])
def test_avx512_bf16_without_amx_goes_by_the_measurement(speedup, bf16):
    chosen, why = dev.choose_cpu_bf16(ZEN4, lambda: speedup)
    assert chosen is bf16
    assert (f"{speedup:.2f}x" in why) if speedup else "not measured" in why


def test_cpuinfo_parsing():
    text = ("processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
            "flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n\n"
            "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu\n")
    assert dev.parse_cpuinfo(text) == ZEN4
    amx = dev.parse_cpuinfo("model name : X\nflags : avx512_bf16 amx_tile amx_bf16\n")
    assert amx.amx and amx.avx512_bf16
    assert dev.parse_cpuinfo("model name : Y\nflags : sse2 avx2\n") == dev.CpuFacts(
        "Y", False, False)


@pytest.mark.parametrize("flags, kind", [
    ("avx512_bf16 amx_tile amx_bf16", "AMX"),
    ("avx512f avx512_bf16", "AVX512-BF16 (no AMX)"),
    ("sse2 avx2 avx512f", "neither AMX nor AVX512-BF16"),
])
def test_describe_cpu_names_the_bf16_hardware(flags, kind):
    facts = dev.parse_cpuinfo(f"model name\t: Some CPU 9000\nflags\t\t: {flags}\n")
    assert dev.describe_cpu(facts) == f"Some CPU 9000: {kind}"


def test_describe_cpu_defaults_to_this_machine(monkeypatch):
    monkeypatch.setattr(dev, "cpu_facts", lambda: SKYLAKE)
    assert dev.describe_cpu() == "Intel(R) Xeon(R) Gold 6148: neither AMX nor AVX512-BF16"


@pytest.fixture
def zen4(monkeypatch):
    """This process sees an AVX512-BF16 CPU without AMX, with no measurement cached, and
    a measurement that returns what the test puts in `zen4["speedup"]`, counting calls."""
    calls = {"speedup": 1.0, "count": 0}

    def measure():
        calls["count"] += 1
        return calls["speedup"]

    monkeypatch.setattr(dev, "cpu_facts", lambda: ZEN4)
    monkeypatch.setattr(dev, "measure_bf16_speedup", measure)
    dev.cache_path().unlink(missing_ok=True)
    return calls


@pytest.mark.parametrize("speedup, expected", [(1.5, torch.bfloat16), (0.55, None)])
def test_auto_precision_measures_once_and_caches_per_machine(zen4, speedup, expected):
    cpu = torch.device("cpu")
    zen4["speedup"] = speedup
    assert dev.resolve_precision("auto", cpu) is expected
    assert dev.resolve_precision("auto", cpu) is expected
    assert zen4["count"] == 1  # the second run read the cache
    cached = json.loads(dev.cache_path().read_text())
    assert cached[dev.machine_key()]["bf16_speedup"] == speedup
    assert "AMD EPYC 9R14" in dev.machine_key() and torch.__version__ in dev.machine_key()
    assert f"{speedup:.2f}x" in dev.describe_precision("auto", cpu)
    # Explicit choices never measure.
    assert dev.resolve_precision("fp32", cpu) is None
    assert dev.resolve_precision("bf16", cpu) is torch.bfloat16
    assert zen4["count"] == 1


def test_another_machine_or_torch_measures_again(zen4, monkeypatch):
    cpu = torch.device("cpu")
    dev.resolve_precision("auto", cpu)
    monkeypatch.setattr(dev, "machine_key", lambda: "another CPU | torch 9.9 | 2 threads")
    zen4["speedup"] = 2.0
    assert dev.resolve_precision("auto", cpu) is torch.bfloat16
    assert zen4["count"] == 2
    assert len(json.loads(dev.cache_path().read_text())) == 2  # both machines kept


def test_a_damaged_or_unwritable_cache_only_means_measuring_again(zen4, monkeypatch, tmp_path):
    cpu = torch.device("cpu")
    dev.cache_path().parent.mkdir(parents=True, exist_ok=True)
    dev.cache_path().write_text("{not json")
    zen4["speedup"] = 1.5
    assert dev.resolve_precision("auto", cpu) is torch.bfloat16
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LMTOOL_CACHE", str(blocker / "cache"))  # its parent is a file
    assert dev.resolve_precision("auto", cpu) is torch.bfloat16
    assert zen4["count"] == 2


def test_ranks_under_torchrun_never_measure(zen4, monkeypatch):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    zen4["speedup"] = 3.0
    assert dev.resolve_precision("auto", torch.device("cpu")) is None
    assert zen4["count"] == 0
    dev.remember_bf16_speedup(3.0)  # measured earlier by a single process: all ranks agree
    assert dev.resolve_precision("auto", torch.device("cpu")) is torch.bfloat16


def scripted_clock(durations):
    """A clock under which the i-th timed step lasts durations[i] seconds (each step
    reads the clock when it starts and when it ends)."""
    def ticks():
        now = 0.0
        for d in durations:
            yield now
            now += d
            yield now
    return ticks().__next__


@pytest.mark.parametrize("fp32, bf16, ratio", [
    ([3.0, 2.0, 4.0], [1.0, 5.0, 1.6], 2.0),  # each takes its best: 2.0 / 1.0
    ([1.0, 1.2, 0.9], [2.0, 1.8, 3.6], 0.5),  # bf16 half as fast
])
def test_the_measurement_compares_best_times_after_two_warm_up_rounds(fp32, bf16, ratio):
    """The real step runs in both precisions, alternating; warm-up rounds (here slow, and
    bf16's very fast, which would otherwise win) do not count, nor a slow outlier."""
    warm_up = [50.0, 0.01, 50.0, 0.01]  # (fp32, bf16) x 2
    rounds = [t for pair in zip(fp32, bf16, strict=True) for t in pair]
    clock = scripted_clock(warm_up + rounds)
    assert dev.measure_bf16_speedup(repeats=len(fp32), clock=clock) == pytest.approx(ratio)


@pytest.mark.parametrize("speedup, expected", [(0.5, None), (1.3, torch.bfloat16)])
def test_a_measured_speedup_decides_and_is_cached_for_the_next_run(zen4, speedup, expected):
    cpu = torch.device("cpu")
    zen4["speedup"] = speedup
    assert dev.resolve_precision("auto", cpu) is expected
    assert dev.cached_bf16_speedup() == speedup  # from the cache: not measured again
    assert zen4["count"] == 1
    why = dev.describe_precision("auto", cpu)
    assert why.startswith("bf16" if expected else "fp32") and f"{speedup:.2f}x" in why


@pytest.mark.parametrize("supported, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_on_cuda_follows_the_gpus_bf16_support_and_never_measures(
        zen4, monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert dev.resolve_precision("auto", torch.device("cuda")) is expected
    assert dev.resolve_precision("fp32", torch.device("cuda")) is None
    assert zen4["count"] == 0


def test_auto_on_mps_is_fp32_and_never_measures(zen4):
    assert dev.resolve_precision("auto", torch.device("mps")) is None
    assert zen4["count"] == 0


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
