"""`info`: what a run is and how its training went, read without building the model."""

from __future__ import annotations

import math
from pathlib import Path


def count_parameters(weights: Path) -> int:
    """Parameters stored in a safetensors file, from its header alone (tied ones once)."""
    from lmtool.tensorfiles import tensor_shapes

    return sum(math.prod(shape) for shape in tensor_shapes(weights).values())


def run_info(run: Path) -> dict:
    """Config, parameter count, tokenizer, data and training history of a run (its
    model config without the other backbone's fields)."""
    from lmtool.checkpoint import (
        TOKENIZER,
        TRAINER,
        WEIGHTS,
        read_metrics,
        read_run_config,
        read_trainer_state,
    )
    from lmtool.models.config import ARCH_FIELDS
    from lmtool.text.tokenizer import tokenizer_kind

    run = Path(run)
    config = read_run_config(run)
    arch = config["model"].get("arch")
    foreign = {f for a, names in ARCH_FIELDS.items() if a != arch for f in names}
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
    # Whatever else the objective reported at the last evaluation (perplexity, accuracy...)
    for key, value in (eval_rows[-1] if eval_rows else {}).items():
        if key.startswith("val_") and key not in ("val_loss", "val_tokens"):
            history[f"last_{key}"] = value
    tokenizer = dict(config.get("tokenizer", {}))
    tokenizer.setdefault("kind", tokenizer_kind(run / TOKENIZER))
    extra = {}
    if config.get("task") == "classifier":
        extra["classifier"] = classifier_info(config, eval_rows)
    elif config.get("best"):  # a fine-tuned LM keeps its best held-out weights
        extra["kept"] = config["best"]
    return {
        "run": str(run),
        "base": config.get("base"),  # the run it was fine-tuned from, if it was
        "arch": config.get("arch"),
        "objective": config.get("objective"),
        "preset": config.get("preset"),
        "lmtool_version": config.get("lmtool_version"),
        "parameters": count_parameters(run / WEIGHTS),
        "model": {k: v for k, v in config["model"].items() if k not in foreign},
        "training": config.get("training", {}),
        "tokenizer": tokenizer,
        "data": config.get("data", {}),
        "history": history,
        "task": config.get("task", "lm"),
        **({"pretraining": config["pretraining"]} if "pretraining" in config else {}),
        **extra,
    }


def classifier_info(config: dict, eval_rows: list[dict]) -> dict:
    """A classifier's labels, the language model it came from, the best epoch and one
    row per epoch (held-out loss, accuracy, macro-F1, layer groups training)."""
    keys = ("epoch", "step", "trainable_groups", "val_loss", "val_accuracy", "val_macro_f1",
            "elapsed_s")
    return {
        "labels": config.get("classifier", {}).get("labels", []),
        "base": config.get("base", {}),
        "best": config.get("best"),
        "epochs": [{k: r.get(k) for k in keys} for r in eval_rows if r.get("step")],
    }
