"""`pretrain --objective seq2seq`: source/target pairs → a trained encoder–decoder.

    from lmtool.training import train_seq2seq
    result = train_seq2seq("pairs.tsv", "runs/mt", tokenizer="tok.json", arch="lstm",
                           attention="bahdanau", overrides={"max_steps": 500})

What is particular to it: the pairs (text/pairs.py: one TSV/CSV/JSONL file or two
aligned files), tokenized once with the given tokenizer (training/pairs.py); a
twentieth held out for validation unless `valid` is given; the encoder–decoder's config
(models/seq2seq_config.py: preset, then flags); the objective (teacher-forced
cross-entropy with label smoothing, training/objectives.py). The run builder
(training/builder.py) does the rest: -o, device, precision, DDP, resume, limits,
metrics, checkpoints; the end of a run shows a held-out source and its output.

`finetune_seq2seq` trains on pairs from a seq2seq run's weights (one pre-trained by
denoising, training/denoising.py, or on other pairs): the base run's model and
tokenizer, its preset's training settings under the flags, and its path and weights
hash recorded (a changed base run refuses --resume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmtool.errors import BadInput
from lmtool.training.builder import Env, Parts, RunPlan, build_run
from lmtool.training.flags import TrainFlags
from lmtool.training.run import RunResult, stored_path
from lmtool.training.trainer import Callback

VAL_FRACTION = 0.05  # of the pairs, held out when no `valid` is given


def train_seq2seq(
    pairs: str | Path | None,
    output: Path,
    *,
    tokenizer: str | Path | None,
    source: str | Path | None = None,
    target: str | Path | None = None,
    valid: str | Path | None = None,
    arch: str | None = None,
    attention: str | None = None,
    preset: str | None = None,
    label_smoothing: float | None = None,
    overrides: TrainFlags | Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train an encoder–decoder on `pairs` (or aligned `source` and `target` files)
    into `output`. `overrides`: the flags (layers, dim, heads, hidden, context, dropout,
    positions, batch_size, lr, epochs, max_steps, ...), None: not given."""
    output = Path(output)
    flags = TrainFlags.of(overrides)

    def prepare() -> RunPlan:
        return _plan(pairs, output, tokenizer=tokenizer, source=source, target=target,
                     valid=valid, arch=arch, attention=attention, preset=preset,
                     label_smoothing=label_smoothing, flags=flags, resume=resume)

    return build_run(output, prepare, resume=resume, force=force, callbacks=callbacks)


def finetune_seq2seq(
    run: str | Path,
    pairs: str | Path | None,
    output: Path,
    *,
    source: str | Path | None = None,
    target: str | Path | None = None,
    valid: str | Path | None = None,
    label_smoothing: float | None = None,
    overrides: TrainFlags | Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train the seq2seq run `run` further on `pairs` (or aligned files) into `output`.
    The model's shape and tokenizer are the base run's; `overrides` may change the
    dropout and the training settings."""
    output, flags = Path(output), TrainFlags.of(overrides)
    base = _read_base(Path(run), output)

    def prepare() -> RunPlan:
        return _plan(pairs, output, tokenizer=None, source=source, target=target,
                     valid=valid, arch=None, attention=None, preset=None,
                     label_smoothing=label_smoothing, flags=flags, resume=resume,
                     base=(Path(run), base))

    return build_run(output, prepare, resume=resume, force=force, callbacks=callbacks)


def _read_base(run: Path, output: Path) -> dict:
    """The base run's config.json, refusing what is not a complete seq2seq run, and an
    -o that names the base run itself."""
    from lmtool.checkpoint import TOKENIZER, WEIGHTS, check_task, read_run_config

    if not run.exists():
        raise BadInput(f"{run} does not exist", "pass a run made by lmtool pretrain "
                       "--objective denoising (or seq2seq)")
    config = read_run_config(run)
    check_task(run, config, "seq2seq")
    for name in (WEIGHTS, TOKENIZER):
        if not (run / name).is_file():
            raise BadInput(f"{run / name} is missing", "the base run is incomplete")
    if run.resolve() == output.resolve():
        raise BadInput("-o must name a new run, not the base run", "pass another -o")
    return config


def base_configs(base: dict, label_smoothing: float | None, flags: TrainFlags):
    """A fine-tune's (Seq2SeqConfig, TrainConfig, preset): the base run's model (its
    dropout and label smoothing may change), its preset's training settings, the flags."""
    from lmtool.models.seq2seq_config import FIELDS, TRAIN_PRESETS, Seq2SeqConfig
    from lmtool.training.config import TRAIN_FIELDS, TrainConfig, validate_train_config

    fixed = sorted(k for k in flags.given() if k in FIELDS and k != "dropout")
    if fixed:
        raise BadInput("finetune seq2seq cannot change " + ", ".join(
            f"--{k.replace('_', '-')}" for k in fixed), "those are fixed by the base run")
    model = Seq2SeqConfig.from_dict(base["model"])
    changes = {"dropout": flags.given().get("dropout"), "label_smoothing": label_smoothing}
    model = replace(model, **{k: v for k, v in changes.items() if v is not None})
    preset = base.get("preset") or "tiny"
    train = TrainConfig(**TRAIN_PRESETS[model.arch].get(preset, TRAIN_PRESETS[model.arch]["tiny"]))
    train = replace(train, **{k: v for k, v in flags.given().items() if k in TRAIN_FIELDS})
    validate_train_config(train)
    return model, train, preset


def resolve_configs(arch: str | None, attention: str | None, preset: str | None,
                    label_smoothing: float | None, flags: TrainFlags, vocab_size: int):
    """A new run's (Seq2SeqConfig, TrainConfig, preset): the preset, then the flags."""
    from lmtool.models.seq2seq_config import FIELDS, TRAIN_PRESETS, resolve_seq2seq_config
    from lmtool.training.config import (
        MODEL_FIELDS,
        TRAIN_FIELDS,
        TrainConfig,
        validate_train_config,
    )

    arch, preset = arch or "transformer", preset or "tiny"
    given = flags.given()
    foreign = sorted(k for k in given if k in MODEL_FIELDS and k not in FIELDS)
    if foreign:
        raise BadInput("an encoder–decoder has no " + ", ".join(
            f"--{k.replace('_', '-')}" for k in foreign), "those are language-model flags")
    if attention is not None and arch != "lstm":
        raise BadInput("--attention is for --arch lstm",
                       "a Transformer's decoder always attends to the source")
    model_over = {k: v for k, v in given.items() if k in FIELDS}
    model_over.update(attention=attention, label_smoothing=label_smoothing)
    model = resolve_seq2seq_config(arch, preset, model_over)
    model.vocab_size = vocab_size
    train = TrainConfig(**TRAIN_PRESETS[arch][preset])
    train = replace(train, **{k: v for k, v in given.items() if k in TRAIN_FIELDS})
    validate_train_config(train)
    return model, train, preset


def _plan(pairs, output: Path, *, tokenizer, source, target, valid, arch, attention,
          preset, label_smoothing, flags: TrainFlags, resume: bool,
          base: tuple[Path, dict] | None = None) -> RunPlan:
    import numpy as np

    from lmtool.models.seq2seq_config import Seq2SeqConfig
    from lmtool.text.encode import in_val
    from lmtool.text.pairs import iter_pairs
    from lmtool.text.tokenizer import (
        find_tokenizer_file,
        load_tokenizer,
        tokenizer_kind,
        tokenizer_sha256,
    )
    from lmtool.training.flags import resume_configs
    from lmtool.training.pairs import encode_pairs

    if base is not None:
        from lmtool.training.base_run import file_sha256

        base_sha = file_sha256(base[0] / "model.safetensors")
        tokenizer = base[0] / "tokenizer.json"
    if resume:
        given = {k: v for k, v in (("arch", arch), ("attention", attention), ("preset", preset),
                                   ("label_smoothing", label_smoothing)) if v is not None}
        from lmtool.checkpoint import check_task, read_run_config

        check_task(output, read_run_config(output), "seq2seq")
        saved, model_config, train_config = resume_configs(output, flags,
                                                           model_class=Seq2SeqConfig)
        changed = [f"--{k.replace('_', '-')} {v}" for k, v in given.items()
                   if k != "preset" and getattr(model_config, k) != v]
        if changed:
            raise BadInput("--resume cannot change the run's settings: " + ", ".join(changed))
        if base is not None and saved.get("base", {}).get("weights_sha256") != base_sha:
            raise BadInput(f"the base run {base[0]} is not the one {output} was fine-tuned "
                           "from, or it changed since", "resume with the same base run")
        preset = saved.get("preset")
        if train_config.epochs is None:  # a cap given with --resume caps the run's plan
            train_config.epochs = saved.get("training", {}).get("epochs")
        tok_file = output / "tokenizer.json"
        if tokenizer is not None:
            tok_file = find_tokenizer_file(Path(tokenizer))
    else:
        if tokenizer is None:
            raise BadInput("a sequence-to-sequence run needs --tokenizer FILE",
                           "make one with: lmtool tokenize train SOURCE.txt TARGET.txt "
                           "--kind bpe -o tok.json")
        tok_file = find_tokenizer_file(Path(tokenizer))
    tok = load_tokenizer(tok_file)
    sha = tokenizer_sha256(tok)
    if resume and saved.get("tokenizer", {}).get("sha256") != sha:
        raise BadInput(f"{tok_file} is not the tokenizer {output} was trained with",
                       "resume with the run's own tokenizer")
    if not resume and base is not None:
        model_config, train_config, preset = base_configs(base[1], label_smoothing, flags)
    elif not resume:
        model_config, train_config, preset = resolve_configs(
            arch, attention, preset, label_smoothing, flags, tok.get_vocab_size())

    # The pairs, refused before any device work if anything is wrong with them.
    context = model_config.context
    data = encode_pairs(iter_pairs(pairs, source=source, target=target), tok,
                        max_tokens=context)
    what = str(pairs) if pairs is not None else f"{source} and {target}"
    if len(data) == 0:
        raise BadInput(f"{what} holds no pairs")
    if valid is not None:
        train_pairs = data
        valid_pairs = encode_pairs(iter_pairs(valid), tok, max_tokens=context)
        if len(valid_pairs) == 0:
            raise BadInput(f"{valid} holds no pairs")
    else:
        held = np.array([in_val(i, train_config.seed, VAL_FRACTION) for i in range(len(data))])
        if not held.any() and len(data) > 1:
            held[-1] = True  # a tiny set still holds one pair out
        if held.all():
            raise BadInput(f"{what} holds one pair: nothing to train on",
                           "pass more pairs, or --valid FILE")
        train_pairs = data.select(np.flatnonzero(~held))
        valid_pairs = data.select(np.flatnonzero(held))
    data_sha = train_pairs.sha256() + valid_pairs.sha256()[:16]
    if resume and saved.get("data", {}).get("sha256") != data_sha:
        raise BadInput(f"the pairs are not those {output} was trained on",
                       "resume with the same data, or start a new run")

    def parts(env: Env) -> Parts:
        import torch

        from lmtool.checkpoint import TrainerState
        from lmtool.models import build_seq2seq
        from lmtool.training.objectives import Seq2SeqObjective
        from lmtool.training.optimizers import ulmfit_optimizer
        from lmtool.training.pairs import PairBatches, PairEval

        if env.resume:
            model, state, rows = env.resumed(task="seq2seq")
        elif base is not None:
            from lmtool.checkpoint import load_checkpoint

            weights = load_checkpoint(base[0], env.device, task="seq2seq").model.state_dict()
            model = build_seq2seq(model_config).to(env.device)  # the fine-tune's dropout
            model.load_state_dict(weights)
            state, rows = TrainerState(), []
        else:
            torch.manual_seed(train_config.seed)  # the initial weights
            model = build_seq2seq(model_config).to(env.device)
            state, rows = TrainerState(), []
        def finish(result: RunResult, trainer, metrics) -> RunResult:
            if result.is_main and result.stop_reason != "done":
                return replace(result, sample=_sample(model, tok, valid_pairs.source(0)))
            return result

        source_ = PairBatches(train_pairs, train_config.batch_size, train_config.seed,
                              rank=env.dist.rank, world_size=env.dist.world_size)
        return Parts(
            model=model, objective=Seq2SeqObjective(model_config.label_smoothing),
            source=source_, eval_source=PairEval(valid_pairs, train_config.batch_size),
            optimizer=ulmfit_optimizer(model, train_config, env.device),
            config={
                "task": "seq2seq",
                "preset": preset,
                **({"base": {"run": str(base[0].resolve()), "weights_sha256": base_sha}}
                   if base is not None else {}),
                "tokenizer": {"sha256": sha, "vocab_size": model_config.vocab_size,
                              "kind": tokenizer_kind(tok_file)},
                "data": {
                    "path": stored_path(pairs) if pairs is not None else None,
                    "source": stored_path(source) if source is not None else None,
                    "target": stored_path(target) if target is not None else None,
                    "valid": stored_path(valid) if valid is not None else None,
                    "valid_fraction": None if valid is not None else VAL_FRACTION,
                    "train_pairs": len(train_pairs), "valid_pairs": len(valid_pairs),
                    "train_tokens": train_pairs.tokens, "val_tokens": valid_pairs.tokens,
                    "sha256": data_sha,
                },
            },
            tokenizer_json=tok_file.read_text("utf-8"),
            state=state, rows=rows, finish=finish,
        )

    return RunPlan(train_config, model_config, parts)  # type: ignore[arg-type]


def _sample(model, tokenizer, source_ids: list[int]) -> str:
    """A held-out source and the model's greedy output for it (what the end of a run shows)."""
    from lmtool.inference.runs import LoadedLM
    from lmtool.inference.translate import translate

    was_training = model.training
    model.eval()
    try:
        weight = next(model.parameters())
        lm = LoadedLM(model, tokenizer, weight.device, weight.dtype)
        source = tokenizer.decode(source_ids[:-1])  # without its [EOS]
        [g] = translate(lm, source)
        return f"{source}\n→ {g.text}"
    finally:
        model.train(was_training)
