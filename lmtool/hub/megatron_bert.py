"""Megatron-BERT (MegatronBertForMaskedLM): what lmtool's own masked Transformer with
learned positions is: BERT's embeddings and MLM head around PRE-norm blocks with a final
LayerNorm, exact GELU. Its linears and token-type embedding always exist: lmtool's runs,
which have neither, export zeros there (adding zero changes nothing), and an import
drops all-zero ones again (lmtool.hub.source), so a run comes back bitwise.
"""

from __future__ import annotations

import torch

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig

ARCHITECTURE = "MegatronBertForMaskedLM"
ACTIVATIONS = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def model_fields(hf: dict) -> dict:
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS or hf.get("position_embedding_type", "absolute") != "absolute":
        raise BadInput(f"this Megatron-BERT config uses {act}, which lmtool's Transformer "
                       "does not reproduce")
    return dict(
        arch="transformer", objective="masked", vocab_size=hf["vocab_size"],
        context=hf["max_position_embeddings"], layers=hf["num_hidden_layers"],
        heads=hf["num_attention_heads"], dim=hf["hidden_size"],
        mlp_width=hf["intermediate_size"], positions="learned", dropout=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm_eps=hf.get("layer_norm_eps", 1e-12), gelu=ACTIVATIONS[act], bias=True,
        token_types=hf.get("type_vocab_size", 2),
    )


def hf_config(c: ModelConfig) -> dict:
    return {
        "architectures": [ARCHITECTURE], "model_type": "megatron-bert",
        "vocab_size": c.vocab_size, "hidden_size": c.dim, "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads, "intermediate_size": c.inner_width,
        "max_position_embeddings": c.context, "type_vocab_size": max(c.token_types, 1),
        "layer_norm_eps": c.norm_eps,
        "hidden_act": "gelu" if c.gelu == "exact" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "tie_word_embeddings": c.tie_embeddings,
    }


def _wb(hf: str, ours: str) -> list[tuple[str, str]]:
    return [(f"{hf}.weight", f"{ours}.weight"), (f"{hf}.bias", f"{ours}.bias")]


def _plain(c: ModelConfig) -> list[tuple[str, str]]:
    """(HF name, lmtool name) of the tensors that map one to one, and (bias, ...) pairs
    whose lmtool side exists only with config.bias."""
    e = "bert.embeddings."
    rows = [(f"{e}word_embeddings.weight", "tok_emb.weight"),
            (f"{e}position_embeddings.weight", "pos_emb.weight"),
            *_wb("bert.encoder.ln", "ln_f")]
    for i in range(c.layers):
        h, b = f"bert.encoder.layer.{i}.", f"blocks.{i}."
        rows += [*_wb(f"{h}attention.ln", f"{b}ln1"), *_wb(f"{h}ln", f"{b}ln2"),
                 (f"{h}attention.output.dense.weight", f"{b}attn.proj.weight"),
                 (f"{h}intermediate.dense.weight", f"{b}mlp.fc.weight"),
                 (f"{h}output.dense.weight", f"{b}mlp.proj.weight")]
    p = "cls.predictions."
    rows += [*_wb(f"{p}transform.dense", "lm_head.dense"),
             *_wb(f"{p}transform.LayerNorm", "lm_head.ln"), (f"{p}bias", "lm_head.decoder.bias")]
    if not c.tie_embeddings:
        rows.append((f"{p}decoder.weight", "lm_head.decoder.weight"))
    return rows


def _biases(c: ModelConfig) -> list[tuple[str, str]]:
    rows = []
    for i in range(c.layers):
        h, b = f"bert.encoder.layer.{i}.", f"blocks.{i}."
        rows += [(f"{h}attention.output.dense.bias", f"{b}attn.proj.bias"),
                 (f"{h}intermediate.dense.bias", f"{b}mlp.fc.bias"),
                 (f"{h}output.dense.bias", f"{b}mlp.proj.bias")]
    return rows


def from_hf(get, c: ModelConfig) -> dict:
    out = {ours: get(hf) for hf, ours in _plain(c) + _biases(c)}
    out["type_emb.weight"] = get("bert.embeddings.token_type_embeddings.weight")
    for i in range(c.layers):
        s = f"bert.encoder.layer.{i}.attention.self."
        for p in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(
                [get(f"{s}{x}.{p}") for x in ("query", "key", "value")])
    return out


def to_hf(tensors: dict, c: ModelConfig) -> dict:
    out = {hf: tensors[ours] for hf, ours in _plain(c)}
    zeros = torch.zeros_like
    for hf, ours in _biases(c):
        weight = tensors[ours.replace(".bias", ".weight")]
        out[hf] = tensors[ours] if c.bias else zeros(weight[:, 0])
    types = tensors.get("type_emb.weight")
    out["bert.embeddings.token_type_embeddings.weight"] = (
        types if types is not None else zeros(tensors["tok_emb.weight"][:1]))
    for i in range(c.layers):
        s = f"bert.encoder.layer.{i}.attention.self."
        w = tensors[f"blocks.{i}.attn.qkv.weight"]
        bias = tensors.get(f"blocks.{i}.attn.qkv.bias")
        bias = bias if bias is not None else zeros(w[:, 0])
        for p, t in (("weight", w), ("bias", bias)):
            for x, part in zip(("query", "key", "value"), t.chunk(3), strict=True):
                out[f"{s}{x}.{p}"] = part.contiguous()
    return out
