"""`lmtool import`: a published checkpoint becomes an ordinary run directory.

    import_run("org/name" | "hf-dir/" | "model.gguf", Path("runs/smol"), force=False)

The run has what a pre-training run has (config.json, model.safetensors, tokenizer.json,
metrics.jsonl) and no trainer state: every command that reads a run reads it, and
`finetune lm` / `finetune classifier` start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmtool.errors import BadInput
from lmtool.hub.source import Pretrained, build_pretrained, read_hf_dir

# An imported run's training settings, for `finetune lm` and `evaluate`: windows of at
# most 512 tokens, 8 a batch. Its own context (SmolLM2: 8,192) at the default batch of
# 32 would ask for a logits tensor of 32 x 8,192 x 49,152 floats (52 GB): killed for
# want of memory, where 8 x 512 tokens of SmolLM2 train in 9.8 GB (peak resident).
IMPORT_WINDOW = 512
IMPORT_BATCH = 8

# What a hub download fetches: everything an import reads, never pickled weights.
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json",
             "model-*.safetensors", "tokenizer.json", "tokenizer_config.json"]


@dataclass
class ImportResult:
    run: Path
    architecture: str
    objective: str
    parameters: int
    vocab_size: int
    new_head: bool


def looks_like_hub_id(source: str) -> bool:
    """org/name with no such local path: a Hugging Face hub id."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not Path(source).exists()


def download(repo_id: str) -> Path:
    """The hub model's files in the local Hugging Face cache (downloaded when online)."""
    hint = (f"download it on a connected machine (hf download {repo_id} --include "
            f"'*.json' '*.safetensors' --local-dir DIR) and run: lmtool import DIR -o RUN")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BadInput(f"{repo_id} looks like a hub id, and huggingface_hub is not installed",
                       hint) from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, no such repo, gated: all end the same way here
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise BadInput(f"cannot download {repo_id} from the hub ({why})", hint) from None


def read_source(source: str) -> Pretrained:
    """A local HF directory, a .gguf file or a hub id, in lmtool's terms."""
    path = Path(source)
    if path.suffix == ".gguf":
        from lmtool.hub.gguf import read_gguf

        return read_gguf(path)
    if path.is_dir():
        return read_hf_dir(path)
    if looks_like_hub_id(source):
        return read_hf_dir(download(source))
    if path.exists():
        raise BadInput(f"{source} is neither a model directory nor a .gguf file")
    raise BadInput(f"{source} does not exist",
                   "pass a Hugging Face model directory, a hub id (org/name) or a .gguf file")


def import_run(source: str, output: Path, *, force: bool = False) -> ImportResult:
    """Write the run for `source` at `output` (lmtool.outputs' rule: an earlier run
    only with `force`). Nothing is written when the source is refused."""
    from tokenizers import Tokenizer

    from lmtool.hub.specials import find_specials
    from lmtool.outputs import RUN, check_output
    from lmtool.rundir import claim_run
    from lmtool.text.tokenizer import unpadded

    output = Path(output)
    check_output(output, RUN, force=force)
    pretrained = read_source(source)
    try:
        tok = Tokenizer.from_str(pretrained.tokenizer_json)
    except Exception:  # the Rust parser's bare Exception
        raise BadInput(f"{source}: its tokenizer.json is not a tokenizer file") from None
    unpadded(tok)
    if tok.get_vocab_size() > pretrained.config.vocab_size:
        raise BadInput(f"{source}: the tokenizer has {tok.get_vocab_size():,} tokens, the "
                       f"model {pretrained.config.vocab_size:,} rows",
                       "the config contradicts the tensors or the tokenizer is another model's")
    pretrained.config.specials = find_specials(tok, pretrained.hf_config,
                                               pretrained.tokenizer_config)
    model = build_pretrained(pretrained)
    config = pretrained.config
    parameters = sum(p.numel() for p in model.parameters())
    with claim_run(output, resume=False, force=force):  # one writer, as for training
        _save(output, model, pretrained, tok, source, parameters)
    return ImportResult(output, pretrained.architecture, config.objective, parameters,
                        config.vocab_size, pretrained.new_head)


def _save(output: Path, model, pretrained: Pretrained, tok, source: str, parameters: int):
    """The run directory, as a pre-training run's first checkpoint (no trainer state)."""
    from lmtool.checkpoint import save_checkpoint
    from lmtool.text.tokenizer import tokenizer_sha256

    config = pretrained.config
    save_checkpoint(output, model=model, config={
        "task": "lm", "arch": config.arch, "objective": config.objective, "preset": None,
        "model": config.to_dict(),
        "training": {"window": min(config.context, IMPORT_WINDOW), "batch_size": IMPORT_BATCH},
        "tokenizer": {"sha256": tokenizer_sha256(tok), "vocab_size": tok.get_vocab_size()},
        "data": {},
        "imported": {"source": str(source), "architecture": pretrained.architecture,
                     "new_head": pretrained.new_head},
        "num_parameters": parameters,
    }, tokenizer_json=tok.to_str(), metrics=[])
