"""Batch sources: what the trainer reads, for every task, through one small protocol.

A task is a batch source plus an objective; the loop never changes. The source says
what a batch holds (`raw`, in whatever form its objective's `make_batch` takes), the
objective turns it into model inputs and a loss. The protocol (`BatchSource`,
`EvalSource`) is in training/protocol.py; a language model's sources are chosen here
(`lm_sources`).

Training (`BatchSource`): batches are addressed by (epoch, index), a pure function of
them and the seed, so a resumed run needs no loader state. Under DDP each rank gets its
own rows of every batch. The sources:

- `WindowSampler` (training/batches.py): shuffled LM windows of `context` tokens, each
  read from a fresh state (Transformer; a stateless LSTM). raw: token ids (B, window).
- `StreamSampler` (training/streams.py): contiguous LM streams for stateful BPTT (the
  AWD-LSTM): `stateful` is True, so the trainer carries the model's state from one
  batch to the next (detached between them, reset at the first batch of an epoch) and
  saves it with the checkpoint. raw: token ids (B, variable length + 1); `lr_scale`
  gives Merity et al.'s per-batch rate rescaling.
- Labelled documents (the classifier task, issue 10): raw is a complete `Batch`:
  `inputs` (B, T) token ids padded to the longest row of a length bucket, `mask` (B, T)
  True at real tokens, `targets` (B,) label ids; the objective's `make_batch` returns it
  as it is and its loss pools over `mask`. Documents of similar length are bucketed
  together (shuffled per epoch by (seed, epoch)); `Batch.num_tokens` counts the real
  tokens for tokens/s. Nothing in the trainer changes for it.

Evaluation (`EvalSource`): `batches(rank, world)` yields (keys, raw) over the whole
held-out set, each rank a share; `keys` (one int per row, e.g. a window's offset)
seed the objective's per-row randomness (masking), so the figures depend neither on
the batch size nor on the number of processes. A `stateful` eval source is read with
a state carried from batch to batch (`score` in training/evaluate.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lmtool.errors import BadInput
from lmtool.training.protocol import BatchSource, EvalSource

if TYPE_CHECKING:
    from torch import nn

    from lmtool.training.config import TrainConfig
    from lmtool.training.objectives import Objective


EVAL_STREAMS = 10  # held-out streams of a stateful model (Merity et al.'s eval batch size)


def lm_sources(
    model: nn.Module,
    objective: Objective,
    config: TrainConfig,
    train: np.ndarray,
    val: np.ndarray | None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[BatchSource, EvalSource | None]:
    """The training and held-out sources of a language model: contiguous streams when
    it trains statefully (config.stateful, by default the model's own preference),
    shuffled windows otherwise. Evaluation carries the state whenever the model can
    (an AWD-LSTM is scored as it reads: on and on, not from a cold start every window)."""
    from lmtool.training.batches import WindowSampler
    from lmtool.training.streams import StreamSampler

    context = lm_window(model, config.window)
    stateful = model.stateful_training if config.stateful is None else config.stateful
    if stateful and not model.stateful_training:
        raise BadInput("--stateful needs --arch lstm (a Transformer's KV cache is for "
                       "generation, not for training through)", "drop --stateful")
    reverse = getattr(objective, "backward", False)
    source: BatchSource
    if stateful:
        source = StreamSampler(train, context, config.batch_size, config.seed, rank,
                               world_size, reverse=reverse)
    else:
        source = WindowSampler(train, context, objective.window(context), config.batch_size,
                               config.seed, rank, world_size)
    return source, lm_eval_source(model, objective, val, config.batch_size, config.eval_batches,
                                  window=config.window)


def lm_window(model: nn.Module, limit: int | None) -> int:
    """Tokens per window: the model's context, or `limit` (a run's training window) when
    that is shorter."""
    return min(model.config.context, limit or model.config.context)


def lm_eval_source(
    model: nn.Module,
    objective: Objective,
    data: np.ndarray | None,
    batch_size: int,
    max_batches: int | None = None,
    window: int | None = None,
) -> EvalSource | None:
    """How a language model is scored on `data` (None: no data): EVAL_STREAMS streams
    carrying the state for a model that trains with one, else `batch_size` windows of
    the model's context or `window` tokens, whichever is shorter."""
    from lmtool.training.batches import WindowEval
    from lmtool.training.streams import StreamEval

    if data is None or len(data) == 0:
        return None
    context = lm_window(model, window)
    if model.stateful_training:
        # A fixed number of streams, whatever the batch size: each starts cold once, so
        # their number changes the figure a little; with it fixed, `lmtool evaluate`
        # reproduces the trainer's validation rows.
        return StreamEval(data, context, EVAL_STREAMS, max_batches,
                          reverse=getattr(objective, "backward", False))
    return WindowEval(data, context, objective.window(context), batch_size, max_batches)
