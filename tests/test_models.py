"""Model behaviour on tiny configs: causality, heads, tying, dropout, saving, groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model

from lmtool.errors import BadInput
from lmtool.models import ModelConfig, build_model, parameter_groups
from lmtool.models.transformer import gelu_small

V = 37  # a vocabulary no layer width divides, so shape mistakes show


def tiny(arch="transformer", objective="causal", **overrides) -> ModelConfig:
    values = dict(arch=arch, objective=objective, vocab_size=V, context=12, layers=2,
                  heads=2, dim=16, hidden=24, dropout=0.0)
    return ModelConfig(**{**values, **overrides})


def make(config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(config)


def ids(batch=3, length=10, seed=1) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


CAUSAL = [
    tiny(positions="learned"),
    tiny(positions="rotary"),
    tiny(tie_embeddings=False),
    tiny("lstm", dropout=1.0),
]


@pytest.mark.parametrize("config", CAUSAL, ids=["learned", "rotary", "untied", "lstm"])
def test_causal_models_never_see_the_future(config):
    model = make(config).eval()
    x = ids()
    changed = x.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % V  # alter tokens 6..9 only
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert a.shape == (3, 10, V)
    torch.testing.assert_close(a[:, :6], b[:, :6])  # the past is untouched
    assert not torch.allclose(a[:, 6:], b[:, 6:])  # and the changed positions did change


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_masked_transformer_reads_both_ways(positions):
    model = make(tiny(objective="masked", positions=positions)).eval()
    x = ids()
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V  # alter the last token only
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert a.shape == (3, 10, V)
    assert not torch.allclose(a[:, 0], b[:, 0])  # the first position saw the change


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_encode_then_head_is_the_forward(objective):
    model = make(tiny(objective=objective)).eval()
    x = ids()
    with torch.no_grad():
        hidden = model.encode(x)
        assert hidden.shape == (3, 10, 16)
        torch.testing.assert_close(model.lm_head(hidden), model(x))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_positions_reach_the_attention(positions):
    """Without positions a bidirectional encoder is blind to order: swapping two tokens
    would leave position 0's logits unchanged. With them, it changes."""
    model = make(tiny(objective="masked", positions=positions)).eval()
    x = ids(batch=1)
    swapped = x.clone()
    swapped[0, [2, 3]] = x[0, [3, 2]]
    assert x[0, 2] != x[0, 3]
    with torch.no_grad():
        assert not torch.allclose(model(x)[0, 0], model(swapped)[0, 0])


@pytest.mark.parametrize(
    ("config", "embedding", "head"),
    [
        (tiny(), "tok_emb", lambda m: m.lm_head),
        (tiny(objective="masked"), "tok_emb", lambda m: m.lm_head.decoder),
        (tiny("lstm"), "embedding", lambda m: m.lm_head),
    ],
    ids=["causal", "masked", "lstm"],
)
def test_tied_weights_are_one_tensor_counted_once(config, embedding, head):
    tied = make(config)
    assert head(tied).weight is getattr(tied, embedding).weight
    untied = make(tiny(**{**config.to_dict(), "tie_embeddings": False}))
    assert head(untied).weight is not getattr(untied, embedding).weight
    assert untied.num_parameters() - tied.num_parameters() == V * 16
    assert tied.num_parameters() == sum(p.numel() for p in set(tied.parameters()))


def test_context_longer_than_configured_is_refused():
    model = make(tiny())
    model(ids(length=12))  # exactly the context is fine
    with pytest.raises(BadInput, match="longer than the model's context of 12"):
        model(ids(length=13))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_transformer_dropout_is_active_only_in_training(positions):
    model = make(tiny(dropout=0.3, positions=positions))
    x = ids()
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_lstm_dropouts_are_active_only_in_training():
    model = make(tiny("lstm", dropout=1.0))
    x = ids()
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_lstm_weight_dropout_is_resampled_and_trains_the_raw_weight():
    # Only weight dropout on: any difference between two forwards comes from it.
    config = tiny("lstm", dropout=1.0, embed_dropout=0.0, input_dropout=0.0,
                  hidden_dropout=0.0, output_dropout=0.0, weight_dropout=0.5)
    model = make(config).train()
    x = ids()
    a, b = model(x), model(x)
    assert not torch.equal(a, b)
    a.sum().backward()
    layer = model.rnns[0]
    assert layer.weight_hh_raw.grad is not None and layer.weight_hh_raw.grad.abs().sum() > 0
    # The dropped matrix is not kept between calls and is not a parameter of the LSTM.
    assert layer.lstm.weight_hh_l0 is None
    assert "weight_hh_l0" not in dict(layer.lstm.named_parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_lstm_without_dropout_is_deterministic_in_training():
    model = make(tiny("lstm", dropout=0.0)).train()
    x = ids()
    assert torch.equal(model(x), model(x))


def test_lstm_dropout_multiplier_too_large_is_refused():
    with pytest.raises(BadInput, match="--dropout"):
        build_model(tiny("lstm", dropout=5.0))  # 5 x weight_dropout 0.2 = 1


@pytest.mark.parametrize(
    "config",
    [tiny(), tiny(objective="masked", positions="rotary"), tiny("lstm", dropout=1.0)],
    ids=["causal", "masked-rotary", "lstm"],
)
def test_safetensors_round_trip_gives_identical_logits(config, tmp_path):
    model = make(config, seed=0)
    # Train one step so no weight is still at its initial value.
    model.train()
    model(ids()).logsumexp(-1).mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))
    loaded = make(config, seed=123)  # different initial weights
    load_model(loaded, str(path))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(ids()), loaded(ids()))
    if config.tie_embeddings:  # loading kept the tie
        head = loaded.lm_head.decoder if config.objective == "masked" else loaded.lm_head
        emb = loaded.embedding if config.arch == "lstm" else loaded.tok_emb
        assert head.weight is emb.weight


def test_lstm_weights_file_holds_the_raw_hidden_matrix():
    keys = make(tiny("lstm", dropout=1.0)).state_dict().keys()
    assert "rnns.0.weight_hh_raw" in keys
    assert not any(k.endswith("weight_hh_l0") for k in keys)


@pytest.mark.parametrize(
    "config",
    [tiny(), tiny(positions="rotary", tie_embeddings=False), tiny(objective="masked"),
     tiny("lstm")],
    ids=["causal", "rotary-untied", "masked", "lstm"],
)
def test_layer_groups_cover_every_parameter_exactly_once(config):
    model = make(config)
    groups = parameter_groups(model)
    assert len(groups) == config.layers + 2  # embeddings, one per layer, head
    flat = [id(p) for group in groups for p in group]
    assert len(flat) == len(set(flat))  # no parameter twice
    assert set(flat) == {id(p) for p in model.parameters()}  # none forgotten
    assert all(groups)  # no empty group
    embedding = model.embedding if config.arch == "lstm" else model.tok_emb
    assert any(p is embedding.weight for p in groups[0])  # a tied weight sits at the bottom


@pytest.mark.parametrize("layers,sizes", [(6, [1] * 6), (7, [1, 1, 2, 1, 1, 1]),
                                          (12, [2] * 6), (30, [5] * 6)])
def test_deep_transformers_merge_blocks_into_six_groups(layers, sizes):
    model = make(tiny(layers=layers, dim=8, heads=1, hidden=8))
    groups = model.layer_groups()
    assert [len(g) for g in groups[1:-1]] == sizes  # contiguous runs of blocks
    assert [b for g in groups[1:-1] for b in g] == list(model.blocks)  # in order, each once


def test_build_model_needs_a_vocabulary():
    with pytest.raises(BadInput, match="vocab_size"):
        build_model(tiny(vocab_size=0))


def test_causal_transformer_matches_hf_gpt2_on_copied_weights():
    """Same architecture as GPT-2 (with exact GELU and zero biases): copy our weights into
    transformers' GPT2LMHeadModel and the logits agree."""
    import transformers  # a dev dependency: this test runs wherever the suite does

    config = tiny(positions="learned")
    ours = make(config).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=V, n_positions=config.context, n_embd=config.dim, n_layer=config.layers,
        n_head=config.heads, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5,
    )).eval()
    with torch.no_grad():
        for p in ours.parameters():  # move LayerNorms off their (1, 0) start, too
            p.add_(0.1 * torch.randn_like(p))
        for p in hf.parameters():
            p.zero_()  # GPT-2's biases stay zero: our linears have none
        hf.transformer.wte.weight.copy_(ours.tok_emb.weight)
        hf.transformer.wpe.weight.copy_(ours.pos_emb.weight)
        for mine, theirs in zip(ours.blocks, hf.transformer.h, strict=True):
            # GPT-2's Conv1D stores (in, out): our (out, in) weights transposed.
            theirs.attn.c_attn.weight.copy_(mine.attn.qkv.weight.T)
            theirs.attn.c_proj.weight.copy_(mine.attn.proj.weight.T)
            theirs.mlp.c_fc.weight.copy_(mine.mlp.fc.weight.T)
            theirs.mlp.c_proj.weight.copy_(mine.mlp.proj.weight.T)
            for a, b in ((mine.ln1, theirs.ln_1), (mine.ln2, theirs.ln_2)):
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
        hf.transformer.ln_f.weight.copy_(ours.ln_f.weight)
        hf.transformer.ln_f.bias.copy_(ours.ln_f.bias)
        x = ids()
        torch.testing.assert_close(hf(input_ids=x).logits, ours(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "config",
    [tiny(), tiny(objective="masked", positions="rotary"), tiny("lstm", dropout=0.0)],
    ids=["causal", "masked-rotary", "lstm"],
)
def test_bf16_autocast_on_cpu_trains_and_stays_close_to_fp32(config):
    model = make(config).eval()
    x = ids()
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16  # the matmuls did run in bf16
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.05)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_without_native_bf16_the_lstm_recurrence_runs_in_fp32_under_autocast(monkeypatch):
    """oneDNN cannot build its bf16 LSTM kernel on a CPU with neither AVX512-BF16 nor AMX
    (under autocast it raised there): the recurrence then runs in fp32, exactly as
    without autocast, while the rest of the model keeps bf16."""
    import lmtool.models.lstm as lstm
    import lmtool.models.lstm_precision as lstm_precision

    monkeypatch.setattr(lstm_precision, "cpu_has_bf16_lstm", lambda: False)
    torch.manual_seed(0)
    layer = lstm.WeightDroppedLSTM(8, 16, weight_p=0.0)
    x = torch.randn(2, 5, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = layer(x)
    assert out.dtype == h.dtype == c.dtype == torch.float32
    torch.testing.assert_close(out, layer(x.float())[0])
    model = make(tiny("lstm", dropout=0.0)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(ids()).dtype == torch.bfloat16  # the softmax's matmul still in bf16


def test_rotary_scores_depend_only_on_the_offset_and_keep_norms():
    """RoPE's defining property: <rot(q, m), rot(k, n)> is a function of m - n."""
    from lmtool.models.transformer import apply_rotary, rotary_tables

    torch.manual_seed(0)
    cos, sin = rotary_tables(head_size=8, context=32)  # (32, 8) each
    q, k = torch.randn(8), torch.randn(8)

    def rotated(x, position):
        return apply_rotary(x.expand(32, 8), cos, sin)[position]  # (8,)

    def score(m, n):
        return float(rotated(q, m) @ rotated(k, n))

    assert score(5, 2) == pytest.approx(score(20, 17), abs=1e-5)
    assert score(9, 9) == pytest.approx(score(0, 0), abs=1e-5)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)  # position 0 turns by 0
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)  # but the offset matters
    assert float(rotated(q, 13).norm()) == pytest.approx(float(q.norm()), rel=1e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("size", [7, 1536, 20_000])
def test_decoding_gelu_is_gelu_and_leaves_onednn_on(approximate, size):
    """A decoding step's GELU skips oneDNN's kernel for a few rows (a fixed cost a call):
    the same values either way, and oneDNN stays on for everything else, even when the
    call fails."""
    h = torch.randn(1, 1, size)
    torch.testing.assert_close(gelu_small(h, approximate), F.gelu(h, approximate=approximate))
    assert torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError):
        gelu_small(h, "cubic")  # not an approximation F.gelu knows
    assert torch.backends.mkldnn.enabled
