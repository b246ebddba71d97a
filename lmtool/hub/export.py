"""`lmtool export`: a run as a Hugging Face model directory that `transformers` loads
with no custom code (AutoModelForCausalLM / AutoModelForMaskedLM / AutoTokenizer).

    export_run(Path("runs/lm"), Path("hf/lm"))

The family is read off the run's model config, so an imported run (and anything
fine-tuned from one) goes back to its own family, and lmtool's own Transformers go to
the existing class they are exactly:
    causal, rotary positions   → Starcoder2ForCausalLM
    causal, learned positions  → GPT2LMHeadModel (zero biases)
    masked, learned positions  → MegatronBertForMaskedLM (zero biases)
Nothing else is written: an AWD-LSTM has no transformers class, and is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmtool.errors import BadInput
from lmtool.hub import family_module
from lmtool.models.config import ModelConfig
from lmtool.text.specials import PAD, SPECIAL_TOKENS, special_ids


@dataclass
class ExportResult:
    output: Path
    architecture: str
    parameters: int


def export_family(c: ModelConfig) -> str:
    """The hub family module whose class computes exactly what `c` does, or BadInput."""
    if c.arch != "transformer":
        raise BadInput("an AWD-LSTM cannot be exported: transformers has no class for it",
                       "export a Transformer run")
    pre, post = c.norm_place == "pre", c.norm_place == "post"
    plain_mlp = c.mlp == "gelu" and c.norm == "layernorm"
    if c.objective == "causal" and c.backward:
        raise BadInput("a backward language model cannot be exported: transformers reads "
                       "left to right")
    if (c.objective == "causal" and pre and c.norm == "rmsnorm" and c.mlp == "swiglu"
            and c.positions == "rotary" and not c.bias and not c.token_types):
        return "llama"
    if c.objective == "causal" and pre and plain_mlp and not c.embed_norm and not c.token_types:
        if c.positions == "rotary":
            return "starcoder2"
        if c.kv_heads in (0, c.heads):
            return "gpt2"
    if c.objective == "masked" and c.positions == "learned" and plain_mlp \
            and c.kv_heads in (0, c.heads):
        if post and c.embed_norm:
            return "bert"
        if pre and not c.embed_norm:
            return "megatron_bert"
    raise BadInput(f"no transformers class computes this {c.objective} Transformer "
                   f"({c.positions} positions, {c.norm_place}-{c.norm}, {c.mlp} MLP)",
                   "lmtool exports GPT-2, Llama, BERT, Starcoder2 and Megatron-BERT shapes")


def _tokenizer_config(c: ModelConfig, tokenizer) -> dict:
    """tokenizer_config.json: the class (the fast tokenizer, no custom code) and the
    special tokens by role, so AutoTokenizer knows them."""
    ids = special_ids(c)
    out: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": c.context}
    for role in ("pad", "unk", "bos", "eos", "mask", "cls", "sep"):
        token = tokenizer.id_to_token(getattr(ids, role))
        if token is not None and (ids.imported or token in SPECIAL_TOKENS):
            out[f"{role}_token"] = token
    out.setdefault("pad_token", PAD)
    return out


def export_run(run: Path, output: Path, *, force: bool = False) -> ExportResult:
    """Write `run` as a transformers model directory at `output` (atomically; an earlier
    export only with `force`)."""
    from safetensors.torch import save_file

    from lmtool.checkpoint import load_checkpoint, read_run_config, run_task
    from lmtool.fsio import atomic_dir
    from lmtool.outputs import EXPORT, check_output

    run, output = Path(run), Path(output)
    config = read_run_config(run)
    if run_task(config) == "classifier":
        raise BadInput(f"{run} is a classifier; lmtool exports language models",
                       "export the language model it was fine-tuned from")
    c = ModelConfig.from_dict(config["model"])
    name = export_family(c)
    check_output(output, EXPORT, force=force)
    ckpt = load_checkpoint(run, "cpu")
    family = family_module(name)
    state = {k: v.detach().float() for k, v in ckpt.model.state_dict().items()}
    tensors = {k: v.contiguous() for k, v in family.to_hf(state, c).items()}
    ids = special_ids(c)
    hf_config = {**family.hf_config(c), "torch_dtype": "float32",
                 "bos_token_id": ids.bos, "eos_token_id": ids.eos, "pad_token_id": ids.pad,
                 "lmtool_export": {"run": str(run), "lmtool_version": config.get(
                     "lmtool_version")}}
    with atomic_dir(output, force=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "tokenizer.json").write_text(ckpt.tokenizer.to_str(), encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(_tokenizer_config(c, ckpt.tokenizer), indent=2) + "\n")
    return ExportResult(output, family.ARCHITECTURE,
                        sum(p.numel() for p in ckpt.model.parameters()))
