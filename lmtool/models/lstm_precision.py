"""nn.LSTM under CPU bf16 autocast, on any CPU.

Under bf16 autocast on a CPU, nn.LSTM runs oneDNN's bf16 kernel, which a CPU with
neither AVX512-BF16 nor AMX cannot build ("could not create a primitive descriptor for
the LSTM forward propagation primitive"). There the recurrence runs in fp32, outside
autocast, while the rest of the model keeps bf16; everywhere else nothing changes.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence


@functools.cache
def cpu_has_bf16_lstm() -> bool:
    """Can oneDNN run nn.LSTM in bf16 on this CPU?"""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def run_lstm(lstm: nn.LSTM, x: torch.Tensor | PackedSequence,
             hc: tuple[torch.Tensor, torch.Tensor] | None = None):
    """lstm(x, hc), in fp32 where CPU autocast would ask for a bf16 kernel that cannot
    be built here."""
    device = (x.data if isinstance(x, PackedSequence) else x).device
    if device.type != "cpu" or not torch.is_autocast_enabled("cpu") or cpu_has_bf16_lstm():
        return lstm(x, hc)
    with torch.autocast("cpu", enabled=False):
        return lstm(x.float(), None if hc is None else (hc[0].float(), hc[1].float()))
