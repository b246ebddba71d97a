"""Starcoder2 (Starcoder2ForCausalLM): what lmtool's own causal Transformer with rotary
positions is, exactly: pre-norm LayerNorm with biases, rotary positions (channel i
paired with i + D/2), a GELU MLP (c_fc, c_proj), optional linear biases (use_bias),
grouped-query attention. So lmtool's own causal runs export here and come back bitwise.
"""

from __future__ import annotations

import torch

from lmtool.errors import BadInput
from lmtool.hub.llama import rope_theta
from lmtool.models.config import ModelConfig

ARCHITECTURE = "Starcoder2ForCausalLM"
ACTIVATIONS = {"gelu": "exact", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}


def model_fields(hf: dict) -> dict:
    act = hf.get("hidden_act", "gelu_pytorch_tanh")
    if act not in ACTIVATIONS or hf.get("sliding_window"):
        raise BadInput(f"this Starcoder2 config uses {act} / sliding_window "
                       f"{hf.get('sliding_window')}, which lmtool's Transformer does not "
                       "reproduce")
    heads = hf["num_attention_heads"]
    return dict(
        arch="transformer", objective="causal", vocab_size=hf["vocab_size"],
        context=hf["max_position_embeddings"], layers=hf["num_hidden_layers"], heads=heads,
        dim=hf["hidden_size"], mlp_width=hf["intermediate_size"], positions="rotary",
        dropout=0.0, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm_eps=hf.get("norm_epsilon", 1e-5), gelu=ACTIVATIONS[act],
        bias=bool(hf.get("use_bias", True)), kv_heads=hf.get("num_key_value_heads") or heads,
        rope_theta=rope_theta(hf),
    )


def hf_config(c: ModelConfig) -> dict:
    return {
        "architectures": [ARCHITECTURE], "model_type": "starcoder2",
        "vocab_size": c.vocab_size, "hidden_size": c.dim, "intermediate_size": c.inner_width,
        "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
        "num_key_value_heads": c.n_kv_heads, "max_position_embeddings": c.context,
        "norm_epsilon": c.norm_eps, "rope_theta": c.rope_theta, "use_bias": c.bias,
        "hidden_act": "gelu" if c.gelu == "exact" else "gelu_pytorch_tanh",
        "sliding_window": None, "tie_word_embeddings": c.tie_embeddings,
        "residual_dropout": 0.0, "embedding_dropout": 0.0, "attention_dropout": 0.0,
    }


def _plain(c: ModelConfig) -> list[tuple[str, str]]:
    rows = [("model.embed_tokens.weight", "tok_emb.weight"),
            ("model.norm.weight", "ln_f.weight"), ("model.norm.bias", "ln_f.bias")]
    params = ("weight", "bias") if c.bias else ("weight",)
    for i in range(c.layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            rows += [(f"{h}input_layernorm.{p}", f"{b}ln1.{p}"),
                     (f"{h}post_attention_layernorm.{p}", f"{b}ln2.{p}")]
        for p in params:
            rows += [(f"{h}self_attn.o_proj.{p}", f"{b}attn.proj.{p}"),
                     (f"{h}mlp.c_fc.{p}", f"{b}mlp.fc.{p}"),
                     (f"{h}mlp.c_proj.{p}", f"{b}mlp.proj.{p}")]
    if not c.tie_embeddings:
        rows.append(("lm_head.weight", "lm_head.weight"))
    return rows


def from_hf(get, c: ModelConfig) -> dict:
    out = {ours: get(hf) for hf, ours in _plain(c)}
    for i in range(c.layers):
        for p in ("weight", "bias") if c.bias else ("weight",):
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(
                [get(f"model.layers.{i}.self_attn.{x}_proj.{p}") for x in "qkv"])
    return out


def to_hf(tensors: dict, c: ModelConfig) -> dict:
    out = {hf: tensors[ours] for hf, ours in _plain(c)}
    D = c.dim // c.heads
    sizes = [c.heads * D, c.n_kv_heads * D, c.n_kv_heads * D]
    for i in range(c.layers):
        for p in ("weight", "bias") if c.bias else ("weight",):
            parts = tensors[f"blocks.{i}.attn.qkv.{p}"].split(sizes)
            for x, part in zip("qkv", parts, strict=True):
                out[f"model.layers.{i}.self_attn.{x}_proj.{p}"] = part.contiguous()
    return out
