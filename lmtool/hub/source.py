"""Reading a published checkpoint: a local Hugging Face model directory.

    pretrained = read_hf_dir(Path("smollm2/"))   # config, lmtool-named tensors, tokenizer

Tensors are read only by the safetensors library: a directory with nothing but pickled
weights (pytorch_model.bin, *.pt) is refused, never unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmtool.errors import BadInput
from lmtool.hub import ARCHITECTURES, architecture_of, family_module
from lmtool.models.config import ModelConfig, validate_model_config

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.bin")


@dataclass
class Pretrained:
    """A published checkpoint in lmtool's terms."""

    config: ModelConfig
    tensors: dict  # lmtool state-dict names → fp32 tensors (a new head's are missing)
    tokenizer_json: str
    architecture: str  # the HF architecture it came from, e.g. "LlamaForCausalLM"
    hf_config: dict  # its config.json
    new_head: bool = False  # True: the checkpoint had no LM head (BertModel)
    tokenizer_config: dict = field(default_factory=dict)  # its tokenizer_config.json


def _lenient_json(path: Path) -> dict:
    """An optional JSON file's object, or {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        data = {}
    return data if isinstance(data, dict) else {}


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} is not a JSON object")
    return data


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model directory (one, or the shards its index names)."""
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    if (folder / INDEX).is_file():
        shards = sorted(set(_json(folder / INDEX).get("weight_map", {}).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if not shards or missing:
            raise BadInput(f"{folder / INDEX} names missing shards ({', '.join(missing[:3])})",
                           "download every model-*.safetensors file beside it")
        return [folder / s for s in shards]
    pickled = [p.name for p in sorted(folder.iterdir()) if p.suffix in (".bin", ".pt", ".pth")]
    if pickled:
        raise BadInput(f"{folder} has only pickled weights ({pickled[0]}), which lmtool "
                       "never loads (unpickling can run code)",
                       "convert them to model.safetensors first, e.g. with transformers: "
                       "from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)")
    raise BadInput(f"{folder} has no {SINGLE} or {INDEX}",
                   "pass a Hugging Face model directory with safetensors weights")


def read_hf_dir(folder: Path) -> Pretrained:
    """A local HF model directory as lmtool's config + tensors + tokenizer.

    Refused (BadInput): an unsupported architecture, pickled weights only, no
    tokenizer.json, tensors missing or shaped otherwise than the config says."""
    from safetensors import safe_open

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BadInput(f"{folder} has no config.json",
                       "pass a Hugging Face model directory, a hub id (org/name) or a .gguf file")
    hf = _json(folder / "config.json")
    architecture = architecture_of(hf, str(folder / "config.json"))
    family = family_module(ARCHITECTURES[architecture][0])
    files = weight_files(folder)
    if not (folder / "tokenizer.json").is_file():
        raise BadInput(f"{folder} has no tokenizer.json",
                       "lmtool needs the tokenizer the model was trained with (a fast "
                       "tokenizer's tokenizer.json)")
    config = ModelConfig(**family.model_fields(hf))
    validate_model_config(config)
    handles = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            for name in f.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                handles[name] = file

    def get(name: str):
        if name not in handles:
            raise BadInput(f"{folder} has no tensor {name}",
                           "its config.json contradicts its weights")
        with safe_open(str(handles[name]), "pt") as f:
            return f.get_tensor(name).float()

    new_head = False
    if family.__name__.endswith(".bert"):
        new_head = not family.has_head(handles)
        tensors = family.from_hf(get, config, family.prefix_of(handles), not new_head)
    else:
        tensors = family.from_hf(get, config)
    drop_zero_extras(config, tensors)
    return Pretrained(config, tensors, (folder / "tokenizer.json").read_text("utf-8"),
                      architecture, hf, new_head,
                      _lenient_json(folder / "tokenizer_config.json"))


def drop_zero_extras(config: ModelConfig, tensors: dict) -> None:
    """Linear biases or a token-type embedding that are all zeros change nothing: drop
    them (config and tensors, in place). Families whose checkpoints always have them
    (GPT-2, Megatron-BERT) then bring lmtool's own exported runs back exactly."""
    biases = [n for n in tensors if n.startswith("blocks.") and n.endswith(".bias")
              and (".attn." in n or ".mlp." in n)]
    if config.bias and biases and not any(tensors[n].any() for n in biases):
        for n in biases:
            del tensors[n]
        config.bias = False
    types = tensors.get("type_emb.weight")
    if config.token_types and types is not None and not types.any():
        del tensors["type_emb.weight"]
        config.token_types = 0


def build_pretrained(p: Pretrained):
    """The lmtool Transformer holding the checkpoint's weights (eval mode, fp32).

    BadInput when a tensor's shape contradicts the config."""
    from lmtool.models import build_model

    model = build_model(p.config)
    wanted = model.state_dict()
    for name, tensor in p.tensors.items():
        if name not in wanted or wanted[name].shape != tensor.shape:
            shape = tuple(wanted[name].shape) if name in wanted else "no such tensor"
            raise BadInput(f"the checkpoint's config contradicts its tensors: {name} is "
                           f"{tuple(tensor.shape)}, the config makes {shape}")
    missing = set(wanted) - set(p.tensors)
    if p.config.tie_embeddings:
        missing -= {"lm_head.weight", "lm_head.decoder.weight"}  # the embedding's
    if p.new_head:
        missing = {n for n in missing if not n.startswith("lm_head.")}
    if missing:
        raise BadInput(f"the checkpoint lacks {sorted(missing)[0]}")
    model.load_state_dict(p.tensors, strict=False)
    return model.eval()
