"""The on-disk run directory (DESIGN.md "The checkpoint"): JSON + safetensors, never pickle.

    RUN/config.json        model + training config, objective, arch, lmtool version,
                           tokenizer sha256, a summary of the data
    RUN/model.safetensors  weights (loading never unpickles)
    RUN/tokenizer.json     the tokenizer the model was trained with
    RUN/trainer/           state.json (step, epoch, tokens, elapsed, optimiser hyper-
                           parameters) + optimizer.safetensors + tensors.safetensors
    RUN/metrics.jsonl      one JSON object per logged step / evaluation

A save builds the whole new directory in a temporary sibling, fsyncs it and swaps it
into place in one atomic step (renameat2 RENAME_EXCHANGE on Linux). Without that system
call it falls back to: rename RUN aside, rename the new one in, delete the old; loading
recovers the one instant when RUN is missing and only the aside copy exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmtool import __version__
from lmtool.errors import BadInput

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

    @property
    def model_config(self):
        return self.model.config


# --- paths -------------------------------------------------------------------------


def _aside(run_dir: Path) -> Path:
    return run_dir.with_name(f".{run_dir.name}.aside")


def _tmp_prefix(run_dir: Path) -> str:
    return f".{run_dir.name}.ckpt-"


def recover(run_dir: Path) -> None:
    """Finish a fallback swap that was cut short (RUN missing, its aside copy present)."""
    aside = _aside(run_dir)
    if not run_dir.exists() and aside.is_dir():
        os.rename(aside, run_dir)


def is_run(path: Path) -> bool:
    """True when `path` holds an lmtool run (a config.json of our format)."""
    path = Path(path)
    recover(path)
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# --- saving ------------------------------------------------------------------------


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _set_modes(root: Path) -> None:
    """mkdtemp makes 0700 and safetensors 0600; give the run the umask's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(OSError):
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
        with contextlib.suppress(OSError):
            fd = os.open(path, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _swap_in(tmp: Path, run_dir: Path) -> None:
    """Put the complete directory `tmp` at `run_dir`, atomically."""
    if not run_dir.exists() and not run_dir.is_symlink():
        os.rename(tmp, run_dir)
    elif _rename_exchange(tmp, run_dir):
        shutil.rmtree(tmp)  # now holds the previous checkpoint
    else:
        aside = _aside(run_dir)
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(run_dir, aside)
        os.rename(tmp, run_dir)  # a crash between these two: recover() renames back
        shutil.rmtree(aside)
    _fsync_dir(run_dir.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _split_optimizer(states: dict[str, dict]) -> tuple[dict[str, torch.Tensor], dict]:
    """{name: optimizer.state_dict()} → (tensors for safetensors, the rest for JSON).

    Tensor names are "<optimizer>.<param index>.<key>", e.g. "adamw.3.exp_avg".
    """
    import torch

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, dict] = {}
    for name, state in states.items():
        scalars: dict[str, dict] = {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{name}.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, meta


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, dict]:
    states: dict[str, dict] = {}
    for name, part in meta.items():
        if not isinstance(part, dict) or "param_groups" not in part:
            raise ValueError(f"optimizer {name!r} has no param_groups")
        state: dict[int, dict] = {}
        for index, entry in part.get("scalars", {}).items():
            state.setdefault(int(index), {}).update(entry)
        groups = [dict(g) for g in part["param_groups"]]
        for g in groups:
            for key in ("betas", "ns_coefficients"):  # tuples that JSON made lists
                if isinstance(g.get(key), list):
                    g[key] = tuple(g[key])
        states[name] = {"state": state, "param_groups": groups}
    for full, value in tensors.items():
        name, index, key = full.split(".", 2)
        if name not in states:
            raise ValueError(f"optimizer tensor {full} belongs to no optimizer in state.json")
        states[name]["state"].setdefault(int(index), {})[key] = value
    return states


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_metrics(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def save_checkpoint(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    config: dict,
    tokenizer_json: str,
    metrics: list[dict],
    trainer: TrainerState | None = None,
) -> None:
    """Write a complete checkpoint to `run_dir`, replacing any previous one atomically.

    `model` must be the plain module (not DDP / torch.compile wrapped). `config` is
    stored as config.json with the format fields added. The caller decides whether
    replacing what is at `run_dir` is allowed (see `check_run_output`).
    """
    from safetensors.torch import save_file, save_model

    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(run_dir)
    for stale in run_dir.parent.glob(_tmp_prefix(run_dir) + "*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a save that was killed
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(run_dir), dir=run_dir.parent))
    try:
        _write_json(tmp / CONFIG, {"format": FORMAT, "version": VERSION,
                                   "lmtool_version": __version__, **config})
        save_model(model, str(tmp / WEIGHTS))
        (tmp / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")
        write_metrics(tmp / METRICS, metrics)
        if trainer is not None:
            (tmp / TRAINER).mkdir()
            state: dict[str, Any] = {
                "step": trainer.step,
                "epoch": trainer.epoch,
                "tokens_seen": trainer.tokens_seen,
                "elapsed_s": trainer.elapsed_s,
                "extra": trainer.extra,
            }
            if trainer.optimizer is not None:
                tensors, state["optimizer"] = _split_optimizer(trainer.optimizer)
                save_file(tensors, str(tmp / TRAINER / OPTIMIZER))
            if trainer.tensors:
                save_file({k: v.detach().cpu().contiguous() for k, v in trainer.tensors.items()},
                          str(tmp / TRAINER / TENSORS))
            _write_json(tmp / TRAINER / STATE, state)
        _set_modes(tmp)
        _fsync_tree(tmp)
        _swap_in(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- loading -----------------------------------------------------------------------

_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch.save's zip archive
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle"}


def _refuse_pickles(run_dir: Path) -> None:
    """Refuse, before loading anything, a run holding pickle data: unpickling runs code."""
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        with open(path, "rb") as f:
            head = f.read(4)
        # A safetensors file opens with its header length, whose first byte is 0x80 for
        # one length in 256: judge those by their structure, not by that byte.
        pickled = head.startswith(_PICKLE_MAGIC) and not _is_safetensors(path)
        if pickled or path.suffix in _PICKLE_SUFFIXES:
            raise BadInput(
                f"{path} contains pickle data; lmtool refuses to load it (unpickling can run "
                "arbitrary code)",
                "remove the file; lmtool checkpoints hold only JSON and safetensors",
            )


def _is_safetensors(path: Path) -> bool:
    """A cheap structural check: an 8-byte header length, then a JSON object that fits."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            return 8 + header_len <= size and f.read(1) == b"{"
    except (OSError, struct.error):
        return False


def _check_safetensors(path: Path) -> None:
    """For a clear message instead of a Rust error."""
    if not _is_safetensors(path):
        raise BadInput(f"{path} is not a valid safetensors file (corrupt or truncated)")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BadInput(f"{path} is missing", "the checkpoint is incomplete")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is corrupt (not valid JSON: {e})") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise BadInput(f"{path} is missing", "the checkpoint is incomplete")
    _check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, OSError
        raise BadInput(f"{path} is corrupt: {e}") from None


def read_run_config(run_dir: Path) -> dict:
    """config.json of a run, checked to be one; BadInput for anything else."""
    run_dir = Path(run_dir)
    recover(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir} is not a directory", "pass a run made by lmtool pretrain")
    if not (run_dir / CONFIG).is_file():
        raise BadInput(
            f"{run_dir} is not an lmtool run (no {CONFIG})", "pass a run made by lmtool pretrain"
        )
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
            optimizer = _join_optimizer(_load_tensors(folder / OPTIMIZER), state["optimizer"])
        return TrainerState(
            step=int(state["step"]),
            epoch=float(state["epoch"]),
            tokens_seen=int(state["tokens_seen"]),
            elapsed_s=float(state["elapsed_s"]),
            optimizer=optimizer,
            tensors=_load_tensors(folder / TENSORS) if (folder / TENSORS).exists() else {},
            extra=dict(state.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError) as e:
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


def load_checkpoint(
    run_dir: Path, device: str | torch.device = "cpu", *, trainer: bool = False,
    task: str | None = "lm",
) -> Checkpoint:
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
    _refuse_pickles(run_dir)
    for name in (WEIGHTS, TOKENIZER):
        if not (run_dir / name).is_file():
            raise BadInput(f"{run_dir / name} is missing", "the checkpoint is incomplete")
    if run_task(config) == "classifier":
        from lmtool.models.classifier import build_classifier

        if "classifier" not in config:
            raise BadInput(f"{run_dir / CONFIG} has no classifier config",
                           "the checkpoint is corrupt")
        model = build_classifier(config["model"], config["classifier"])
    else:
        model = build_model(ModelConfig.from_dict(config["model"]))
    _check_safetensors(run_dir / WEIGHTS)
    try:
        load_model(model, str(run_dir / WEIGHTS), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise BadInput(
            f"{run_dir / WEIGHTS} does not match {run_dir / CONFIG}: "
            + " ".join(s.strip() for s in first[:3])[:300],
            "the checkpoint is corrupt or was edited",
        ) from None
    except Exception as e:  # SafetensorError on a damaged file
        raise BadInput(f"{run_dir / WEIGHTS} is corrupt: {e}") from None
    model.to(torch.device(device)).eval()
    tokenizer = load_tokenizer(run_dir / TOKENIZER)
    state = read_trainer_state(run_dir) if trainer else None
    return Checkpoint(run_dir, config, model, tokenizer, state, read_metrics(run_dir))


def check_run_output(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to train into a directory that holds something, unless told what to do."""
    run_dir = Path(run_dir)
    recover(run_dir)
    if resume:
        if not is_run(run_dir):
            raise BadInput(
                f"--resume: {run_dir} holds no run to resume",
                "start a new run without --resume",
            )
        return
    if run_dir.exists() and not force and (run_dir.is_file() or any(run_dir.iterdir())):
        what = "a different run" if is_run(run_dir) else "other files"
        raise BadInput(
            f"{run_dir} already holds {what}",
            "pass --resume to continue it or --force to replace it",
        )
