"""`pretrain --objective denoising`: plain text → an encoder–decoder that rebuilds it from
a corrupted copy (BART, Lewis et al. 2019), to fine-tune on pairs afterwards
(`finetune seq2seq`, training/seq2seq.py).

    from lmtool.training import train_denoising
    result = train_denoising(["corpus/"], "runs/bart", tokenizer="tok.json",
                             overrides={"max_steps": 2000})

What is particular to it: the text (a shard directory, read as it is, or text files
encoded with the tokenizer into a temporary directory, a tenth of the documents held
out: training/target_text.py), cut into segments of the context (training/noisy_text.py),
corrupted by text infilling and, with `permute_sentences`, sentence permutation
(text/noise.py). The model, its configs and its objective are the sequence-to-sequence
run's (training/seq2seq.py): the run is a seq2seq run whose config.json says how it was
pre-trained ("pretraining"), so `generate` on it rebuilds a text with [MASK]s in it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmtool.errors import BadInput
from lmtool.training.builder import Env, Parts, RunPlan, build_run
from lmtool.training.flags import TrainFlags
from lmtool.training.run import RunResult, stored_path
from lmtool.training.trainer import Callback


def train_denoising(
    data: Sequence[str | Path],
    output: Path,
    *,
    tokenizer: str | Path | None = None,
    arch: str | None = None,
    attention: str | None = None,
    preset: str | None = None,
    label_smoothing: float | None = None,
    permute_sentences: bool = False,
    document: str = "paragraph",
    overrides: TrainFlags | Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Pre-train an encoder–decoder by denoising the text in `data` (text files,
    directories, globs, or one shard directory) into `output`."""
    output, flags = Path(output), TrainFlags.of(overrides)
    data = [str(d) for d in ([data] if isinstance(data, (str, Path)) else data)]

    def prepare() -> RunPlan:
        return _plan(data, output, tokenizer=tokenizer, arch=arch, attention=attention,
                     preset=preset, label_smoothing=label_smoothing,
                     permute=permute_sentences, document=document, flags=flags,
                     resume=resume)

    return build_run(output, prepare, resume=resume, force=force, callbacks=callbacks)


def _shards(data: list[str]):
    from lmtool.text.shards import META, open_shards

    if len(data) == 1 and data[0] != "-" and (Path(data[0]) / META).is_file():
        return open_shards(Path(data[0]))
    return None


def _plan(data: list[str], output: Path, *, tokenizer, arch, attention, preset,
          label_smoothing, permute: bool, document: str, flags: TrainFlags,
          resume: bool) -> RunPlan:
    from lmtool.checkpoint import read_run_config
    from lmtool.models.seq2seq_config import Seq2SeqConfig
    from lmtool.text.noise import MASK_RATIO, SPAN_LAMBDA, sentence_end_ids
    from lmtool.text.tokenizer import (
        find_tokenizer_file,
        load_tokenizer,
        tokenizer_kind,
        tokenizer_sha256,
    )
    from lmtool.training.flags import resume_configs
    from lmtool.training.seq2seq import resolve_configs

    shards = _shards(data)
    if tokenizer is not None:
        tok_file = find_tokenizer_file(Path(tokenizer))
    elif shards is not None:
        tok_file = shards.tokenizer_path
    elif resume:
        tok_file = output / "tokenizer.json"
    else:
        raise BadInput("denoising text needs --tokenizer FILE (shards carry their own)",
                       "make one with: lmtool tokenize train TEXT --kind bpe -o tok.json")
    tok = load_tokenizer(tok_file)
    sha = tokenizer_sha256(tok)
    if shards is not None and shards.tokenizer_sha256 != sha:
        raise BadInput(f"the shards in {data[0]} were made with another tokenizer than "
                       f"{tok_file}", "pass the tokenizer the shards were encoded with")
    if shards is not None and shards.val is None:
        raise BadInput(f"{data[0]} has no validation split to evaluate on",
                       "encode it with --val-fraction above 0, or pass text")
    if resume:
        saved = read_run_config(output)
        if saved.get("pretraining", {}).get("objective") != "denoising":
            raise BadInput(f"{output} was not pre-trained by denoising",
                           "resume it with the command that made it")
        if saved.get("tokenizer", {}).get("sha256") != sha:
            raise BadInput(f"{tok_file} is not the tokenizer {output} was trained with",
                           "resume with the run's own tokenizer")
        _, model_config, train_config = resume_configs(output, flags, model_class=Seq2SeqConfig)
        preset = saved.get("preset")
        permute = saved["pretraining"].get("permute_sentences", False)
    else:
        model_config, train_config, preset = resolve_configs(
            arch, attention, preset, label_smoothing, flags, tok.get_vocab_size())
    noise_config = {"objective": "denoising", "mask_ratio": MASK_RATIO,
                    "span_lambda": SPAN_LAMBDA, "permute_sentences": permute}

    def parts(env: Env) -> Parts:
        import torch

        from lmtool.checkpoint import TrainerState
        from lmtool.models import build_seq2seq
        from lmtool.training.noisy_text import Noise, NoisyBatches, NoisyEval, text_segments
        from lmtool.training.objectives import Seq2SeqObjective
        from lmtool.training.optimizers import ulmfit_optimizer
        from lmtool.training.target_text import tokens_sha256

        train, val, described = env.stack.enter_context(
            _text(data, shards, tok_file, output, seed=train_config.seed, document=document))
        data_sha = tokens_sha256(train, val)
        if env.resume:
            if saved.get("data", {}).get("sha256") != data_sha:
                raise BadInput(f"the text is not what {output} was trained on",
                               "resume with the same text, or start a new run")
            model, state, rows = env.resumed(task="seq2seq")
        else:
            torch.manual_seed(train_config.seed)  # the initial weights
            model = build_seq2seq(model_config).to(env.device)
            state, rows = TrainerState(), []
        width = model_config.context - 1  # the source's [EOS], the target's [BOS]/[EOS]
        noise = Noise(sentence_ends=sentence_end_ids(tok) if permute else None)
        train_segments, val_segments = text_segments(train, width), text_segments(val, width)
        if len(val_segments) == 0:
            raise BadInput("the held-out text is empty", "pass more text")
        batch = train_config.batch_size
        return Parts(
            model=model, objective=Seq2SeqObjective(model_config.label_smoothing),
            source=NoisyBatches(train, train_segments, batch, train_config.seed, noise, width,
                                rank=env.dist.rank, world_size=env.dist.world_size),
            eval_source=NoisyEval(val, val_segments, batch, train_config.seed, noise, width),
            optimizer=ulmfit_optimizer(model, train_config, env.device),
            config={
                "task": "seq2seq",
                "preset": preset,
                "pretraining": noise_config,
                "tokenizer": {"sha256": sha, "vocab_size": model_config.vocab_size,
                              "kind": tokenizer_kind(tok_file)},
                "data": {**described, "train_tokens": int(len(train)),
                         "val_tokens": int(len(val)), "train_segments": len(train_segments),
                         "val_segments": len(val_segments), "sha256": data_sha},
            },
            tokenizer_json=tok_file.read_text("utf-8"),
            state=state, rows=rows,
        )

    return RunPlan(train_config, model_config, parts)  # type: ignore[arg-type]


@contextlib.contextmanager
def _text(data: list[str], shards, tok_file: Path, output: Path, *, seed: int, document: str):
    """(train, val, description): the shards' splits, or the text encoded into a
    temporary directory beside `output` (removed at the end)."""
    from lmtool.training.target_text import encode_target

    if shards is not None:
        yield shards.train, shards.val, {"path": str(Path(data[0]).resolve())}
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.denoising-", dir=output.parent))
    try:
        train, val = encode_target(data, tok_file, tmp, seed=seed, document=document,
                                   encoding_errors="strict")
        paths = [stored_path(s) for s in data]
        yield train, val, {"path": ", ".join(paths), "sources": paths, "document": document}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
