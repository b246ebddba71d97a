"""Published checkpoints in and out: one module per Hugging Face family.

Each family module maps a `transformers` config.json onto lmtool's ModelConfig fields
and its tensor names onto the Transformer's, both ways. No model code lives here: the
one Transformer (models/transformer.py) holds every family through its config.

    family = family_of(hf_config)                  # by config["architectures"][0]
    fields = family.model_fields(hf_config)        # ModelConfig fields
    tensors = family.from_hf(get, config)          # lmtool names; get(hf_name) -> tensor
    hf_tensors = family.to_hf(tensors, config)     # and back
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lmtool.errors import BadInput

# HF architecture (config.json "architectures"[0]) → (family module, objective).
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "GPT2LMHeadModel": ("gpt2", "causal"),
    "LlamaForCausalLM": ("llama", "causal"),
    "BertForMaskedLM": ("bert", "masked"),
    "BertModel": ("bert", "masked"),
    "Starcoder2ForCausalLM": ("starcoder2", "causal"),
    "MegatronBertForMaskedLM": ("megatron_bert", "masked"),
}


def family_module(name: str) -> ModuleType:
    return importlib.import_module(f"lmtool.hub.{name}")


def architecture_of(hf_config: dict, where: str) -> str:
    """The config's architecture, refused in one line when lmtool has no mapping for it."""
    names = hf_config.get("architectures") or []
    name = names[0] if names else str(hf_config.get("model_type", "unknown"))
    if name not in ARCHITECTURES:
        raise BadInput(f"{where}: architecture {name} is not supported",
                       f"lmtool imports {', '.join(ARCHITECTURES)}")
    return name
