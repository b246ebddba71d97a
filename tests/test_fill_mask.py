"""fill-mask from Python: the planted answer ranks first; bad inputs are refused."""

from __future__ import annotations

import pytest
from gen_fixtures import planted_masked_lm, tiny_lm

from lmtool.errors import BadInput
from lmtool.inference import fill_mask


@pytest.fixture(scope="module")
def mlm():
    return planted_masked_lm()


def test_fill_mask_ranks_the_planted_answer_first(mlm):
    """The model learned that t20 is followed by t21 and t22 by t23: each context gets
    its own answer (a model that always said one token would fail one of them)."""
    a, b = fill_mask(mlm, ["t9 t20 [MASK] t12", "t15 t22 [MASK] t8 t9"], top_k=3)
    assert a.masks[0][0].token == "t21" and a.masks[0][0].probability > 0.3
    assert b.masks[0][0].token == "t23" and b.masks[0][0].probability > 0.3
    assert a.filled == "t9 t20 t21 t12"
    probabilities = [c.probability for c in a.masks[0]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1


def test_every_mask_gets_its_candidates(mlm):
    [fill] = fill_mask(mlm, "t20 [MASK] t9 t22 [MASK]", top_k=2)
    assert len(fill.masks) == 2 and all(len(c) == 2 for c in fill.masks)
    assert [c[0].token for c in fill.masks] == ["t21", "t23"]
    assert not any(c.token.startswith("[") for cs in fill.masks for c in cs)  # no specials
    data = fill.to_dict()
    assert set(data) == {"text", "filled", "masks"}


def test_bad_inputs_are_reported_or_raised(mlm):
    with pytest.raises(BadInput, match="no \\[MASK\\]"):
        fill_mask(mlm, "no mask here")
    errors = []
    out = fill_mask(mlm, ["t9 [MASK]", "nothing", "t20 [MASK]"],
                    on_error=lambda i, e: errors.append((i, e.message)))
    assert [f.index for f in out] == [0, 2]
    assert errors == [(1, "input 2 has no [MASK]")]
    with pytest.raises(BadInput, match="causal model: fill-mask needs a masked one"):
        fill_mask(tiny_lm(), "t9 [MASK]")


def test_a_mask_at_the_start_is_filled_without_a_leading_space(tmp_path):
    """A byte-level BPE model guesses " the" (a word with its space) for [MASK]: at the
    start of the text the space goes, elsewhere it stays."""
    import torch
    from torch import nn

    from lmtool.inference.runs import LoadedLM
    from lmtool.models import ModelConfig
    from lmtool.text.tokenizer import train_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat is here\nthe dog is there\n" * 20)
    tok = train_tokenizer([corpus], kind="bpe", vocab_size=300, min_frequency=1)
    the = tok.encode("x the").ids[-1]  # " the"
    V = tok.get_vocab_size()

    class AlwaysThe(nn.Module):
        config = ModelConfig(objective="masked", vocab_size=V, context=32)

        def forward(self, x, where=None):
            logits = torch.zeros(int(where.sum()), V)  # (masks, V)
            logits[:, the] = 10.0
            return logits

    lm = LoadedLM(AlwaysThe(), tok, torch.device("cpu"), torch.float32)
    start, middle = fill_mask(lm, ["[MASK] is here", "is [MASK] cat here"])
    assert start.filled == "the is here"
    assert middle.filled == "is the cat here"
    assert start.masks[0][0].token == "the"
