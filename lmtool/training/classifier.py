"""`finetune classifier`: ULMFiT stage 3, a language model turned into a text classifier.

    from lmtool.training import finetune_classifier
    result = finetune_classifier("runs/lm-reviews", "reviews/train.tsv", "runs/clf")
    result.best["val_accuracy"], result.best_epoch

1. The base run must be a language model; its tokenizer and weights are kept, its LM
   head is dropped for a new concat-pooling head (models/classifier.py). The AWD-LSTM
   backbone takes fastai's classifier dropouts (input 0.4, hidden 0.3, weight 0.5,
   embedding 0.05, output 0.4) times its dropout multiplier. `from_scratch` keeps the
   architecture and tokenizer but not the weights: the baseline without pre-training.
2. The labelled data (TSV/CSV/JSONL or a folder per class, text/labelled.py) is
   tokenized once; a tenth of it is held out for validation unless `valid` is given.
3. The one training loop trains it with ULMFiT's recipe (Howard & Ruder 2018, §3.3):
   layer groups from the embedding (bottom) to the head (top), a plan of stages
   (training/freezing.py: the head alone first, one more group each stage, each stage
   its own slanted-triangular cycle at its own peak rate, fastai's 2e-2, 1e-2, 5e-3 ...
   1e-3; one epoch a stage, the last two), discriminative rates (each group at the rate
   of the one above / 2.6), gradient clipping. `--lr` is the first stage's peak.
   The plan's own length is the run's unless `--epochs` is given: `--epochs` and
   `--max-steps` compress it so that every group trains (`--max-time` only stops it
   early, saying which groups stayed frozen); from
   scratch (or `--unfreeze-every 0`) one stage trains every group from the start.
   The plan is fixed at the start, saved in config.json ("stages"), and each training
   row of metrics.jsonl names its stage.
4. The held-out part is scored after every epoch (loss, accuracy, macro-F1); the best
   epoch (accuracy, then loss) is what RUN/model.safetensors holds, at every save.
   The weights of the last step, which `--resume` continues from, are kept beside it
   in RUN/trainer/ when they differ.

What is new to the trainer is the objective (`ClassificationObjective`, in
training/objectives.py) and the batch sources (training/documents.py); the best-epoch
keeper (training/best_epoch.py) is the checkpointer this task gives the run builder
(training/builder.py), which does the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmtool.checkpoint import TOKENIZER, WEIGHTS, TrainerState
from lmtool.errors import BadInput
from lmtool.models.classifier import CLASSIFIER_DROP_MULT, OUTPUT_P
from lmtool.text.specials import special_ids
from lmtool.training.base_run import file_sha256, read_base
from lmtool.training.builder import Env, Parts, RunPlan, build_run
from lmtool.training.flags import TrainFlags
from lmtool.training.freezing import StagePlan, default_stage_epochs, ulmfit_stages
from lmtool.training.run import RunResult, stored_path
from lmtool.training.trainer import Callback
from lmtool.wording import count, plural

# fastai's AWD-LSTM classifier dropouts (awd_lstm_clas_config) and its one multiplier
# for them (drop_mult 0.5, models/classifier.py), replacing the base LM's multiplier.
LSTM_DROPOUTS = dict(embed_dropout=0.05, input_dropout=0.4, hidden_dropout=0.3,
                     weight_dropout=0.5, output_dropout=OUTPUT_P, dropout=CLASSIFIER_DROP_MULT)
# What `finetune classifier` trains with unless told otherwise: ULMFiT's recipe.
CLASSIFIER_DEFAULTS = {
    "schedule": "stlr", "discriminative": 2.6, "unfreeze_start": 1, "unfreeze_every": 1.0,
    "lr": 2e-2, "batch_size": 32, "optimizer": "adamw", "weight_decay": 0.01,
    "beta1": 0.8, "beta2": 0.99, "grad_clip": 1.0, "grad_accum": 1, "warmup": None,
    "max_steps": None, "max_time": None, "epochs": None, "eval_batches": 0,
    "log_every": 1, "stateful": False,
}
# The end of a document longer than --max-tokens that a new classifier reads: its last
# tokens, as fastai's classifier. Measured (benchmarks/long_documents.py, --max-tokens 8
# at 1,000 labels): the last beat the first by 2.5 points on SST-2 dev, 0.7 on BANKING77.
KEEP = "last"
VAL_FRACTION = 0.1  # of the labelled documents, held out when no --valid is given
CLASS_WEIGHTS = ("none", "auto")


# --- the command -------------------------------------------------------------------------


@dataclass
class ClassifierResult(RunResult):
    labels: list[str] = field(default_factory=list)
    best: dict | None = None  # the best epoch's evaluation row (val_accuracy, ...)
    best_epoch: float | None = None
    history: list[dict] = field(default_factory=list)  # one evaluation row per epoch
    base_run: Path | None = None
    train_documents: int = 0
    valid_documents: int = 0
    epochs: float | None = None  # the run's limit in epochs (when it is bounded in steps)
    warnings: list[str] = field(default_factory=list)  # about the data, for the person


def _sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def _read(source, tokenizer, encoding_errors: str, max_tokens: int, keep: str, what: str):
    from lmtool.text.labelled import LabelledReport, iter_labelled
    from lmtool.training.documents import encode_documents

    report = LabelledReport()
    docs = encode_documents(iter_labelled(source, encoding_errors=encoding_errors,
                                          report=report), tokenizer, max_tokens=max_tokens,
                            keep=keep)
    if report.skipped:
        path, why = report.skipped[0]
        raise BadInput(f"the {what} data has {count(len(report.skipped), 'unreadable file')}: "
                       f"{path} ({why})", "remove them, or pass --encoding-errors replace")
    return docs, report


def class_weights(counts: np.ndarray) -> list[float]:
    """Balanced weights, n / (K * n_c): every class weighs the same in the loss."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()


def finetune_classifier(
    run: Path,
    labelled: str | Path,
    output: Path,
    *,
    valid: str | Path | None = None,
    overrides: TrainFlags | Mapping[str, Any] | None = None,
    class_weights_mode: str = "none",
    max_tokens: int = 1440,
    keep: str | None = None,
    from_scratch: bool = False,
    resume: bool = False,
    force: bool = False,
    encoding_errors: str = "strict",
    callbacks: Sequence[Callback] = (),
) -> ClassifierResult:
    """Train a classifier on `labelled` from the language model in `run`, into `output`.

    `valid`: a labelled source to validate on (default: a tenth of `labelled`, held
    out). `overrides`: the flags (training/flags.py: lr, batch_size, epochs, max_steps,
    discriminative, unfreeze_start, unfreeze_every, seed, device, precision, ... and
    `dropout`; a mapping of those names will do), None: not given. `class_weights_mode` "auto"
    weighs each class by n / (K n_c) in the loss, for imbalanced data.
    `from_scratch`: random backbone weights (seeded) instead of the run's, which then
    gives only the architecture and tokenizer: the baseline that shows what
    pre-training is worth.
    """
    run, output = Path(run), Path(output)
    if class_weights_mode not in CLASS_WEIGHTS:
        raise BadInput(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}")
    if max_tokens < 2:
        raise BadInput("--max-tokens must be at least 2")
    base = read_base(run, output)

    def prepare() -> RunPlan:
        return _plan(run, base, labelled, output, valid=valid, flags=TrainFlags.of(overrides),
                     class_weights_mode=class_weights_mode, max_tokens=max_tokens,
                     keep=keep or KEEP, from_scratch=from_scratch, resume=resume,
                     encoding_errors=encoding_errors)

    return build_run(output, prepare, resume=resume, force=force,  # type: ignore[return-value]
                     callbacks=callbacks)


def _plan(run: Path, base: dict, labelled, output: Path, *, valid, flags: TrainFlags,
          class_weights_mode: str, max_tokens: int, keep: str, from_scratch: bool,
          resume: bool,
          encoding_errors: str) -> RunPlan:
    """The configs and the labelled data, tokenized; the parts come later."""
    from lmtool.models.classifier import ClassifierConfig
    from lmtool.models.config import ModelConfig
    from lmtool.text.encode import in_val
    from lmtool.text.labelled import LabelVocab
    from lmtool.text.tokenizer import load_tokenizer
    from lmtool.training.flags import finetune_configs, resume_configs

    base_sha = file_sha256(run / WEIGHTS)
    if resume:
        saved, model_config, train_config = resume_configs(output, flags)
        if saved.get("task") != "classifier":
            raise BadInput(f"--resume: {output} is not a classifier run")
        if saved.get("base", {}).get("weights_sha256") != base_sha:
            raise BadInput(f"the base run {run} is not the one {output} was trained from "
                           f"({saved.get('base', {}).get('run')}), or it changed since",
                           "resume with the same base run, or start a new classifier")
        clf_config = ClassifierConfig.from_dict(saved["classifier"])
        from_scratch = saved["base"].get("from_scratch", False)
        max_tokens, keep = clf_config.max_tokens, clf_config.keep
        class_weights_mode = saved.get("data", {}).get("class_weights", "none")
    else:
        lstm = ModelConfig.from_dict(base["model"]).arch == "lstm"
        model_config, train_config = finetune_configs(
            base, CLASSIFIER_DEFAULTS, flags, "finetune classifier",
            model_changes=LSTM_DROPOUTS if lstm else None)
        if train_config.batch_size < 2:
            raise BadInput("--batch-size must be at least 2 (the head's batch norm needs "
                           "several documents)")

    # 1. The data, tokenized with the base run's tokenizer.
    tokenizer = load_tokenizer(run / TOKENIZER, lmtool_specials=not model_config.specials)
    docs, report = _read(labelled, tokenizer, encoding_errors, max_tokens, keep, "training")
    if valid is not None:
        train_docs = docs
        valid_docs, _ = _read(valid, tokenizer, encoding_errors, max_tokens, keep,
                                "validation")
    else:
        held = np.array([in_val(i, train_config.seed, VAL_FRACTION) for i in range(len(docs))])
        if not held.any() and len(docs) > 1:
            held[-1] = True  # a tiny set still holds one document out
        train_docs, valid_docs = docs.select(~held), docs.select(held)
        if len(valid_docs) == 0:
            raise BadInput(f"{labelled} holds one document: nothing to validate on",
                           "pass more labelled examples, or --valid FILE")
    vocab = LabelVocab.build(train_docs.names[c] for c in set(train_docs.codes.tolist()))
    vocab.require_classes(f"{labelled} (its training part)")
    if resume and list(vocab.names) != clf_config.labels:
        raise BadInput(f"the labels of {labelled} are not those {output} was trained on",
                       "resume with the same data")
    train_targets, valid_targets = train_docs.targets(vocab), valid_docs.targets(vocab)
    unseen = sorted({valid_docs.names[c] for c, t in zip(valid_docs.codes, valid_targets,
                                                          strict=True) if t < 0})
    counts = np.bincount(train_targets, minlength=len(vocab))
    weights = class_weights(counts) if class_weights_mode == "auto" else None
    data_sha = _sha256(train_docs.ids, train_docs.offsets, train_targets, valid_docs.ids,
                       valid_docs.offsets, valid_targets)
    if resume and saved.get("data", {}).get("sha256") != data_sha:
        raise BadInput(f"the labelled data is not what {output} was trained on",
                       "resume with the same data, or start a new classifier")
    if not resume:
        clf_config = ClassifierConfig(labels=list(vocab.names), max_tokens=max_tokens, keep=keep)
        if from_scratch and flags.unfreeze_every is None and flags.unfreeze_start is None:
            train_config.unfreeze_start = 0  # random features: every group trains at once

    def parts(env: Env) -> Parts:
        from lmtool.checkpoint import load_checkpoint
        from lmtool.models import build_model
        from lmtool.models.classifier import Classifier
        from lmtool.training.best_epoch import BestCheckpointer, resume_from_last
        from lmtool.training.documents import DocumentBatches, DocumentEval
        from lmtool.training.objectives import ClassificationObjective
        from lmtool.training.optimizers import ulmfit_optimizer

        # 2. The model: the base LM's backbone (its weights), a new head.
        resumed_last = False
        if env.resume:
            model, state, rows = env.resumed(task="classifier")
            best_model, resumed_last = resume_from_last(model, state)
            best = saved.get("best")
        else:
            torch.manual_seed(train_config.seed)  # the head's (and a new backbone's) weights
            backbone = build_model(model_config)
            if not from_scratch:
                backbone.load_state_dict(load_checkpoint(run, "cpu").model.state_dict())
            model = Classifier(backbone, clf_config).to(env.device)
            best_model = model
            state, rows, best = TrainerState(), [], None

        # 3. Batches, objective, optimiser (layer groups: embedding at the bottom).
        source = DocumentBatches(train_docs, train_targets, train_config.batch_size,
                                 train_config.seed, backward=model_config.backward,
                                 max_tokens=max_tokens, keep=keep, rank=env.dist.rank,
                                 world_size=env.dist.world_size,
                                 specials=special_ids(model_config))
        eval_source = DocumentEval(valid_docs, valid_targets, train_config.batch_size,
                                   backward=model_config.backward, max_tokens=max_tokens,
                                   keep=keep, specials=special_ids(model_config))
        spe = max(1, source.batches_per_epoch // train_config.grad_accum)
        groups = len(model.layer_groups())
        if env.resume:  # the plan the run started with (none: a run from before plans)
            stages = StagePlan.from_dict(saved["stages"]) if saved.get("stages") else None
            if train_config.epochs is None:  # a limit given with --resume is a cap too
                train_config.epochs = saved.get("training", {}).get("epochs")
        else:
            # The limits cut the plan short (compressing it), never stretch it: without
            # --epochs the plan's own length is the run's.
            c = train_config
            stage = default_stage_epochs(spe)  # long enough to train on a small set
            if flags.unfreeze_every is None:
                c.unfreeze_every = stage
            stages, span = ulmfit_stages(  # --unfreeze-every 0: as long as the default plan
                groups, spe, lr=c.lr, every=c.unfreeze_every or stage,
                gradual=bool(c.unfreeze_start and c.unfreeze_every), epochs=c.epochs,
                max_steps=c.max_steps, schedule=c.schedule)
            if c.max_time is not None:
                stages = replace(stages, notes=(*stages.notes, (
                    f"--max-time {c.max_time:g} s stops the plan early if its "
                    f"{stages.total} steps take longer (the run then says what stayed "
                    "frozen)")))
            c.epochs = span if c.epochs is None else c.epochs
            c.eval_every = spe  # once an epoch
            c.save_every = spe

        kept: list[BestCheckpointer] = []  # the keeper, once the builder has made it

        def keeper(run_dir, config, tokenizer_json, metrics) -> BestCheckpointer:
            kept.append(BestCheckpointer(run_dir, config, tokenizer_json, metrics,
                                         model=best_model, best=best,
                                         current_is_best=not resumed_last))
            return kept[0]

        def finish(result: RunResult, trainer, metrics) -> ClassifierResult:
            history = [r for r in metrics.rows if "val_loss" in r]
            warnings = report.warnings()
            if unseen:
                warnings.append(f"{plural(len(unseen), 'held-out label')} the training part "
                                f"lacks, counted as wrong: {', '.join(unseen)}")
            if stages is not None and result.stop_reason == "time":
                frozen = groups - stages.trainable(max(0, result.step - 1), groups)
                if frozen:
                    warnings.append(f"--max-time stopped the run at step {result.step}, "
                                    f"before the plan's last stage: the lowest "
                                    f"{frozen} of {groups} layer groups never trained")
            limit = trainer.limits.max_steps
            return ClassifierResult(
                **vars(result), labels=list(vocab.names), best=kept[0].best,
                best_epoch=kept[0].best["epoch"] if kept[0].best else None, history=history,
                base_run=run, train_documents=len(train_docs),
                valid_documents=len(valid_docs), epochs=limit / spe if limit else None,
                warnings=warnings,
            )

        return Parts(
            model=model, objective=ClassificationObjective(vocab.names, weights),
            source=source, eval_source=eval_source,
            optimizer=ulmfit_optimizer(model, train_config, env.device, tied="bottom",
                                       grouped=True),
            config={
                "task": "classifier",
                "preset": base.get("preset"),
                "classifier": clf_config.to_dict(),
                "tokenizer": base.get("tokenizer", {}),
                "base": {"run": str(run.resolve()), "weights_sha256": base_sha,
                         "from_scratch": from_scratch,
                         "objective": base.get("objective"), "arch": base.get("arch"),
                         "backward": model_config.backward},
                "data": {
                    "path": stored_path(labelled),
                    "valid": stored_path(valid) if valid is not None else None,
                    "train_tokens": int(train_docs.ids.size),
                    "val_tokens": int(valid_docs.ids.size),
                    "valid_fraction": None if valid is not None else VAL_FRACTION,
                    "train_documents": len(train_docs), "valid_documents": len(valid_docs),
                    "label_counts": {name: int(c) for name, c in zip(vocab.names, counts,
                                                                      strict=True)},
                    "unseen_valid_labels": unseen,
                    "class_weights": class_weights_mode, "sha256": data_sha,
                    "steps_per_epoch": spe, "layer_groups": groups,
                },
                "best": best,
                "stages": stages.to_dict() if stages is not None else None,
            },
            tokenizer_json=(run / TOKENIZER).read_text("utf-8"),
            state=state, rows=rows, checkpointer=keeper, stages=stages,
            finish=finish,
        )

    return RunPlan(train_config, model_config, parts)
