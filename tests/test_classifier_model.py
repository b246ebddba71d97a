"""The classifier model: concat pooling over real tokens, chunked/windowed reading, groups."""

from __future__ import annotations

import pytest
import torch

from lmtool.models import build_model
from lmtool.models.classifier import (
    Classifier,
    ClassifierConfig,
    concat_pool,
    document_ids,
    pad_batch,
)
from lmtool.models.config import ModelConfig
from lmtool.text.specials import SPECIAL_IDS

V = 40
BACKBONES = {
    "lstm": dict(arch="lstm", objective="causal", layers=2, dim=16, hidden=24, context=8),
    "causal": dict(arch="transformer", objective="causal", layers=2, heads=2, dim=16, context=8),
    "masked": dict(arch="transformer", objective="masked", layers=2, heads=2, dim=16, context=8),
    "backward": dict(arch="lstm", objective="causal", layers=2, dim=16, hidden=24, context=8,
                     backward=True),
}


def make(kind: str, seed: int = 0, **head) -> Classifier:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=V, dropout=0.0, **BACKBONES[kind])
    clf = Classifier(build_model(config), ClassifierConfig(labels=["a", "b", "c"], **head))
    clf.eval()
    # Batch norm with its initial running statistics is the identity; give it some.
    for bn in (m for m in clf.modules() if isinstance(m, torch.nn.BatchNorm1d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return clf


def docs(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(7, V, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_padding_takes_no_part(kind):
    """A document alone and the same document padded in a batch: the same logits."""
    clf = make(kind)
    rows = [ids for ids, _ in clf.encode_documents(docs([3, 20, 9, 0]))]
    with torch.no_grad():
        ids, lengths = pad_batch(rows)  # padded to 21 tokens: windows/chunks of 8
        batched = clf(ids, lengths)
        for i, row in enumerate(rows):
            alone = clf(*pad_batch([row]))
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_concat_pool_by_hand():
    hidden = torch.tensor([[[1.0, -1.0], [3.0, 0.0], [100.0, 100.0]],
                           [[2.0, 2.0], [-4.0, 5.0], [0.0, 1.0]]])  # (2, 3, 2)
    lengths = torch.tensor([2, 3])
    pooled = concat_pool(hidden, lengths)
    torch.testing.assert_close(pooled, torch.tensor([
        [3.0, 0.0, 3.0, 0.0, 2.0, -0.5],  # last real, max, mean: the 100s are padding
        [0.0, 1.0, 2.0, 5.0, -2 / 3, 8 / 3],
    ]))
    assert concat_pool(hidden, lengths, first=True)[:, :2].tolist() == [[1.0, -1.0], [2.0, 2.0]]


def test_lstm_chunked_reading_equals_reading_whole():
    """The LSTM reads 8 tokens at a time with its state carried: the hidden states of a
    50-token document are those of one pass over all of it."""
    clf = make("lstm")
    ids, lengths = pad_batch([ids for ids, _ in clf.encode_documents(docs([49, 30]))])
    with torch.no_grad():
        chunked = clf.read(ids, lengths)  # 7 chunks
        whole = clf.backbone.encode(ids)  # one call, from a zero state
    assert chunked.shape == (2, 50, 16)
    torch.testing.assert_close(chunked, whole)


def test_transformer_reads_windows_beyond_its_context():
    """A document longer than the context is read in windows, not cut: its last window
    changes the prediction, and the first window alone gives the same first states."""
    clf = make("causal")
    doc = docs([30])[0]
    ids, lengths = pad_batch([clf.encode_documents([doc])[0][0]])
    other = ids.clone()
    other[0, 25] = (other[0, 25] + 1 - 7) % (V - 7) + 7  # a different token in window 4
    with torch.no_grad():
        hidden = clf.read(ids, lengths)  # (1, 31, C)
        torch.testing.assert_close(hidden[:, :8], clf.backbone.encode(ids[:, :8]))
        torch.testing.assert_close(hidden[:, 24:31], clf.backbone.encode(ids[:, 24:31]))
        assert not torch.allclose(clf(ids, lengths), clf(other, lengths))


def test_document_ids():
    assert document_ids([10, 11, 12], backward=False, max_tokens=10) == (
        [SPECIAL_IDS.eos, 10, 11, 12], False)
    # Cut to the first max_tokens - 1 tokens, then reversed for a backward LM.
    assert document_ids([10, 11, 12], backward=True, max_tokens=3) == (
        [SPECIAL_IDS.eos, 11, 10], True)
    assert document_ids([], backward=False, max_tokens=3) == ([SPECIAL_IDS.eos], False)
    # Keeping the last tokens instead: the end of the document, then reversed.
    assert document_ids([10, 11, 12], backward=False, max_tokens=3, keep="last") == (
        [SPECIAL_IDS.eos, 11, 12], True)
    assert document_ids([10, 11, 12], backward=True, max_tokens=3, keep="last") == (
        [SPECIAL_IDS.eos, 12, 11], True)


@pytest.mark.parametrize("kind", ["lstm", "causal", "masked"])
def test_layer_groups(kind):
    clf = make(kind)
    groups = clf.layer_groups()
    # embedding, each layer, then the head: every parameter in exactly one group
    assert len(groups) == 2 + 2
    assert groups[0][0] is (clf.backbone.embedding if kind == "lstm" else clf.backbone.tok_emb)
    assert groups[-1][-1] is clf.head
    params = [p for g in groups for m in g for p in m.parameters()]
    assert len({id(p) for p in params}) == len(params) == len(list(clf.parameters()))
    # The LM head is gone: no vocabulary-sized output, no MLM transform.
    assert not any(p.shape[0] == V and p is not groups[0][0].weight for p in clf.parameters())


def test_needs_two_labels():
    from lmtool.errors import BadInput

    config = ModelConfig(vocab_size=V, **BACKBONES["lstm"])
    with pytest.raises(BadInput, match="two labels"):
        Classifier(build_model(config), ClassifierConfig(labels=["only"]))


def test_lstm_classifier_adds_ar_tar_of_real_outputs_in_training():
    """AR/TAR as fastai's classifier learner applies them (alpha 2, beta 1): computed by
    hand from the encoder's outputs of the real tokens, padding left out; none in eval
    mode, none for a Transformer."""
    clf = make("lstm")
    rows = [ids for ids, _ in clf.encode_documents(docs([5, 11]))]
    ids, lengths = pad_batch(rows)
    clf.train()
    torch.manual_seed(3)
    clf(ids, lengths)
    penalty = clf.take_penalty()
    assert clf.take_penalty() is None  # cleared once taken
    clf.backbone.train()
    torch.manual_seed(3)  # the same dropout masks: the same outputs
    hidden = clf.read(ids, lengths)
    ar = tar = 0.0
    for row, n in zip(hidden, lengths.tolist(), strict=True):
        real = row[:n]
        ar, tar = ar + real.pow(2).sum(), tar + (real[1:] - real[:-1]).pow(2).sum()
    width = hidden.size(-1)
    tokens, pairs = int(lengths.sum()), int((lengths - 1).sum())
    expected = 2.0 * ar / (tokens * width) + 1.0 * tar / (pairs * width)
    torch.testing.assert_close(penalty, expected, atol=1e-6, rtol=1e-5)
    clf.eval()
    clf(ids, lengths)
    assert clf.take_penalty() is None
    transformer = make("causal")
    transformer.train()
    transformer(ids, lengths)
    assert transformer.take_penalty() is None
