"""Published checkpoints in lmtool's one Transformer: tiny random GPT-2, Llama and BERT
models made with transformers in the test give the same logits once imported."""

from __future__ import annotations

import pytest
import torch

from lmtool.errors import BadInput
from lmtool.hub.source import build_pretrained, read_hf_dir

transformers = pytest.importorskip("transformers")

V, T = 61, 12


def tiny_tokenizer_json(vocab_size: int = V) -> str:
    """A word-level tokenizer.json over `vocab_size` made-up words (w0 ... wN)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


def save_hf(model, folder, tokenizer: bool = True):
    model.save_pretrained(folder)
    if tokenizer:
        (folder / "tokenizer.json").write_text(tiny_tokenizer_json(model.config.vocab_size))
    return folder


def gpt2(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=V,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def llama(tmp_path, tied: bool):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=V, max_position_embeddings=32,
        tie_word_embeddings=tied, rope_theta=5000.0, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(config)
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def bert(tmp_path, head: bool = True):
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, intermediate_size=48,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     vocab_size=V, max_position_embeddings=16)
    cls = transformers.BertForMaskedLM if head else transformers.BertModel
    model = cls(config)
    with torch.no_grad():  # random LayerNorm and bias values, so a lost one shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.normal_(0.5 if name.endswith("weight") else 0.0, 0.2)
    return model


def hf_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def ours(folder):
    return build_pretrained(read_hf_dir(folder))


@pytest.mark.parametrize("make", [
    pytest.param(gpt2, id="gpt2"),
    pytest.param(lambda p: llama(p, tied=False), id="llama-untied-gqa"),
    pytest.param(lambda p: llama(p, tied=True), id="llama-tied-gqa"),
    pytest.param(bert, id="bert-mlm"),
])
def test_imported_model_gives_transformers_logits(tmp_path, make):
    hf = make(tmp_path).eval()
    folder = save_hf(hf, tmp_path / "hf")
    model = ours(folder)
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(ids)
    want = hf_logits(hf, ids)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_bert_without_mlm_head_gives_transformers_hidden_states(tmp_path):
    hf = bert(tmp_path, head=False).eval()
    folder = save_hf(hf, tmp_path / "hf")
    pretrained = read_hf_dir(folder)
    assert pretrained.new_head
    model = build_pretrained(pretrained)
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(ids).last_hidden_state
        got = model.encode(ids)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("tied", [False, True])
def test_cached_generation_equals_uncached_on_an_imported_llama(tmp_path, tied):
    folder = save_hf(llama(tmp_path, tied), tmp_path / "hf")
    model = ours(folder)
    ids = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        state = model.initial_state(1)
        logits = model(ids, state=state)[:, -1]  # (1, V): the prompt in one chunk
        tokens = ids
        for _ in range(8):  # greedy, one token at a time through the cache
            nxt = logits.argmax(-1, keepdim=True)  # (1, 1)
            tokens = torch.cat([tokens, nxt], dim=1)
            logits = model(nxt, state=state)[:, -1]
            full = model(tokens)[:, -1]  # the whole sequence, no cache
            torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)


def test_cached_generation_equals_uncached_on_an_imported_gpt2(tmp_path):
    model = ours(save_hf(gpt2(tmp_path), tmp_path / "hf"))
    ids = torch.randint(0, V, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        state = model.initial_state(2)
        first = model(ids[:, :4], state=state)
        rest = torch.cat([model(ids[:, t : t + 1], state=state) for t in range(4, 10)], 1)
        torch.testing.assert_close(torch.cat([first, rest], 1), model(ids), atol=1e-5, rtol=0)


def test_pickled_weights_are_refused_without_being_read(tmp_path):
    folder = save_hf(gpt2(tmp_path), tmp_path / "hf")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(BadInput, match="pickled weights.*convert"):
        read_hf_dir(folder)


def test_unsupported_architecture_is_named(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=4, intermediate_size=64,
                                        vocab_size=V)
    folder = save_hf(transformers.GPTNeoXForCausalLM(config), tmp_path / "hf")
    with pytest.raises(BadInput, match="GPTNeoXForCausalLM is not supported") as e:
        read_hf_dir(folder)
    assert "LlamaForCausalLM" in e.value.hint


def test_missing_tokenizer_is_refused(tmp_path):
    folder = save_hf(gpt2(tmp_path), tmp_path / "hf", tokenizer=False)
    with pytest.raises(BadInput, match="no tokenizer.json"):
        read_hf_dir(folder)


def test_config_contradicting_tensors_is_refused(tmp_path):
    import json

    folder = save_hf(gpt2(tmp_path), tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    config["n_inner"] = 64  # the weights have 4 * 32 = 128
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match="contradicts its tensors: blocks.0.mlp.fc.weight"):
        build_pretrained(read_hf_dir(folder))


def test_sharded_safetensors_import_as_one(tmp_path):
    hf = llama(tmp_path, tied=False).eval()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    (tmp_path / "hf" / "tokenizer.json").write_text(tiny_tokenizer_json())
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
    model = ours(tmp_path / "hf")
    ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf_logits(hf, ids), atol=1e-4, rtol=0)


def test_a_config_file_can_ask_for_a_llama_shaped_model(tmp_path):
    import json

    from lmtool.models import build_model
    from lmtool.training.flags import TrainFlags, resolve_configs

    path = tmp_path / "llama.json"
    path.write_text(json.dumps({"norm": "rmsnorm", "mlp": "swiglu", "kv_heads": 2,
                                "rope_theta": 500000.0, "mlp_width": 200}))
    model_config, _, _ = resolve_configs(objective="causal", arch="transformer", preset="tiny",
                                         flags=TrainFlags(), config_file=path, vocab_size=50)
    model = build_model(model_config)
    assert isinstance(model.blocks[0].ln1, torch.nn.RMSNorm)
    assert model.blocks[0].attn.qkv.weight.shape == ((4 + 2 * 2) * 32, 128)
    assert model.blocks[0].mlp.fc.weight.shape == (400, 128)
    path.write_text(json.dumps({"kv_heads": 3}))
    with pytest.raises(BadInput, match="kv_heads"):
        resolve_configs(objective="causal", arch="transformer", preset="tiny",
                        flags=TrainFlags(), config_file=path, vocab_size=50)
