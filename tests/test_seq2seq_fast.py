"""The encoder–decoders' fast paths against the plain arithmetic they replace: the
fused, label-smoothed loss against F.cross_entropy on the logits; the Transformer
decoder's per-token `step` against its teacher-forced forward; the Bahdanau decoder's
training forward against nn.LSTM called one step at a time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmtool.models import build_seq2seq
from lmtool.models.seq2seq import pad_rows
from lmtool.models.seq2seq_config import resolve_seq2seq_config
from lmtool.training import objectives
from lmtool.training.objectives import IGNORE, Seq2SeqBatch, Seq2SeqObjective

V = 29
ARCHS = [("transformer", None), ("lstm", "none"), ("lstm", "bahdanau")]
ARCH_IDS = ["transformer", "lstm-none", "lstm-bahdanau"]
SOURCES = [[8, 9, 10, 3], [11, 12, 3], [13, 7, 7, 8, 9, 3]]


def tiny(arch: str, attention: str | None, dropout: float = 0.0, layers: int = 2):
    values = dict(vocab_size=V, layers=layers, dim=16, heads=2, hidden=24, context=16,
                  dropout=dropout)
    if attention:
        values["attention"] = attention
    config = resolve_seq2seq_config(arch, "tiny", values)
    config.vocab_size = V
    torch.manual_seed(0)
    return build_seq2seq(config)


def a_batch() -> Seq2SeqBatch:
    source, mask = pad_rows(SOURCES)
    inputs = torch.tensor([[2, 13, 14, 8, 9], [2, 7, 8, 0, 0], [2, 9, 10, 11, 12]])
    targets = torch.tensor([[13, 14, 8, 9, 3], [7, 8, 3, IGNORE, IGNORE], [9, 10, 11, 12, 3]])
    return Seq2SeqBatch(source, mask, inputs, targets)


@pytest.mark.parametrize(("arch", "attention"), ARCHS, ids=ARCH_IDS)
def test_the_objective_trains_as_smoothed_cross_entropy_on_the_logits(monkeypatch, arch,
                                                                        attention):
    """Same loss and gradients (dropout on, the same masks, seeded), padding left out."""
    calls = []
    real = objectives.linear_cross_entropy

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(objectives, "linear_cross_entropy", spy)
    model = tiny(arch, attention, dropout=0.3).train()
    batch = a_batch()

    def fused():
        torch.manual_seed(5)
        return Seq2SeqObjective(0.1).loss(model, batch)[0]

    def from_logits():
        torch.manual_seed(5)
        logits = model(batch.source, batch.source_mask, batch.inputs)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(),
                               ignore_index=IGNORE, label_smoothing=0.1)

    results = []
    for fn in (fused, from_logits):
        model.zero_grad()
        loss = fn()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (got, got_grads), (want, want_grads) = results
    assert calls == [(13, 16)]  # the fused path, on the 13 scored positions
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
