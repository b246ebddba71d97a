"""GPT-2 (GPT2LMHeadModel): learned positions, LayerNorm, tanh GELU, biases everywhere.

Its linears are Conv1D modules whose weights are stored (in, out), the transpose of
nn.Linear's (out, in); c_attn holds q, k and v side by side, as lmtool's qkv does.
"""

from __future__ import annotations

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig

ARCHITECTURE = "GPT2LMHeadModel"
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}


def model_fields(hf: dict) -> dict:
    """ModelConfig fields for a GPT-2 config.json."""
    act = hf.get("activation_function", "gelu_new")
    odd = [k for k in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
                       "add_cross_attention") if hf.get(k)]
    if act not in ACTIVATIONS or odd or hf.get("scale_attn_weights", True) is False:
        raise BadInput(f"this GPT-2 config uses {act if act not in ACTIVATIONS else odd[0]}, "
                       "which lmtool's Transformer does not reproduce")
    dim = hf["n_embd"]
    return dict(
        arch="transformer", objective="causal", vocab_size=hf["vocab_size"],
        context=hf["n_positions"], layers=hf["n_layer"], heads=hf["n_head"], dim=dim,
        mlp_width=hf.get("n_inner") or 4 * dim, positions="learned", dropout=0.0,
        tie_embeddings=hf.get("tie_word_embeddings", True), norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), gelu=ACTIVATIONS[act], bias=True,
    )


def hf_config(c: ModelConfig) -> dict:
    """config.json for a GPT-2 with lmtool's config `c` (causal, learned positions)."""
    return {
        "architectures": [ARCHITECTURE], "model_type": "gpt2", "vocab_size": c.vocab_size,
        "n_positions": c.context, "n_embd": c.dim, "n_layer": c.layers, "n_head": c.heads,
        "n_inner": c.inner_width, "layer_norm_epsilon": c.norm_eps,
        "activation_function": "gelu_new" if c.gelu == "tanh" else "gelu",
        "tie_word_embeddings": c.tie_embeddings, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }


def _names(i: int) -> list[tuple[str, str, bool]]:
    """(HF name, lmtool name, transposed) for block i."""
    h, b = f"transformer.h.{i}.", f"blocks.{i}."
    rows = [("ln_1", "ln1", False), ("ln_2", "ln2", False)]
    rows = [(f"{h}{x}.{p}", f"{b}{y}.{p}", False) for x, y, _ in rows for p in ("weight", "bias")]
    for x, y in (("attn.c_attn", "attn.qkv"), ("attn.c_proj", "attn.proj"),
                 ("mlp.c_fc", "mlp.fc"), ("mlp.c_proj", "mlp.proj")):
        rows += [(f"{h}{x}.weight", f"{b}{y}.weight", True),
                 (f"{h}{x}.bias", f"{b}{y}.bias", False)]
    return rows


def _table(c: ModelConfig) -> list[tuple[str, str, bool]]:
    rows = [("transformer.wte.weight", "tok_emb.weight", False),
            ("transformer.wpe.weight", "pos_emb.weight", False),
            ("transformer.ln_f.weight", "ln_f.weight", False),
            ("transformer.ln_f.bias", "ln_f.bias", False)]
    for i in range(c.layers):
        rows += _names(i)
    if not c.tie_embeddings:
        rows.append(("lm_head.weight", "lm_head.weight", False))
    return rows


def from_hf(get, c: ModelConfig) -> dict:
    """lmtool's tensors from `get(hf_name)`, the checkpoint's tensors by HF name."""
    return {ours: (get(hf).t() if t else get(hf)).contiguous() for hf, ours, t in _table(c)}


def to_hf(tensors: dict, c: ModelConfig) -> dict:
    """HF-named tensors from lmtool's state dict (a tied head is stored once, as wte).
    GPT-2's linears always have biases: a run without (lmtool's own) exports zeros."""
    out = {}
    for hf, ours, t in _table(c):
        if ours not in tensors:  # a bias lmtool's run does not have: (out,) zeros
            weight = tensors[ours.replace(".bias", ".weight")]
            out[hf] = weight.new_zeros(weight.size(0))
        else:
            out[hf] = (tensors[ours].t() if t else tensors[ours]).contiguous()
    return out
