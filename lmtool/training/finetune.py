"""`finetune lm`: ULMFiT stage 2, a pre-trained language model adapted to target text.

    from lmtool.training import finetune_lm
    result = finetune_lm("runs/lm", ["reviews/unlabelled.txt"], "runs/lm-reviews")
    result.before["perplexity"], result.after["perplexity"]    # held-out, before/after

1. The base run must be a language model (config.json task "lm"); its tokenizer is kept.
2. The target text (files, directories, globs, "-"; TSV/CSV/JSONL labelled files give
   their text column) is encoded with that tokenizer into shards in a hidden temporary
   sibling of the output (memory stays flat; removed at the end), a tenth of its
   documents held out, as `tokenize encode` does (training/target_text.py). A shard
   directory made with the same tokenizer is read as it is.
3. Training starts from the base weights with a fresh optimiser: discriminative rates
   (each layer group at the rate of the one above / 2.6, the tied embedding/decoder in
   the top group, as fastai splits a language model) and slanted triangular learning
   rates (cut_frac 0.1, ratio 32), the base run's other settings unless overridden.
4. The held-out part is scored before the first step, every --eval-every steps and at
   the end (perplexity, or masked accuracy), each time in full. RUN/model.safetensors
   holds the weights that scored the lowest held-out loss so far, the base run's at
   step 0 included (training/best_epoch.py, as the classifier keeps its best epoch);
   the last step's, which `--resume` continues from, are kept in RUN/trainer/ when they
   differ. A run that ends worse than it started says so, and which weights it kept.
5. Without --epochs it trains one epoch; --max-steps and --max-time only cut that
   short (the slanted triangle then spans the steps they allow).

config.json records the task ("lm") and the run it was fine-tuned from (path and the
sha256 of its weights), with a sha256 of the encoded target tokens: `--resume` refuses
to continue if either changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtool.checkpoint import TOKENIZER, WEIGHTS
from lmtool.errors import BadInput
from lmtool.training.base_run import file_sha256, read_base
from lmtool.training.builder import Env, Parts, RunPlan, build_run
from lmtool.training.flags import TrainFlags
from lmtool.training.run import RunResult
from lmtool.training.target_text import target_data, tokens_sha256
from lmtool.training.trainer import Callback

# What `finetune lm` changes in the base run's training settings unless told otherwise:
# ULMFiT's rates, and a run of its own (limits and warmup are the fine-tune's).
FINETUNE_DEFAULTS = {
    "schedule": "stlr", "discriminative": 2.6, "unfreeze_start": 0, "unfreeze_every": 0.0,
    "max_steps": None, "max_time": None, "epochs": None, "warmup": None,
    "eval_batches": 0,  # the held-out part is scored in full
}


@dataclass
class FinetuneResult(RunResult):
    before: dict | None = None  # held-out metrics of the base model (loss, perplexity, ...)
    after: dict | None = None  # the same for the weights kept (the best held-out)
    base_run: Path | None = None
    kept_step: int | None = None  # the step whose weights RUN/model.safetensors holds
    last: dict | None = None  # held-out metrics of the last step's weights
    warnings: list[str] = field(default_factory=list)  # for the person


# --- the command ---------------------------------------------------------------------------


def finetune_lm(
    run: Path,
    sources: Sequence[str | Path] | str | Path,
    output: Path,
    *,
    overrides: TrainFlags | Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    document: str = "paragraph",
    encoding_errors: str = "strict",
    callbacks: Sequence[Callback] = (),
) -> FinetuneResult:
    """Fine-tune the language model in `run` on the target text `sources`, into `output`.

    `overrides`: the flags (training/flags.py: lr, batch_size, epochs, max_steps,
    schedule, discriminative, seed, device, precision, ... and `dropout`; a mapping of
    those names will do), None: not given. See the module docstring for what happens. `output` is
    locked for the whole run (lmtool/rundir.py).
    """
    run, output = Path(run), Path(output)
    base = read_base(run, output)
    if isinstance(sources, (str, Path)):
        sources = [sources]

    def prepare() -> RunPlan:
        return _plan(run, base, list(sources), output, flags=TrainFlags.of(overrides),
                     resume=resume, document=document, encoding_errors=encoding_errors)

    return build_run(output, prepare, resume=resume, force=force,  # type: ignore[return-value]
                     callbacks=callbacks)


def _plan(run: Path, base: dict, sources: list, output: Path, *, flags: TrainFlags,
          resume: bool, document: str, encoding_errors: str) -> RunPlan:
    """The configs (the base run's, or the resumed run's); the parts come later."""
    from lmtool.training.flags import finetune_configs, resume_configs

    base_sha = file_sha256(run / WEIGHTS)
    if resume:
        saved, model_config, train_config = resume_configs(output, flags)
        was = saved.get("base", {})
        if was.get("weights_sha256") != base_sha:
            raise BadInput(f"the base run {run} is not the one {output} was fine-tuned from "
                           f"({was.get('run')}), or it changed since",
                           "resume with the same base run, or start a new fine-tune")
    else:
        model_config, train_config = finetune_configs(base, FINETUNE_DEFAULTS, flags,
                                                      "finetune")

    def parts(env: Env) -> Parts:
        from lmtool.checkpoint import TrainerState, load_checkpoint
        from lmtool.training.data import lm_sources
        from lmtool.training.objectives import make_objective
        from lmtool.training.optimizers import ulmfit_optimizer

        objective = make_objective(model_config)
        train, val, described = env.stack.enter_context(target_data(
            sources, run, output, base, seed=train_config.seed, document=document,
            encoding_errors=encoding_errors))
        data_sha = tokens_sha256(train, val)
        resumed_last = False
        if env.resume:
            if saved.get("data", {}).get("sha256") != data_sha:
                raise BadInput(f"the target text is not what {output} was fine-tuned on",
                               "resume with the same text, or start a new fine-tune")
            from lmtool.training.best_epoch import resume_from_last

            model, state, rows = env.resumed()
            best_model, resumed_last = resume_from_last(model, state)
            best = saved.get("best")
        else:
            model = load_checkpoint(run, env.device).model
            if model.config.dropout != model_config.dropout:
                from lmtool.models import build_model

                weights = model.state_dict()
                model = build_model(model_config).to(env.device)
                model.load_state_dict(weights)
            state, rows, best, best_model = TrainerState(), [], None, model
        from lmtool.training.data import lm_window

        window = lm_window(model, train_config.window)
        need = (train_config.batch_size + 1) * (window + 1)
        if len(train) < need:
            raise BadInput(
                f"the target text is too short for one batch: {len(train)} training "
                f"tokens, and --batch-size {train_config.batch_size} sequences of the "
                f"run's {window} tokens need about {need}",
                "give more text, or a smaller --batch-size")
        source, eval_source = lm_sources(model, objective, train_config, train, val,
                                         env.dist.rank, env.dist.world_size)

        kept: list = []  # the keeper, once the builder has made it

        def keeper(run_dir, config, tokenizer_json, metrics):
            from lmtool.training.best_epoch import BestCheckpointer, lower_loss

            kept.append(BestCheckpointer(
                run_dir, config, tokenizer_json, metrics, model=best_model, best=best,
                better=lower_loss, from_start=True, current_is_best=not resumed_last))
            return kept[0]

        def finish(result: RunResult, trainer, metrics) -> FinetuneResult:
            evals = [r for r in metrics.rows if "val_loss" in r]
            before = next((r for r in evals if r["step"] == 0), None)
            end = evals[-1] if evals else None
            best_row = kept[0].best or end
            warnings = [worse_warning(before, end, best_row)] if (
                before and end and end["val_loss"] > before["val_loss"]) else []
            return FinetuneResult(**vars(result), before=_held_out(before),
                                  after=_held_out(best_row), base_run=run,
                                  kept_step=best_row["step"] if best_row else None,
                                  last=_held_out(end), warnings=warnings)

        return Parts(
            model=model, objective=objective, source=source, eval_source=eval_source,
            optimizer=ulmfit_optimizer(model, train_config, env.device),
            config={
                "task": "lm",
                "preset": base.get("preset"),
                "tokenizer": base.get("tokenizer", {}),
                "base": {"run": str(run.resolve()), "weights_sha256": base_sha},
                "data": {**described, "train_tokens": int(len(train)),
                         "val_tokens": int(len(val)), "sha256": data_sha},
            },
            tokenizer_json=(run / TOKENIZER).read_text("utf-8"),
            state=state, rows=rows, eval_at_start=True, checkpointer=keeper,
            finish=finish,
        )

    return RunPlan(train_config, model_config, parts)


def worse_warning(before: dict, end: dict, kept: dict) -> str:
    """What to tell a person whose fine-tune ended worse on the held-out text than the
    base run: the figures, and which weights the run keeps."""
    name = "perplexity" if "val_perplexity" in before else "loss"

    def figure(row: dict) -> str:
        return f"{row['val_' + name]:,.{1 if name == 'perplexity' else 4}f}"

    which = ("the base run's weights (step 0)" if kept["step"] == 0 else
             f"the weights of step {kept['step']} (held-out {name} {figure(kept)})")
    return (f"fine-tuning made the held-out {name} worse: {figure(before)} before, "
            f"{figure(end)} at step {end['step']}; the run keeps {which}, the best "
            "held-out (try a lower --lr)")


def _held_out(row: dict | None) -> dict | None:
    """An evaluation row's metrics without the "val_" prefix."""
    if row is None:
        return None
    return {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}
