"""`pretrain`: token shards → a trained language model in a run directory.

What is particular to pre-training: the shards and their tokenizer, the configs from a
preset, a --config file and the flags, a new model (or the one being resumed), the LM
batch sources and objective, and a short sample at the end. The run builder
(training/builder.py) does the rest. Display is left to the caller's callbacks:
library code never prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmtool.errors import BadInput
from lmtool.training.builder import Env, Parts, RunPlan, build_run
from lmtool.training.flags import TrainFlags
from lmtool.training.run import RunResult
from lmtool.training.trainer import Callback

PretrainResult = RunResult  # what `pretrain` returns (and `finetune_lm`, with more)


def pretrain(
    data: Path,
    output: Path,
    *,
    objective: str | None = None,
    arch: str | None = None,
    preset: str | None = None,
    overrides: TrainFlags | Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    tokenizer: Path | None = None,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    sample_chars: int = 200,
) -> PretrainResult:
    """Train a language model on the shards in `data`, checkpointing into `output`.

    `overrides`: the flags (training/flags.py: layers, dim, context, dropout, batch_size,
    lr, warmup, max_steps, ...; a mapping of those names will do), None: not given.
    Precedence: the preset, then `config_file`, then `overrides`. Under torchrun this
    runs DDP (rank 0 writes). `output` is locked for the whole run: a second process is refused.
    """
    data, output = Path(data), Path(output)

    def prepare() -> RunPlan:
        return _plan(data, output, objective=objective, arch=arch, preset=preset,
                     flags=TrainFlags.of(overrides), config_file=config_file,
                     tokenizer=tokenizer, resume=resume, sample_chars=sample_chars)

    return build_run(output, prepare, resume=resume, force=force, callbacks=callbacks)


def _plan(data: Path, output: Path, *, objective: str | None, arch: str | None,
          preset: str | None, flags: TrainFlags, config_file: Path | None,
          tokenizer: Path | None, resume: bool, sample_chars: int) -> RunPlan:
    """Check the shards and tokenizer, resolve the configs; the parts come later."""
    from lmtool.text.shards import open_shards
    from lmtool.text.tokenizer import (
        find_tokenizer_file,
        load_tokenizer,
        tokenizer_kind,
        tokenizer_sha256,
    )
    from lmtool.training.flags import resolve_configs, resume_configs, with_config_file

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
        flags, _ = with_config_file(flags, config_file)  # its objective, arch, preset unused
        saved, model_config, train_config = resume_configs(output, flags, objective=objective,
                                                           arch=arch)
        if saved.get("tokenizer", {}).get("sha256") != sha:
            raise BadInput(f"the run in {output} was trained with another tokenizer than "
                           f"the shards in {data}", "resume with the run's own data")
        preset = saved.get("preset")
    else:
        model_config, train_config, preset = resolve_configs(
            objective=objective, arch=arch, preset=preset, flags=flags,
            config_file=config_file, vocab_size=tok.get_vocab_size(),
        )
    if model_config.vocab_size != shards.vocab_size:
        raise BadInput(f"the tokenizer has {model_config.vocab_size} tokens but the shards "
                       f"say {shards.vocab_size}", "re-encode the shards")

    def parts(env: Env) -> Parts:
        import torch

        from lmtool.checkpoint import TrainerState
        from lmtool.models import build_model
        from lmtool.training.data import lm_sources
        from lmtool.training.objectives import make_objective
        from lmtool.training.optimizers import ulmfit_optimizer

        if env.resume:
            model, state, rows = env.resumed()
        else:
            torch.manual_seed(train_config.seed)  # the initial weights
            model = build_model(model_config).to(env.device)
            state, rows = TrainerState(), []
        objective_ = make_objective(model_config)
        source, eval_source = lm_sources(model, objective_, train_config, shards.train,
                                         shards.val, env.dist.rank, env.dist.world_size)

        def finish(result: RunResult, trainer, metrics) -> RunResult:
            if result.is_main and result.stop_reason != "done":
                return replace(result, sample=_sample(model, tok, sample_chars,
                                                      train_config.seed))
            return result

        return Parts(
            model=model, objective=objective_, source=source, eval_source=eval_source,
            optimizer=ulmfit_optimizer(model, train_config, env.device),
            config={
                "task": "lm",
                "preset": preset,
                "tokenizer": {"sha256": sha, "vocab_size": model_config.vocab_size,
                              "kind": tokenizer_kind(tok_file)},
                "data": {
                    "path": str(data.resolve()),
                    "train_tokens": int(len(shards.train)),
                    "val_tokens": int(len(shards.val)) if shards.val is not None else 0,
                    "sources": shards.meta.get("sources", []),
                    "tokenizer_sha256": shards.tokenizer_sha256,
                },
            },
            tokenizer_json=tok_file.read_text("utf-8"),
            state=state, rows=rows, finish=finish,
        )

    return RunPlan(train_config, model_config, parts)


def _sample(model, tokenizer, chars: int, seed: int) -> str | None:
    """A short sample from a model that can generate (a causal one), else None."""
    if not chars or model.config.objective != "causal":
        return None
    from lmtool.inference.generate import sample

    model.eval()
    text = sample(model, tokenizer, "", max_new_tokens=chars, seed=seed, stop_at_eos=False)
    return text[:chars]
