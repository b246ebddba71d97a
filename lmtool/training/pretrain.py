"""`pretrain`: token shards → a trained language model in a run directory.

This module wires the pieces together: configs, shards and tokenizer checks, the model,
the batch sources, the objective, the optimiser and the trainer, with the run
directory's plumbing from training/run.py. Display is left to the caller's callbacks:
library code never prints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lmtool.checkpoint import read_run_config
from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig
from lmtool.rundir import claim_run
from lmtool.training.config import MODEL_FIELDS, TrainConfig, resolve_configs, validate_train_config
from lmtool.training.run import RunResult
from lmtool.training.trainer import Callback

PretrainResult = RunResult  # what `pretrain` returns (and `finetune_lm`, with more)

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


def resume_configs(run_dir: Path, given: dict) -> tuple[dict, ModelConfig, TrainConfig]:
    """The saved configs, with only what a resumed run may change taken from `given`
    (field → value, None: not given); BadInput naming every flag that would change more."""
    saved = read_run_config(run_dir)
    model = ModelConfig.from_dict(saved["model"])
    train = TrainConfig.from_dict(saved.get("training", {}))
    given = {k: v for k, v in given.items() if v is not None}
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
    with claim_run(output, resume=resume, force=force):
        return _pretrain(data, output, objective=objective, arch=arch, preset=preset,
                         overrides=overrides, config_file=config_file, tokenizer=tokenizer,
                         resume=resume, callbacks=callbacks, sample_chars=sample_chars)


def _pretrain(data: Path, output: Path, *, objective: str | None, arch: str | None,
              preset: str | None, overrides: dict | None, config_file: Path | None,
              tokenizer: Path | None, resume: bool, callbacks: Sequence[Callback],
              sample_chars: int) -> PretrainResult:
    import torch

    from lmtool.checkpoint import TrainerState
    from lmtool.device import resolve_device, resolve_precision
    from lmtool.models import build_model
    from lmtool.text.shards import open_shards
    from lmtool.text.tokenizer import find_tokenizer_file, load_tokenizer, tokenizer_sha256
    from lmtool.training import distributed, run
    from lmtool.training.data import lm_sources
    from lmtool.training.objectives import make_objective
    from lmtool.training.trainer import Trainer

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
        from lmtool.training.config import read_config_file

        given = {**(read_config_file(config_file) if config_file else {}), **overrides,
                 "objective": objective, "arch": arch}
        saved, model_config, train_config = resume_configs(output, given)
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
        if resume:
            model, state, rows = run.load_for_resume(output, device, ctx)
            resumed_from: int | None = state.step
        else:
            torch.manual_seed(train_config.seed)  # the initial weights
            model = build_model(model_config).to(device)
            state, rows, resumed_from = TrainerState(), [], None
        model.train()
        source, eval_source = lm_sources(model, objective_, train_config, shards.train,
                                         shards.val, ctx.rank, ctx.world_size)
        run_config = {
            "task": "lm",
            "arch": model_config.arch,
            "objective": model_config.objective,
            "preset": saved.get("preset") if resume else preset,
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
        metrics = run.MetricsLog(output, rows, live=resume)
        checkpointer = run.Checkpointer(output, run_config, tok_file.read_text("utf-8"), metrics)
        trainer = Trainer(
            model, objective_, source, train_config, device,
            run.lm_optimizer(model, train_config, device), dtype, eval_source=eval_source,
            dist=ctx, state=state, callbacks=[metrics, checkpointer, *callbacks],
        )
        reason = run.fit(trainer, output, fresh=not resume)
        text = None
        if ctx.is_main and reason != "done":
            text = run.sample_text(model, tok, sample_chars, train_config.seed)
        return run.result(trainer, output, reason, metrics, resumed_from, text)
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

