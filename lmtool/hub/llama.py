"""The Llama family (LlamaForCausalLM: Llama 2/3, SmolLM2, TinyLlama, ...): RMSNorm,
SwiGLU MLP, rotary positions with base rope_theta, grouped-query attention, no biases,
a tied or untied output matrix.

HF keeps q, k, v apart and gate, up apart; lmtool's qkv and fc hold them side by side
(q rows, then k, then v; gate rows, then up). HF's rotary (rotate_half) pairs channel i
with i + D/2, as lmtool's does, so no permutation is needed.
"""

from __future__ import annotations

import torch

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig

ARCHITECTURE = "LlamaForCausalLM"


def rope_theta(hf: dict) -> float:
    """rope_theta from either transformers' old field or its rope_parameters dict."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind != "default":
        raise BadInput(f"this Llama config scales its rotary positions ({kind}), "
                       "which lmtool's Transformer does not reproduce")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def model_fields(hf: dict) -> dict:
    """ModelConfig fields for a Llama config.json."""
    dim, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or dim // heads
    odd = [k for k in ("attention_bias", "mlp_bias") if hf.get(k)]
    if hf.get("hidden_act", "silu") != "silu" or head_dim * heads != dim or odd:
        raise BadInput("this Llama config has "
                       + (odd[0] if odd else f"head_dim {head_dim} or act {hf.get('hidden_act')}")
                       + ", which lmtool's Transformer does not reproduce")
    return dict(
        arch="transformer", objective="causal", vocab_size=hf["vocab_size"],
        context=hf.get("max_position_embeddings", 2048), layers=hf["num_hidden_layers"],
        heads=heads, dim=dim, mlp_width=hf["intermediate_size"], positions="rotary",
        dropout=0.0, tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu",
        kv_heads=hf.get("num_key_value_heads") or heads, rope_theta=rope_theta(hf),
    )


def hf_config(c: ModelConfig) -> dict:
    return {
        "architectures": [ARCHITECTURE], "model_type": "llama", "vocab_size": c.vocab_size,
        "hidden_size": c.dim, "intermediate_size": c.inner_width,
        "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
        "num_key_value_heads": c.n_kv_heads, "head_dim": c.dim // c.heads,
        "max_position_embeddings": c.context, "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "tie_word_embeddings": c.tie_embeddings,
    }


def _plain(c: ModelConfig) -> list[tuple[str, str]]:
    """(HF name, lmtool name) of the tensors that map one to one."""
    rows = [("model.embed_tokens.weight", "tok_emb.weight"), ("model.norm.weight", "ln_f.weight")]
    for i in range(c.layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        rows += [(f"{h}input_layernorm.weight", f"{b}ln1.weight"),
                 (f"{h}post_attention_layernorm.weight", f"{b}ln2.weight"),
                 (f"{h}self_attn.o_proj.weight", f"{b}attn.proj.weight"),
                 (f"{h}mlp.down_proj.weight", f"{b}mlp.proj.weight")]
    if not c.tie_embeddings:
        rows.append(("lm_head.weight", "lm_head.weight"))
    return rows


def from_hf(get, c: ModelConfig) -> dict:
    out = {ours: get(hf) for hf, ours in _plain(c)}
    for i in range(c.layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        out[f"{b}attn.qkv.weight"] = torch.cat(
            [get(f"{h}self_attn.{x}_proj.weight") for x in "qkv"])  # ((H + 2KV) D, C)
        out[f"{b}mlp.fc.weight"] = torch.cat(
            [get(f"{h}mlp.gate_proj.weight"), get(f"{h}mlp.up_proj.weight")])  # (2W, C)
    return out


def to_hf(tensors: dict, c: ModelConfig) -> dict:
    out = {hf: tensors[ours] for hf, ours in _plain(c)}
    D = c.dim // c.heads
    sizes = [c.heads * D, c.n_kv_heads * D, c.n_kv_heads * D]
    for i in range(c.layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        for x, part in zip("qkv", tensors[f"{b}attn.qkv.weight"].split(sizes), strict=True):
            out[f"{h}self_attn.{x}_proj.weight"] = part.contiguous()
        gate, up = tensors[f"{b}mlp.fc.weight"].chunk(2)
        out[f"{h}mlp.gate_proj.weight"], out[f"{h}mlp.up_proj.weight"] = (
            gate.contiguous(), up.contiguous())
    return out
