"""The on-disk run directory (DESIGN.md "The checkpoint"): JSON + safetensors, never pickle.

    RUN/config.json        model + training config, objective, arch, lmtool version,
                           tokenizer sha256, a summary of the data
    RUN/model.safetensors  weights
    RUN/tokenizer.json     the tokenizer the model was trained with
    RUN/trainer/           state.json (step, epoch, tokens, elapsed, optimiser hyper-
                           parameters) + optimizer.safetensors + tensors.safetensors
    RUN/metrics.jsonl      one JSON object per logged step / evaluation

A save builds the whole directory beside RUN and swaps it in atomically (fsio.atomic_dir),
so a kill at any moment leaves the last complete checkpoint. Tensors are read only by the
safetensors library (lmtool.tensorfiles), which reads nothing but safetensors: a pickle
(which can run code when loaded) is refused as a corrupt file by construction, and stray
files are never read.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmtool import __version__
from lmtool.errors import BadInput
from lmtool.fsio import atomic_dir, recover

# The file names live in a leaf module (runfiles.py); they stay importable from here.
from lmtool.runfiles import (
    CONFIG,
    FORMAT,
    METRICS,
    OPTIMIZER,
    STATE,
    TENSORS,
    TOKENIZER,
    TRAINER,
    VERSION,
    WEIGHTS,
)
from lmtool.tensorfiles import need_file, read_tensors, safetensors_errors, write_tensors

if TYPE_CHECKING:
    import torch


@dataclass
class TrainerState:
    """Where training stands, plus what exact resumption needs."""

    step: int = 0  # optimiser steps done
    epoch: float = 0.0  # passes over the training windows done (fractional)
    tokens_seen: int = 0  # training tokens consumed, all ranks together
    elapsed_s: float = 0.0  # seconds of training so far, across resumptions
    optimizer: dict | None = None  # {"adamw": state_dict(), "muon": ...} by optimiser
    # Other tensors exact resumption needs (a stateful model's carried state). No RNG
    # state: the trainer reseeds every random draw from (seed, step, rank).
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # JSON-able odds and ends (scaler scale)


_COUNTS = {"step": int, "epoch": float, "tokens_seen": int, "elapsed_s": float}


@dataclass
class Checkpoint:
    path: Path
    config: dict  # the whole config.json
    model: torch.nn.Module
    tokenizer: Any  # tokenizers.Tokenizer
    trainer: TrainerState | None  # None unless asked for
    metrics: list[dict]


def _split_optimizer(states: dict[str, dict]) -> tuple[dict[str, torch.Tensor], dict]:
    """{name: optimizer.state_dict()} → (tensors for safetensors, named
    "<optimizer>.<param index>.<key>" as in "adamw.3.exp_avg"; the rest for state.json)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, dict] = {}
    for name, state in states.items():
        scalars: dict[str, dict] = {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}.{index}.{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, meta


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, dict]:
    """The inverse of _split_optimizer; KeyError/TypeError when the parts do not fit."""
    states: dict[str, dict] = {}
    for name, part in meta.items():
        groups = [{k: tuple(v) if k in ("betas", "ns_coefficients") else v  # JSON made lists
                   for k, v in group.items()} for group in part["param_groups"]]
        scalars = part.get("scalars", {})
        states[name] = {"state": {int(i): dict(entry) for i, entry in scalars.items()},
                        "param_groups": groups}
    for full, value in tensors.items():
        name, index, key = full.split(".", 2)
        states[name]["state"].setdefault(int(index), {})[key] = value
    return states


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_metrics(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def save_checkpoint(run_dir: Path, *, model: torch.nn.Module, config: dict,
                    tokenizer_json: str, metrics: list[dict],
                    trainer: TrainerState | None = None) -> None:
    """Write a complete checkpoint to `run_dir`, replacing any previous one atomically.

    `model` must be the plain module (not DDP / torch.compile wrapped). `config` is
    stored as config.json with the format fields added. The caller decides whether
    replacing what is at `run_dir` is allowed (`lmtool.rundir.check_run_output`) and keeps other
    writers out (`lmtool.rundir`): temporaries a killed save left are deleted here.
    """
    from safetensors.torch import save_model

    run_dir = Path(run_dir)
    with atomic_dir(run_dir, force=True, clean_stale=True) as tmp:
        _write_json(tmp / CONFIG, {"format": FORMAT, "version": VERSION,
                                   "lmtool_version": __version__, **config})
        with safetensors_errors(tmp / WEIGHTS):
            save_model(model, str(tmp / WEIGHTS))  # tied weights stored once
        (tmp / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")
        write_metrics(tmp / METRICS, metrics)
        if trainer is not None:
            (tmp / TRAINER).mkdir()
            state: dict[str, Any] = {k: getattr(trainer, k) for k in (*_COUNTS, "extra")}
            if trainer.optimizer is not None:
                tensors, state["optimizer"] = _split_optimizer(trainer.optimizer)
                write_tensors(tensors, tmp / TRAINER / OPTIMIZER)
            if trainer.tensors:
                write_tensors(trainer.tensors, tmp / TRAINER / TENSORS)
            _write_json(tmp / TRAINER / STATE, state)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(need_file(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is corrupt (not valid JSON: {e})") from None


def read_run_config(run_dir: Path, made_by: str = "lmtool pretrain") -> dict:
    """config.json of a run, checked to be one; BadInput for anything else, whose hint
    names the command that makes the kind of run wanted (`made_by`)."""
    run_dir = Path(run_dir)
    recover(run_dir)
    if not (run_dir / CONFIG).is_file():
        what = f"an lmtool run (no {CONFIG})" if run_dir.is_dir() else "a directory"
        raise BadInput(f"{run_dir} is not {what}", f"pass a run made by {made_by}")
    config = _read_json(run_dir / CONFIG)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BadInput(f"{run_dir / CONFIG} does not describe an lmtool run")
    if "model" not in config:
        raise BadInput(f"{run_dir / CONFIG} has no model config", "the checkpoint is corrupt")
    return config


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows; a torn last line (a kill mid-write) is dropped."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_trainer_state(run_dir: Path) -> TrainerState:
    folder = Path(run_dir) / TRAINER
    if not folder.is_dir():
        raise BadInput(f"{folder} is missing", "this run cannot be resumed")
    state = _read_json(folder / STATE)
    try:
        optimizer = None
        if "optimizer" in state:
            optimizer = _join_optimizer(read_tensors(folder / OPTIMIZER), state["optimizer"])
        return TrainerState(
            **{k: kind(state[k]) for k, kind in _COUNTS.items()}, optimizer=optimizer,
            tensors=read_tensors(folder / TENSORS) if (folder / TENSORS).exists() else {},
            extra=dict(state.get("extra", {})),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{folder / STATE} is corrupt ({e})") from None


def run_task(config: dict) -> str:
    """What a run holds: "lm" (pretrain, finetune lm; runs from before the field say
    nothing), "classifier" (finetune classifier) or "seq2seq" (an encoder–decoder,
    pretrain --objective seq2seq)."""
    return config.get("task", "lm")


def check_task(run_dir: Path, config: dict, task: str | None) -> None:
    """Refuse a run of another task than the command needs (None: any)."""
    actual = run_task(config)
    if task is None or actual == task:
        return
    if actual == "seq2seq":
        raise BadInput(f"{run_dir} is a sequence-to-sequence (encoder–decoder) run",
                       f"translate with: lmtool generate {run_dir} TEXT, or score it with "
                       f"lmtool evaluate {run_dir} PAIRS")
    if task == "seq2seq":
        raise BadInput(f"{run_dir} is a {'language model' if actual == 'lm' else actual}, "
                       "not a sequence-to-sequence run", "make one with: lmtool pretrain "
                       "PAIRS --objective seq2seq --tokenizer TOK -o RUN")
    if task == "classifier":
        raise BadInput(f"{run_dir} is a language model, not a classifier",
                       f"make one with: lmtool finetune classifier {run_dir} LABELLED -o CLF")
    raise BadInput(f"{run_dir} is a {actual}, not a language model",
                   "this command needs a run made by lmtool pretrain or lmtool finetune lm")


def load_checkpoint(run_dir: Path, device: str | torch.device = "cpu", *,
                    trainer: bool = False, task: str | None = "lm") -> Checkpoint:
    """Load a run: model (eval mode, on `device`), config, tokenizer, metrics, and with
    `trainer=True` what resuming needs (optimiser state, ...). Never unpickles anything.
    A run of another `task` than asked for is refused (None accepts any)."""
    import torch
    from safetensors.torch import load_model

    from lmtool.models import ModelConfig, build_model
    from lmtool.text.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    made_by = {"classifier": "lmtool finetune classifier",
               "seq2seq": "lmtool pretrain --objective seq2seq"}.get(task or "", "lmtool pretrain")
    config = read_run_config(run_dir, made_by)
    check_task(run_dir, config, task)
    need_file(run_dir / TOKENIZER)
    if run_task(config) == "classifier":
        from lmtool.models.classifier import build_classifier

        if "classifier" not in config:
            raise BadInput(f"{run_dir / CONFIG} has no classifier config",
                           "the checkpoint is corrupt")
        model = build_classifier(config["model"], config["classifier"])
    elif run_task(config) == "seq2seq":
        from lmtool.models import build_seq2seq

        model = build_seq2seq(config["model"])
    else:
        model = build_model(ModelConfig.from_dict(config["model"]))
    try:
        with safetensors_errors(need_file(run_dir / WEIGHTS)):
            load_model(model, str(run_dir / WEIGHTS), strict=True)
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        raise BadInput(f"{run_dir / WEIGHTS} does not match {run_dir / CONFIG}: "
                       + " ".join(str(e).split())[:300],
                       "the checkpoint is corrupt or was edited") from None
    model.to(torch.device(device)).eval()
    # An imported run's tokenizer keeps its own special ids (recorded in its model config).
    imported = bool(config["model"].get("specials"))
    tokenizer = load_tokenizer(run_dir / TOKENIZER, lmtool_specials=not imported)
    state = read_trainer_state(run_dir) if trainer else None
    return Checkpoint(run_dir, config, model, tokenizer, state, read_metrics(run_dir))

