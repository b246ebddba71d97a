"""A llama.cpp .gguf file (Llama family) as lmtool's config, fp32 tensors and tokenizer.

The `gguf` package reads the file and dequantises each tensor (F32, F16, BF16, Q8_0,
Q4_K, ... whatever it knows) to fp32. Two things differ from a Hugging Face Llama:
- names: token_embd, blk.N.attn_q, ... (mapped onto HF's names, then llama.py's map);
- llama.cpp's converter permutes the rows of attn_q and attn_k so that rotary pairs
  are adjacent channels (2i, 2i + 1); lmtool and HF pair i with i + D/2, so the rows
  are put back (`unpermute`).
The tokenizer is rebuilt from the file's metadata: a byte-level BPE ("gpt2" model:
vocabulary and merges, GPT-2's pre-tokenizer), its control tokens special, and a <s>
before every text when the file says add_bos_token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmtool.errors import BadInput
from lmtool.hub import llama
from lmtool.hub.source import Pretrained
from lmtool.models.config import ModelConfig, validate_model_config

# GGUF tensor name → HF Llama name ({} is the block number).
NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
}
CONTROL = 3  # tokenizer.ggml.token_type of a control (special) token


def unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order: per head, rows (0, D/2, 1, D/2 + 1, ...) → (0 .. D-1).

    Worked example, one head of D = 4: GGUF rows [r0, r2, r1, r3] → HF rows [r0, r1, r2, r3]."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's q/k row order (the inverse of `unpermute`), for writing test files."""
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _field(reader, name: str, default=None):
    field = reader.fields.get(name)
    return default if field is None else field.contents()


def _hf_config(reader, where: str) -> dict:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise BadInput(f"{where}: GGUF architecture {arch} is not supported",
                       "lmtool imports GGUF files of the llama architecture")

    def need(key: str):
        value = _field(reader, f"llama.{key}")
        if value is None:
            raise BadInput(f"{where} has no llama.{key} in its metadata")
        return value

    heads = int(need("attention.head_count"))
    return {
        "hidden_size": int(need("embedding_length")), "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", heads)),
        "num_hidden_layers": int(need("block_count")),
        "intermediate_size": int(need("feed_forward_length")),
        "max_position_embeddings": int(need("context_length")),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
        "unk_token_id": _field(reader, "tokenizer.ggml.unknown_token_id"),
    }


def tokenizer_json(reader, where: str) -> str:
    """A tokenizers JSON rebuilt from the file's byte-level BPE vocabulary and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise BadInput(f"{where}: its tokenizer ({kind}) cannot be rebuilt",
                       "lmtool rebuilds byte-level BPE (tokenizer.ggml.model gpt2) tokenizers")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    types = _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t, kind in zip(tokens, types,
                                                                              strict=True)
                            if kind == CONTROL])
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    if _field(reader, "tokenizer.ggml.add_bos_token", False) and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", special_tokens=[(tokens[bos], int(bos))])
    return tok.to_str()


def read_gguf(path: Path) -> Pretrained:
    """A .gguf file in lmtool's terms (tensors dequantised to fp32)."""
    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize
    except ImportError:
        raise BadInput("reading .gguf files needs the gguf package",
                       "install it: pip install gguf") from None
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path} does not exist")
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise BadInput(f"{path} is not a GGUF file ({str(e)[:80]})") from None
    hf = _hf_config(reader, str(path))
    raw = {t.name: t for t in reader.tensors}
    hf["vocab_size"] = int(raw["token_embd.weight"].shape[-1]) if "token_embd.weight" in raw \
        else 0
    hf["tie_word_embeddings"] = "output.weight" not in raw
    config = ModelConfig(**llama.model_fields(hf))
    validate_model_config(config)
    by_hf = {}
    for name in raw:
        parts = name.split(".")
        key = name if parts[0] != "blk" else ".".join(["blk", "{}", *parts[2:]])
        if key in NAMES:
            by_hf[NAMES[key].format(parts[1]) if parts[0] == "blk" else NAMES[key]] = name

    def get(hf_name: str) -> torch.Tensor:
        if hf_name not in by_hf:
            raise BadInput(f"{path} has no tensor for {hf_name}",
                           "its metadata contradicts its tensors")
        t = raw[by_hf[hf_name]]
        values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = torch.from_numpy(values.reshape(tuple(int(n) for n in reversed(t.shape))).copy())
        if hf_name.endswith("q_proj.weight"):
            w = unpermute(w, config.heads)
        elif hf_name.endswith("k_proj.weight"):
            w = unpermute(w, config.n_kv_heads)
        return w

    hf["architectures"] = [llama.ARCHITECTURE]
    return Pretrained(config, llama.from_hf(get, config), tokenizer_json(reader, str(path)),
                      llama.ARCHITECTURE, hf)
