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
          preset, label_smoothing, flags: TrainFlags, resume: bool) -> RunPlan:
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
    if not resume:
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
