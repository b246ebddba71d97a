"""The run a fine-tune starts from: reading it, refusing what cannot be a base, and
fingerprinting its weights so that `--resume` can tell whether it changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lmtool.checkpoint import TOKENIZER, WEIGHTS, read_run_config
from lmtool.errors import BadInput


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_base(run: Path, output: Path | None = None) -> dict:
    """The base run's config.json, refusing what is not a complete language model, and
    an `output` (the fine-tune's -o) that names the base run itself."""
    run = Path(run)
    if not run.exists():
        raise BadInput(f"{run} does not exist", "pass a run made by lmtool pretrain")
    config = read_run_config(run)
    if config.get("task", "lm") != "lm":
        raise BadInput(f"{run} is a {config.get('task')}, not a language model",
                       "fine-tune a run made by lmtool pretrain or lmtool finetune lm")
    for name in (WEIGHTS, TOKENIZER):
        if not (run / name).is_file():
            raise BadInput(f"{run / name} is missing", "the base run is incomplete")
    if output is not None and run.resolve() == Path(output).resolve():
        raise BadInput("-o must name a new run, not the base run", "pass another -o")
    return config
