"""`info`: what a run is and how its training went, read without building the model."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from lmtool.errors import BadInput


def count_parameters(weights: Path) -> int:
    """Parameters stored in a safetensors file, from its header alone (tied ones once)."""
    from lmtool.checkpoint import _check_safetensors

    _check_safetensors(weights)
    with open(weights, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise BadInput(f"{weights} is corrupt (bad header)") from None
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def run_info(run: Path) -> dict:
    """Config, parameter count, tokenizer, data and training history of a run."""
    from lmtool.checkpoint import (
        TOKENIZER,
        TRAINER,
        WEIGHTS,
        _refuse_pickles,
        read_metrics,
        read_run_config,
        read_trainer_state,
    )
    from lmtool.training.pretrain import tokenizer_kind

    run = Path(run)
    config = read_run_config(run)
    _refuse_pickles(run)
    if not (run / WEIGHTS).is_file():
        raise BadInput(f"{run / WEIGHTS} is missing", "the checkpoint is incomplete")
    rows = read_metrics(run)
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "val_loss" in r]
    history: dict = {}
    if (run / TRAINER).is_dir():
        state = read_trainer_state(run)
        history.update(step=state.step, epoch=state.epoch, tokens_seen=state.tokens_seen,
                       elapsed_s=state.elapsed_s)
    history["last_loss"] = train_rows[-1]["loss"] if train_rows else None
    history["last_val_loss"] = eval_rows[-1]["val_loss"] if eval_rows else None
    history["best_val_loss"] = min(r["val_loss"] for r in eval_rows) if eval_rows else None
    for key in ("val_perplexity", "val_accuracy"):
        if eval_rows and key in eval_rows[-1]:
            history[f"last_{key}"] = eval_rows[-1][key]
    tokenizer = dict(config.get("tokenizer", {}))
    tokenizer.setdefault("kind", tokenizer_kind(run / TOKENIZER))
    return {
        "run": str(run),
        "arch": config.get("arch"),
        "objective": config.get("objective"),
        "preset": config.get("preset"),
        "lmtool_version": config.get("lmtool_version"),
        "parameters": count_parameters(run / WEIGHTS),
        "model": config["model"],
        "training": config.get("training", {}),
        "tokenizer": tokenizer,
        "data": config.get("data", {}),
        "history": history,
    }
