"""The BERT family (BertForMaskedLM, or BertModel without its MLM head): post-norm
blocks, learned positions, a token-type embedding (segment 0 for a single text) and a
LayerNorm on the embeddings, biases everywhere, exact GELU, no final norm.

HF keeps query, key, value apart; lmtool's qkv holds them side by side. BertModel's
pooler (a dense layer on [CLS]) is not a language model's part and is left out.
"""

from __future__ import annotations

import torch

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig

ARCHITECTURE = "BertForMaskedLM"
ACTIVATIONS = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def model_fields(hf: dict) -> dict:
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS or hf.get("position_embedding_type", "absolute") != "absolute":
        raise BadInput(f"this BERT config uses {act} / {hf.get('position_embedding_type')}, "
                       "which lmtool's Transformer does not reproduce")
    return dict(
        arch="transformer", objective="masked", vocab_size=hf["vocab_size"],
        context=hf["max_position_embeddings"], layers=hf["num_hidden_layers"],
        heads=hf["num_attention_heads"], dim=hf["hidden_size"],
        mlp_width=hf["intermediate_size"], positions="learned", dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)), norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-12), norm_place="post", gelu=ACTIVATIONS[act],
        bias=True, embed_norm=True, token_types=hf.get("type_vocab_size", 2),
    )


def hf_config(c: ModelConfig) -> dict:
    return {
        "architectures": [ARCHITECTURE], "model_type": "bert", "vocab_size": c.vocab_size,
        "hidden_size": c.dim, "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
        "intermediate_size": c.inner_width, "max_position_embeddings": c.context,
        "type_vocab_size": max(c.token_types, 1), "layer_norm_eps": c.norm_eps,
        "hidden_act": "gelu" if c.gelu == "exact" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "tie_word_embeddings": c.tie_embeddings,
    }


def _wb(hf: str, ours: str) -> list[tuple[str, str]]:
    return [(f"{hf}.weight", f"{ours}.weight"), (f"{hf}.bias", f"{ours}.bias")]


def _plain(c: ModelConfig, prefix: str, head: bool) -> list[tuple[str, str]]:
    """(HF name, lmtool name) of the tensors that map one to one; `prefix` is "bert."
    in BertForMaskedLM, "" in a bare BertModel."""
    e = f"{prefix}embeddings."
    rows = [(f"{e}word_embeddings.weight", "tok_emb.weight"),
            (f"{e}position_embeddings.weight", "pos_emb.weight"),
            (f"{e}token_type_embeddings.weight", "type_emb.weight"),
            *_wb(f"{e}LayerNorm", "emb_norm")]
    for i in range(c.layers):
        h, b = f"{prefix}encoder.layer.{i}.", f"blocks.{i}."
        rows += [*_wb(f"{h}attention.output.dense", f"{b}attn.proj"),
                 *_wb(f"{h}attention.output.LayerNorm", f"{b}ln1"),
                 *_wb(f"{h}intermediate.dense", f"{b}mlp.fc"),
                 *_wb(f"{h}output.dense", f"{b}mlp.proj"),
                 *_wb(f"{h}output.LayerNorm", f"{b}ln2")]
    if head:
        p = "cls.predictions."
        rows += [*_wb(f"{p}transform.dense", "lm_head.dense"),
                 *_wb(f"{p}transform.LayerNorm", "lm_head.ln"),
                 (f"{p}bias", "lm_head.decoder.bias")]
        if not c.tie_embeddings:
            rows.append((f"{p}decoder.weight", "lm_head.decoder.weight"))
    return rows


def has_head(names) -> bool:
    return "cls.predictions.bias" in names


def prefix_of(names) -> str:
    return "bert." if any(n.startswith("bert.") for n in names) else ""


def from_hf(get, c: ModelConfig, prefix: str = "bert.", head: bool = True) -> dict:
    """lmtool's tensors; without an MLM head (`head=False`) the head is left out (the
    caller keeps a freshly initialised one)."""
    out = {ours: get(hf) for hf, ours in _plain(c, prefix, head)}
    for i in range(c.layers):
        s = f"{prefix}encoder.layer.{i}.attention.self."
        b = f"blocks.{i}.attn.qkv."
        for p in ("weight", "bias"):
            out[b + p] = torch.cat([get(f"{s}{x}.{p}") for x in ("query", "key", "value")])
    return out


def to_hf(tensors: dict, c: ModelConfig) -> dict:
    """HF-named tensors. BERT always has linear biases and a token-type embedding: a run
    whose import dropped all-zero ones (lmtool.hub.source) gets zeros back."""
    tensors = dict(tensors)
    for name, t in list(tensors.items()):
        if name.startswith("blocks.") and name.endswith(".weight") and t.dim() == 2:
            tensors.setdefault(name.replace(".weight", ".bias"), t.new_zeros(t.size(0)))
    tensors.setdefault("type_emb.weight", tensors["tok_emb.weight"].new_zeros(1, c.dim))
    out = {hf: tensors[ours] for hf, ours in _plain(c, "bert.", True)}
    for i in range(c.layers):
        s = f"bert.encoder.layer.{i}.attention.self."
        b = f"blocks.{i}.attn.qkv."
        for p in ("weight", "bias"):
            for x, part in zip(("query", "key", "value"), tensors[b + p].chunk(3), strict=True):
                out[f"{s}{x}.{p}"] = part.contiguous()
    return out
