"""`evaluate`: score a run on text or token shards (perplexity, or masked-token accuracy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmtool.errors import BadInput


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
    sources: Sequence[str | Path], tokenizer, document: str, encoding_errors: str
) -> np.ndarray:
    """The sources' documents encoded with the run's tokenizer, each followed by [EOS]
    as in the shards the run was trained on."""
    from lmtool.text.encode import iter_encoded
    from lmtool.text.sources import iter_pieces
    from lmtool.text.specials import SPECIAL_IDS

    parts: list[np.ndarray] = []
    pieces = iter_pieces(list(sources), document=document, encoding_errors=encoding_errors)
    for lasts, ids_list in iter_encoded(tokenizer, pieces):
        for last, ids in zip(lasts, ids_list, strict=True):
            parts.append(np.asarray(ids + [SPECIAL_IDS.eos] if last else ids, dtype=np.int64))
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
) -> dict:
    """Score the run on `sources`: a shard directory (its `split`) or text
    (files, directories, globs, "-"), cut into documents as `tokenize encode --document`
    does, so text scores like the shards the run was trained on.

    Returns {"loss", "tokens", "perplexity" (causal) or "accuracy" (masked), ...}; loss
    is the mean cross-entropy in nats per scored token (masked: per masked token).
    """
    import torch

    from lmtool.checkpoint import load_checkpoint
    from lmtool.device import autocast, resolve_device, resolve_precision
    from lmtool.training.batches import eval_windows, seed_for
    from lmtool.training.objectives import Sums, make_objective

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
        data = _text_tokens(sources, ckpt.tokenizer, document, encoding_errors)
    objective = make_objective(config)
    window = objective.window(config.context)
    sums = Sums()
    with torch.no_grad():
        for index, windows in eval_windows(data, config.context, window, batch_size):
            gen = torch.Generator().manual_seed(seed_for(seed, index))  # masking
            batch = objective.make_batch(windows, gen).to(dev)
            with autocast(dev, dtype):
                sums.add(objective.sums(model, batch))
    if sums.tokens == 0:
        raise BadInput("nothing to score in the input", "pass more text")
    loss = sums.loss / sums.tokens
    result: dict = {"objective": config.objective, "loss": loss, "tokens": sums.tokens}
    if config.objective == "causal":
        result["perplexity"] = math.exp(min(loss, 700.0))
        result["bits_per_token"] = loss / math.log(2)
    else:
        result["accuracy"] = sums.correct / sums.tokens
        result["input_tokens"] = int(len(data))
    result["source"] = kind
    if kind == "shards":
        result["split"] = split
    return result
