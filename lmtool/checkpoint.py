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
safetensors library, which reads nothing but safetensors: a pickle (which can run code
when loaded) is refused as a corrupt file by construction, and stray files are never read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmtool import __version__
from lmtool.errors import BadInput
from lmtool.fsio import atomic_dir, recover

if TYPE_CHECKING:
    import torch

FORMAT = "lmtool-run"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TRAINER = "trainer"
METRICS = "metrics.jsonl"
STATE = "state.json"
OPTIMIZER = "optimizer.safetensors"
TENSORS = "tensors.safetensors"  # TrainerState.tensors


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


@dataclass
class Checkpoint:
    path: Path
    config: dict  # the whole config.json
    model: torch.nn.Module
    tokenizer: Any  # tokenizers.Tokenizer
    trainer: TrainerState | None  # None unless asked for
    metrics: list[dict]


def is_run(path: Path) -> bool:
    """True when `path` holds an lmtool run (a config.json of our format)."""
    recover(Path(path))
    try:
        return json.loads((Path(path) / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _safetensors_errors(path: Path) -> Iterator[None]:
    """The library's SafetensorError as ours: an I/O failure as the OSError it wraps
    (Rust's "(os error 28)"), anything else as a corrupt file."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:  # not safetensors, truncated, disk full, ...
        found = re.search(r"\(os error (\d+)\)", str(e))
        if found:
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(path)) from None
        raise BadInput(f"{path} is not a readable safetensors file ({e})",
                       "the checkpoint is corrupt or not lmtool's; lmtool never loads "
                       "pickles") from None


def _need(path: Path) -> Path:
    if not path.is_file():
        raise BadInput(f"{path} is missing", "the checkpoint is incomplete")
    return path


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with _safetensors_errors(path):
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    with _safetensors_errors(_need(path)):
        return load_file(str(path))


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Name → shape of every tensor in a safetensors file, read from its header alone."""
    from safetensors import safe_open

    with _safetensors_errors(_need(path)), safe_open(str(path), framework="pt") as f:
        return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118


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
    replacing what is at `run_dir` is allowed (`check_run_output`) and keeps other
    writers out (`lmtool.runlock`): temporaries a killed save left are deleted here.
    """
    from safetensors.torch import save_model

    run_dir = Path(run_dir)
    with atomic_dir(run_dir, force=True, clean_stale=True) as tmp:
        _write_json(tmp / CONFIG, {"format": FORMAT, "version": VERSION,
                                   "lmtool_version": __version__, **config})
        with _safetensors_errors(tmp / WEIGHTS):
            save_model(model, str(tmp / WEIGHTS))  # tied weights stored once
        (tmp / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")
        write_metrics(tmp / METRICS, metrics)
        if trainer is not None:
            (tmp / TRAINER).mkdir()
            state: dict[str, Any] = {"step": trainer.step, "epoch": trainer.epoch,
                                     "tokens_seen": trainer.tokens_seen,
                                     "elapsed_s": trainer.elapsed_s, "extra": trainer.extra}
            if trainer.optimizer is not None:
                tensors, state["optimizer"] = _split_optimizer(trainer.optimizer)
                _write_tensors(tensors, tmp / TRAINER / OPTIMIZER)
            if trainer.tensors:
                _write_tensors(trainer.tensors, tmp / TRAINER / TENSORS)
            _write_json(tmp / TRAINER / STATE, state)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_need(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is corrupt (not valid JSON: {e})") from None


def read_run_config(run_dir: Path) -> dict:
    """config.json of a run, checked to be one; BadInput for anything else."""
    run_dir = Path(run_dir)
    recover(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir} is not a directory", "pass a run made by lmtool pretrain")
    if not (run_dir / CONFIG).is_file():
        raise BadInput(f"{run_dir} is not an lmtool run (no {CONFIG})",
                       "pass a run made by lmtool pretrain")
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
            optimizer = _join_optimizer(_read_tensors(folder / OPTIMIZER), state["optimizer"])
        return TrainerState(
            step=int(state["step"]), epoch=float(state["epoch"]),
            tokens_seen=int(state["tokens_seen"]), elapsed_s=float(state["elapsed_s"]),
            optimizer=optimizer,
            tensors=_read_tensors(folder / TENSORS) if (folder / TENSORS).exists() else {},
            extra=dict(state.get("extra", {})),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{folder / STATE} is corrupt ({e})") from None


def run_task(config: dict) -> str:
    """What a run holds: "lm" (pretrain, finetune lm; runs from before the field say
    nothing) or "classifier" (finetune classifier)."""
    return config.get("task", "lm")


def check_task(run_dir: Path, config: dict, task: str | None) -> None:
    """Refuse a run of another task than the command needs (None: any)."""
    actual = run_task(config)
    if task is None or actual == task:
        return
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
    config = read_run_config(run_dir)
    check_task(run_dir, config, task)
    _need(run_dir / TOKENIZER)
    if run_task(config) == "classifier":
        from lmtool.models.classifier import build_classifier

        if "classifier" not in config:
            raise BadInput(f"{run_dir / CONFIG} has no classifier config",
                           "the checkpoint is corrupt")
        model = build_classifier(config["model"], config["classifier"])
    else:
        model = build_model(ModelConfig.from_dict(config["model"]))
    try:
        with _safetensors_errors(_need(run_dir / WEIGHTS)):
            load_model(model, str(run_dir / WEIGHTS), strict=True)
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        raise BadInput(f"{run_dir / WEIGHTS} does not match {run_dir / CONFIG}: "
                       + " ".join(str(e).split())[:300],
                       "the checkpoint is corrupt or was edited") from None
    model.to(torch.device(device)).eval()
    tokenizer = load_tokenizer(run_dir / TOKENIZER)
    state = read_trainer_state(run_dir) if trainer else None
    return Checkpoint(run_dir, config, model, tokenizer, state, read_metrics(run_dir))

