"""`lmtool import model.gguf`: a tiny Llama written with the gguf package in the test
(F16 and Q8_0) imports to the weights gguf dequantises, with its tokenizer rebuilt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from test_hf_cli import TEXTS, bpe_tokenizer  # noqa: E402

from lmtool.hub.gguf import permute, unpermute  # noqa: E402


def write_gguf(path, hf, tok, qtype):
    """`hf`'s weights in llama.cpp's layout: GGUF names, q/k rows permuted, the matrices
    in `qtype` (norms stay F32, as llama.cpp keeps them)."""
    c = hf.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(5000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    spec = json.loads(tok.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    merges = spec["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_token_types([3 if t in ("<unk>", "<s>", "</s>") else 1 for t, _ in vocab])
    w.add_bos_token_id(tok.token_to_id("<s>"))
    w.add_eos_token_id(tok.token_to_id("</s>"))
    w.add_add_bos_token(True)
    names = {"model.embed_tokens.weight": "token_embd.weight",
             "model.norm.weight": "output_norm.weight"}
    for i in range(c.num_hidden_layers):
        for hf_part, ours in (("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"),
                              ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                              ("self_attn.o_proj", "attn_output"),
                              ("post_attention_layernorm", "ffn_norm"),
                              ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                              ("mlp.down_proj", "ffn_down")):
            names[f"model.layers.{i}.{hf_part}.weight"] = f"blk.{i}.{ours}.weight"
    state = hf.state_dict()
    for hf_name, name in names.items():
        t = state[hf_name].detach()
        if name.endswith("attn_q.weight"):
            t = permute(t, c.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            t = permute(t, c.num_key_value_heads)
        a = t.numpy().astype(np.float32)
        if a.ndim == 1:
            w.add_tensor(name, a)
        elif qtype == "F16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dequantised(path) -> dict[str, torch.Tensor]:
    """Every tensor as gguf itself dequantises it, in HF's row order."""
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        out[t.name] = torch.from_numpy(a.reshape([int(n) for n in reversed(t.shape)]).copy())
    return out


def test_permute_and_unpermute_are_inverse():
    w = torch.arange(4 * 8 * 3, dtype=torch.float32).view(32, 3)
    assert torch.equal(unpermute(permute(w, 4), 4), w)
    assert not torch.equal(permute(w, 4), w)


@pytest.mark.parametrize("qtype", ["F16", "Q8_0"])
def test_gguf_imports_to_the_weights_gguf_dequantises(tmp_path, cli, qtype):
    from lmtool.checkpoint import load_checkpoint
    from lmtool.inference.generate import prepare
    from lmtool.inference.runs import load_lm

    tok = bpe_tokenizer(["<unk>", "<s>", "</s>"], "<s>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=tok.get_vocab_size(), max_position_embeddings=64,
        tie_word_embeddings=True, rope_theta=5000.0, rms_norm_eps=1e-5)
    hf = transformers.LlamaForCausalLM(config).eval()
    path = tmp_path / f"tiny.{qtype}.gguf"
    write_gguf(path, hf, tok, qtype)

    r = cli("import", path, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    model = load_checkpoint(tmp_path / "run").model
    d = dequantised(path)
    q = unpermute(d["blk.1.attn_q.weight"], 4)
    k = unpermute(d["blk.1.attn_k.weight"], 2)
    assert torch.equal(model.blocks[1].attn.qkv.weight,
                       torch.cat([q, k, d["blk.1.attn_v.weight"]]))
    assert torch.equal(model.tok_emb.weight, d["token_embd.weight"])
    assert torch.equal(model.blocks[0].mlp.proj.weight, d["blk.0.ffn_down.weight"])
    if qtype == "Q8_0":  # really quantised: not the original weights
        assert not torch.equal(model.tok_emb.weight, hf.model.embed_tokens.weight)

    # transformers with the dequantised weights gives the same logits.
    with torch.no_grad():
        for i in range(2):
            a = hf.model.layers[i].self_attn
            a.q_proj.weight.copy_(unpermute(d[f"blk.{i}.attn_q.weight"], 4))
            a.k_proj.weight.copy_(unpermute(d[f"blk.{i}.attn_k.weight"], 2))
            a.v_proj.weight.copy_(d[f"blk.{i}.attn_v.weight"])
            a.o_proj.weight.copy_(d[f"blk.{i}.attn_output.weight"])
            m = hf.model.layers[i].mlp
            m.gate_proj.weight.copy_(d[f"blk.{i}.ffn_gate.weight"])
            m.up_proj.weight.copy_(d[f"blk.{i}.ffn_up.weight"])
            m.down_proj.weight.copy_(d[f"blk.{i}.ffn_down.weight"])
        hf.model.embed_tokens.weight.copy_(d["token_embd.weight"])
        ids = torch.tensor([tok.encode(TEXTS[0]).ids])
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)

    # The rebuilt tokenizer: the same ids as the one the file was written from.
    lm = load_lm(tmp_path / "run", device="cpu", precision="fp32")
    for text in TEXTS:
        assert prepare(lm, text, 0, None).ids == tok.encode(text).ids


def test_a_gguf_of_another_architecture_is_refused(tmp_path, cli):
    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = cli("import", tmp_path / "x.gguf", "-o", tmp_path / "run")
    assert r.exit_code == 2 and "mamba is not supported" in r.stderr
    assert not (tmp_path / "run").exists()
