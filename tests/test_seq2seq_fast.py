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


def bahdanau_reference(model, source, mask, target) -> torch.Tensor:
    """The decoder as first written: nn.LSTM called on one (B, 1, E + 2N) step at a time."""
    state = model.remember(source, mask)
    rows = state.sources | state.rows
    x = model.drop(model.tok_emb(target))  # (B, T, E)
    h = rows["h"].transpose(0, 1).contiguous()  # (L, B, N)
    c = rows["c"].transpose(0, 1).contiguous()
    steps = []
    for t in range(x.size(1)):
        context, _ = model.attention(h[-1], rows["keys"], rows["memory"], rows["mask"])
        out, (h, c) = model.decoder(torch.cat([x[:, t], context], -1)[:, None], (h, c))
        steps.append(torch.cat([out[:, 0], context], -1))  # (B, 3N)
    return model.lm_head(model.drop(torch.tanh(model.readout(torch.stack(steps, 1)))))


@pytest.mark.parametrize("layers", [1, 3])
def test_bahdanau_forward_and_gradients_equal_nn_lstm_step_by_step(layers):
    model = tiny("lstm", "bahdanau", layers=layers).train()  # dropout 0: deterministic
    batch = a_batch()
    results = []
    for fn in (model, lambda *a: bahdanau_reference(model, *a)):
        model.zero_grad()
        logits = fn(batch.source, batch.source_mask, batch.inputs)  # (B, T, V)
        (logits * torch.linspace(-1, 1, V)).sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (got, got_grads), (want, want_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bahdanau_dropout_between_layers_is_nn_lstms():
    """With dropout on, the fast decoder drops between its layers as nn.LSTM does: at
    rate 1 every layer above the first sees zeros, so the top layer's output is the
    same whatever the context."""
    model = tiny("lstm", "bahdanau", dropout=0.0, layers=2).train()
    model.decoder.dropout = 1.0
    batch = a_batch()
    state = model.remember(batch.source, batch.source_mask)
    x = model.tok_emb(batch.inputs)  # (B, T, E)
    hc = (state.rows["h"].transpose(0, 1), state.rows["c"].transpose(0, 1))
    features, _ = model.attend_steps(x, hc, state.sources, None)  # (B, T, 3N)
    top = features[..., :24]  # (B, T, N): s_t
    h, c = hc[0][1], hc[1][1]  # (B, N) each: layer 1's start
    zeros = torch.zeros_like(h)
    w = model.decoder
    for t in range(x.size(1)):  # layer 1 alone, fed zeros
        h, c = torch._VF.lstm_cell(zeros, (h, c), w.weight_ih_l1, w.weight_hh_l1,
                                   w.bias_ih_l1, w.bias_hh_l1)
        torch.testing.assert_close(top[:, t], h)


def test_transformer_decodes_token_by_token_through_the_lean_step(monkeypatch):
    """Cached decoding goes through the blocks' `step` (no module forward) and gives the
    teacher-forced forward's logits, position by position."""
    from lmtool.models.seq2seq_transformer import CrossAttention, DecoderBlock

    model = tiny("transformer", None).eval()
    source, mask = pad_rows(SOURCES)
    target = a_batch().inputs  # (B, T)
    with torch.no_grad():
        whole = model(source, mask, target)  # (B, T, V)
        forwards = []
        for cls in (DecoderBlock, CrossAttention):
            monkeypatch.setattr(cls, "forward", lambda *a, **k: forwards.append(a))
        state, hidden = model.start(SOURCES, capacity=8)
        steps = [model.lm_head(hidden)]
        for t in range(1, target.size(1)):
            steps.append(model.lm_head(model.decode(target[:, t : t + 1], state)[:, -1]))
    assert forwards == []
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("arch", "attention"), ARCHS, ids=ARCH_IDS)
def test_beams_share_their_source_and_decode_as_rows_of_their_own(arch, attention):
    """Rows selected in runs of one source each (a beam search's K beams) share the
    per-source tensors, uncopied, and attend to them together; they decode exactly as
    the same rows in another order, each with its own copy of its source's tensors."""
    model = tiny(arch, attention).eval()
    with torch.no_grad():
        state, _ = model.start(SOURCES, capacity=8)
        grouped = state.select(torch.tensor([0, 0, 1, 1, 2, 2]))  # 2 beams per source
        pos = torch.tensor([2, 0, 4, 3, 1, 5])  # the same rows shuffled: no runs
        apart = state.select(torch.tensor([0, 0, 1, 1, 2, 2])[pos])
        assert grouped.group == 2 and apart.group == 1
        assert all(grouped.sources[k] is state.sources[k] for k in state.sources)
        tokens = torch.tensor([7, 8, 9, 10, 11, 12])[:, None]  # (6, 1): beams diverge
        got = model.decode(tokens, grouped)  # (6, 1, C)
        want = model.decode(tokens[pos], apart)
        torch.testing.assert_close(got[pos], want, atol=1e-6, rtol=1e-5)
        reorder = torch.tensor([1, 0, 3, 3, 5, 4])  # beams swap and copy within sources
        grouped, apart = grouped.select(reorder), apart.select(pos.argsort()[reorder][pos])
        assert grouped.group == 2 and grouped.sources["mask"] is state.sources["mask"]
        got = model.decode(tokens, grouped)
        want = model.decode(tokens[pos], apart)
        torch.testing.assert_close(got[pos], want, atol=1e-6, rtol=1e-5)
