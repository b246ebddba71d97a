"""`pretrain`: token shards → a trained language model in a run directory.

This module wires the pieces together: configs, shards and tokenizer checks, the model,
the window sampler, the objective, the trainer, and two callbacks of its own (metrics
rows into RUN/metrics.jsonl, checkpoints into RUN). Display is left to the caller's
callbacks: library code never prints.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmtool.checkpoint import (
    METRICS,
    TrainerState,
    load_checkpoint,
    read_run_config,
    save_checkpoint,
)
from lmtool.errors import BadInput, RuntimeFailure
from lmtool.fsio import atomic_file
from lmtool.models.config import ModelConfig
from lmtool.rundir import claim_run
from lmtool.training.config import MODEL_FIELDS, TrainConfig, resolve_configs, validate_train_config
from lmtool.training.trainer import Callback, Trainer

# When to stop. They count from the start of the run (steps, seconds, epochs in total),
# and a limit given with --resume replaces all the saved ones: `--resume --max-steps
# 450` after a `--max-time 30` run trains to step 450, whatever the time.
LIMITS = ("max_steps", "max_time", "epochs")
# Fields of a finished run that --resume may change: when to stop, how often to log,
# evaluate and save, and where/how to compute. The rest would make a different run.
RESUMABLE_FIELDS = {
    *LIMITS, "eval_every", "eval_batches", "save_every", "log_every", "device",
    "precision", "compile",
}


@dataclass
class PretrainResult:
    run_dir: Path
    step: int  # optimiser steps done in total
    tokens_seen: int
    elapsed_s: float
    stop_reason: str  # "steps" or "time"; "done": a resumed run had nothing left to do
    num_parameters: int
    last_loss: float | None  # the last logged training loss
    last_eval: dict | None  # the last evaluation row (val_loss, ...)
    resumed_from: int | None  # the step a --resume started from
    sample: str | None  # a short text sampled from a causal model
    is_main: bool = True  # False on the other ranks under torchrun: they report nothing
    limits: str = ""  # the limits the run trained to, e.g. "450 steps / 30 s"


class MetricsLog(Callback):
    """Keeps every metrics row; appends each to RUN/metrics.jsonl once RUN is this run's.

    Before the first checkpoint RUN may not exist (or still hold what --force replaces),
    so rows wait in memory; every checkpoint writes all rows so far.
    """

    def __init__(self, run_dir: Path, rows: list[dict], live: bool):
        self.path = run_dir / METRICS
        self.rows = rows
        self.live = live
        self.last_loss: float | None = None

    def _append(self, row: dict) -> None:
        self.rows.append(row)
        if self.live:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def on_train_row(self, trainer, row):
        self.last_loss = row["loss"]
        self._append(row)

    def on_eval(self, trainer, row):
        self._append(row)


class Checkpointer(Callback):
    def __init__(self, run_dir: Path, config: dict, tokenizer_json: str, metrics: MetricsLog):
        self.run_dir, self.config, self.tokenizer_json = run_dir, config, tokenizer_json
        self.metrics = metrics

    def on_save(self, trainer, state: TrainerState):
        save_checkpoint(
            self.run_dir,
            model=trainer.model,
            config=self.config,
            tokenizer_json=self.tokenizer_json,
            metrics=self.metrics.rows,
            trainer=state,
        )
        self.metrics.live = True


def _resume_configs(run_dir: Path, overrides: dict, config_file: Path | None,
                    objective: str | None, arch: str | None, preset: str | None
                    ) -> tuple[dict, ModelConfig, TrainConfig]:
    """The saved configs, with only what a resumed run may change overridden."""
    from lmtool.training.config import read_config_file

    saved = read_run_config(run_dir)
    model = ModelConfig.from_dict(saved["model"])
    train = TrainConfig.from_dict(saved.get("training", {}))
    given = {**(read_config_file(config_file) if config_file else {}),
             **{k: v for k, v in overrides.items() if v is not None}}
    given.update({k: v for k, v in (("objective", objective), ("arch", arch)) if v})
    if any(given.get(k) is not None for k in LIMITS):
        for key in LIMITS:
            setattr(train, key, given.pop(key, None))
    conflicts = []
    for key, value in given.items():
        if key in RESUMABLE_FIELDS:
            setattr(train, key, value)
        elif key in MODEL_FIELDS or key in ("objective", "arch"):
            if getattr(model, key) != value:
                conflicts.append(f"--{key.replace('_', '-')} {value} (the run has "
                                 f"{getattr(model, key)})")
        elif key != "preset" and getattr(train, key, value) != value:
            conflicts.append(f"--{key.replace('_', '-')} {value} (the run has "
                             f"{getattr(train, key)})")
    if conflicts:
        raise BadInput(
            "--resume cannot change the run's settings: " + "; ".join(conflicts),
            "drop those flags, or start a new run with -o elsewhere",
        )
    validate_train_config(train)
    return saved, model, train


def pretrain(
    data: Path,
    output: Path,
    *,
    objective: str | None = None,
    arch: str | None = None,
    preset: str | None = None,
    overrides: dict | None = None,
    config_file: Path | None = None,
    tokenizer: Path | None = None,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    sample_chars: int = 200,
) -> PretrainResult:
    """Train a language model on the shards in `data`, checkpointing into `output`.

    `overrides` maps field names (layers, heads, dim, context, dropout, batch_size, lr,
    warmup, max_steps, ...) to values; None means "not given". Precedence: the preset,
    then `config_file`, then `overrides`. Under torchrun this runs DDP (rank 0 writes).
    `output` is locked for the whole run: a second process is refused.
    """
    # Rank 0 alone writes the run, so it alone holds the lock (torchrun sets RANK).
    with claim_run(output, resume=resume, force=force, lock=os.environ.get("RANK", "0") == "0"):
        return _pretrain(data, output, objective=objective, arch=arch, preset=preset,
                         overrides=overrides, config_file=config_file, tokenizer=tokenizer,
                         resume=resume, callbacks=callbacks, sample_chars=sample_chars)


def _pretrain(data: Path, output: Path, *, objective: str | None, arch: str | None,
              preset: str | None, overrides: dict | None, config_file: Path | None,
              tokenizer: Path | None, resume: bool, callbacks: Sequence[Callback],
              sample_chars: int) -> PretrainResult:
    import torch

    from lmtool.device import resolve_device, resolve_precision
    from lmtool.models import build_model
    from lmtool.text.shards import open_shards
    from lmtool.text.tokenizer import find_tokenizer_file, load_tokenizer, tokenizer_sha256
    from lmtool.training import distributed
    from lmtool.training.batches import WindowSampler
    from lmtool.training.objectives import make_objective

    data, output, overrides = Path(data), Path(output), dict(overrides or {})
    shards = open_shards(data)
    tok_file = find_tokenizer_file(Path(tokenizer) if tokenizer else shards.tokenizer_path)
    tok = load_tokenizer(tok_file)
    sha = tokenizer_sha256(tok)
    if sha != shards.tokenizer_sha256:
        raise BadInput(
            f"the shards in {data} were made with another tokenizer than {tok_file}",
            "pass the tokenizer the shards were encoded with, or re-encode them",
        )
    if resume:
        saved, model_config, train_config = _resume_configs(
            output, overrides, config_file, objective, arch, preset)
        if saved.get("tokenizer", {}).get("sha256") != sha:
            raise BadInput(f"the run in {output} was trained with another tokenizer than "
                           f"the shards in {data}", "resume with the run's own data")
    else:
        model_config, train_config, preset = resolve_configs(
            objective=objective, arch=arch, preset=preset, overrides=overrides,
            config_file=config_file, vocab_size=tok.get_vocab_size(),
        )
    if model_config.vocab_size != shards.vocab_size:
        raise BadInput(f"the tokenizer has {model_config.vocab_size} tokens but the shards "
                       f"say {shards.vocab_size}", "re-encode the shards")
    device = resolve_device(train_config.device)
    dtype = resolve_precision(train_config.precision, device)
    objective_ = make_objective(model_config)

    ctx, device = distributed.setup(device)
    try:
        sampler = WindowSampler(
            shards.train, model_config.context, objective_.window(model_config.context),
            train_config.batch_size, train_config.seed, ctx.rank, ctx.world_size,
        )
        if resume:
            ckpt = load_checkpoint(output, device, trainer=True)
            model, state = ckpt.model, ckpt.trainer
            assert state is not None
            rows = [r for r in ckpt.metrics if r.get("step", 0) <= state.step]
            if ctx.is_main:  # forget rows logged after the checkpoint, before the crash
                with atomic_file(output / METRICS, "w") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in rows))
            resumed_from: int | None = state.step
        else:
            torch.manual_seed(train_config.seed)  # the initial weights
            model = build_model(model_config).to(device)
            state, rows, resumed_from = TrainerState(), [], None
        model.train()
        run_config = {
            "arch": model_config.arch,
            "objective": model_config.objective,
            "preset": preset,
            "model": model_config.to_dict(),
            "training": train_config.to_dict(),
            "tokenizer": {"sha256": sha, "vocab_size": model_config.vocab_size,
                          "kind": tokenizer_kind(tok_file)},
            "data": {
                "path": str(data.resolve()),
                "train_tokens": int(len(shards.train)),
                "val_tokens": int(len(shards.val)) if shards.val is not None else 0,
                "sources": shards.meta.get("sources", []),
                "tokenizer_sha256": shards.tokenizer_sha256,
            },
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }
        if resume:
            run_config["preset"] = saved.get("preset")
        metrics = MetricsLog(output, rows, live=resume)
        checkpointer = Checkpointer(output, run_config, tok_file.read_text("utf-8"), metrics)
        trainer = Trainer(
            model, objective_, sampler, train_config, device, dtype,
            val_data=shards.val, dist=ctx, state=state,
            callbacks=[metrics, checkpointer, *callbacks],
        )
        try:
            reason = trainer.fit()
        except RuntimeFailure:
            if not resume and ctx.is_main and not trainer.last_saved_step:
                # Only the untrained step-0 checkpoint was written: leave nothing.
                shutil.rmtree(output, ignore_errors=True)
            raise
        text = None
        if ctx.is_main and sample_chars and reason != "done" and model_config.objective == "causal":
            from lmtool.inference.sampling import sample

            model.eval()
            text = sample(model, tok, "", max_new_tokens=sample_chars, seed=train_config.seed,
                          stop_at_eos=False)
            text = text[:sample_chars]
        return PretrainResult(
            run_dir=output,
            step=trainer.state.step,
            tokens_seen=trainer.state.tokens_seen,
            elapsed_s=trainer.state.elapsed_s,
            stop_reason=reason,
            num_parameters=run_config["num_parameters"],
            last_loss=metrics.last_loss,
            last_eval=trainer.last_eval or next(
                (r for r in reversed(metrics.rows) if "val_loss" in r), None),
            resumed_from=resumed_from,
            sample=text,
            is_main=ctx.is_main,
            limits=trainer.limits.describe(),
        )
    finally:
        distributed.teardown(ctx)


def tokenizer_kind(path: Path) -> str:
    """bpe, wordpiece, unigram or char (a word-level model over single characters)."""
    try:
        spec = json.loads(Path(path).read_text("utf-8"))
        kind = str(spec["model"]["type"]).lower()
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    return "char" if kind == "wordlevel" else kind

