"""`evaluate`: score a run on text or token shards (perplexity, or masked-token accuracy).

`score` is the one scoring function: the trainer's validation rows and `lmtool evaluate`
both call it, so on the same tokens they report the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmtool.errors import BadInput

if TYPE_CHECKING:
    import torch

    from lmtool.text.sources import ReadReport
    from lmtool.training.data import EvalSource
    from lmtool.training.distributed import DistContext
    from lmtool.training.objectives import Objective

# Validation masks come from this seed whatever the run's --seed, so runs trained with
# different seeds are compared on the same masked tokens, and `lmtool evaluate` (whose
# --seed defaults to it) reproduces the trainer's figures.
EVAL_SEED = 0


def score(
    model: torch.nn.Module,
    objective: Objective,
    source: EvalSource,
    *,
    seed: int = EVAL_SEED,
    device: torch.device,
    dtype: torch.dtype | None = None,
    dist: DistContext | None = None,
) -> dict[str, float] | None:
    """The objective's metrics over an evaluation source (None when nothing was scored),
    all ranks taking part. Row i of a batch draws its randomness (masks) from (seed,
    keys[i]) alone, so the figures depend neither on the batch size nor on how many
    processes share the work. A stateful source is read with the model's state carried
    from batch to batch, as the model reads text."""
    import torch

    from lmtool.device import autocast
    from lmtool.training import distributed
    from lmtool.training.objectives import Sums

    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    sums, state = Sums(), None
    with torch.no_grad():
        for keys, raw in source.batches(rank, world):
            batch = objective.make_eval_batch(raw, keys, seed).to(device)
            extra = {}
            if source.stateful:
                if state is None:
                    state = model.initial_state(batch.inputs.size(0))
                extra["state"] = state
            with autocast(device, dtype):
                sums.add(objective.sums(model, batch, **extra))
    if dist is not None:
        sums = sums.from_flat(distributed.all_sum(sums.flat(), dist, device))
    return objective.metrics(sums) if sums.tokens else None


def _is_shard_dir(sources: Sequence[str | Path]) -> bool:
    from lmtool.text.shards import META

    return len(sources) == 1 and str(sources[0]) != "-" and (Path(sources[0]) / META).is_file()


def _shard_tokens(path: Path, split: str, run_sha: str) -> np.ndarray:
    from lmtool.text.shards import open_shards

    shards = open_shards(path)
    if shards.tokenizer_sha256 != run_sha:
        raise BadInput(
            f"the shards in {path} were made with another tokenizer than the run's",
            "evaluate on text instead, or encode it with the run's tokenizer.json",
        )
    data = shards.train if split == "train" else shards.val
    if data is None:
        raise BadInput(f"{path} has no {split} split", "pass --split train")
    return data


def _text_tokens(
    sources: Sequence[str | Path], tokenizer, document: str, encoding_errors: str,
    report: ReadReport | None = None, eos: int | None = None,
) -> np.ndarray:
    """The sources' documents encoded with the run's tokenizer, each followed by [EOS]
    as in the shards the run was trained on. A labelled file gives its text column, as
    in `finetune lm`."""
    from lmtool.text.encode import iter_encoded
    from lmtool.text.labelled import iter_text_pieces
    from lmtool.text.sources import ReadReport
    from lmtool.text.specials import SPECIAL_IDS

    eos = SPECIAL_IDS.eos if eos is None else eos  # an imported run's own end of text
    parts: list[np.ndarray] = []
    report = report if report is not None else ReadReport()
    pieces = iter_text_pieces(list(sources), document=document,
                              encoding_errors=encoding_errors, report=report)
    for lasts, ids_list in iter_encoded(tokenizer, pieces):
        for last, ids in zip(lasts, ids_list, strict=True):
            parts.append(np.asarray(ids + [eos] if last else ids, dtype=np.int64))
    if report.documents == 0:
        raise report.no_text()
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if len(tokens) < 2:
        raise BadInput("the text holds too few tokens to evaluate", "pass more text")
    return tokens


def evaluate(
    run: Path,
    sources: Sequence[str | Path] | str | Path,
    *,
    split: str = "val",
    seed: int = 0,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
    document: str = "paragraph",
    encoding_errors: str = "strict",
    report: ReadReport | None = None,
) -> dict:
    """Score the run on `sources`: a shard directory (its `split`) or text
    (files, directories, globs, "-"), cut into documents as `tokenize encode --document`
    does, so text scores like the shards the run was trained on; a TSV/CSV/JSONL
    labelled file gives its text column, one document a row, as `finetune lm` reads it.

    Returns the objective's metrics ("loss", "tokens", and "perplexity" for a causal
    model, "accuracy" for a masked one), plus "objective", "source", "input_tokens"; loss
    is the mean cross-entropy in nats per scored token (masked: per masked token).
    `report`, if given, is filled in with what reading text found (skipped files, ...).
    """
    from lmtool.checkpoint import load_checkpoint
    from lmtool.device import resolve_device, resolve_precision
    from lmtool.text.specials import special_ids
    from lmtool.training.data import lm_eval_source
    from lmtool.training.objectives import make_objective

    if split not in ("train", "val"):
        raise BadInput(f"unknown --split {split!r}", "use train or val")
    if batch_size < 1:
        raise BadInput("--batch-size must be at least 1")
    if isinstance(sources, (str, Path)):
        sources = [sources]
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    ckpt = load_checkpoint(Path(run), dev)
    model, config = ckpt.model, ckpt.model.config
    if _is_shard_dir(sources):
        kind = "shards"
        data = _shard_tokens(Path(sources[0]), split, ckpt.config["tokenizer"]["sha256"])
    else:
        kind = "text"
        data = _text_tokens(sources, ckpt.tokenizer, document, encoding_errors, report,
                            special_ids(config).eos)
    objective = make_objective(config)
    source = lm_eval_source(model, objective, data, batch_size,
                            window=ckpt.config.get("training", {}).get("window"))
    metrics = score(model, objective, source, seed=seed, device=dev,
                    dtype=dtype) if source is not None else None
    if metrics is None:
        raise BadInput("nothing to score in the input", "pass more text")
    result: dict = {"objective": config.objective, **metrics, "input_tokens": int(len(data))}
    result["source"] = kind
    if kind == "shards":
        result["split"] = split
    return result
