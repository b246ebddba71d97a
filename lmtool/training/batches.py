"""Shuffled LM windows read from a memory-mapped shard (a `BatchSource`, training/data.py).

The data position is a pure function of the step, so resuming needs no loader state:

    epoch e:  a random offset o_e in [0, context) and a seeded permutation of the
              non-overlapping window starts o_e, o_e + context, o_e + 2*context, ...
    batch k:  windows perm[k*B*W : (k+1)*B*W] of that epoch (W = world size),
              of which rank r takes every W-th one (r, r+W, ...).

Worked example: 1,000 tokens, context 100, causal (windows of 101 tokens), batch 2, one
process: 9 windows per epoch (the 101st token of the last one must exist), 4 batches per
epoch (the odd window is dropped), and optimiser step s with grad-accum 1 reads batch s % 4
of epoch s // 4.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from lmtool.errors import BadInput
from lmtool.training.protocol import BatchSource, EvalSource
from lmtool.training.seeds import seed_for
from lmtool.wording import count


class WindowSampler(BatchSource):
    """Training windows of `window` tokens from `data`, addressed by (epoch, batch index)."""

    def __init__(
        self,
        data: np.ndarray,
        context: int,
        window: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.data = data
        self.context = context  # stride between window starts (tokens)
        self.window = window  # tokens per window: context (+1 for causal targets)
        self.batch_size = batch_size  # windows per rank per micro-batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        if len(data) < window:
            raise BadInput(
                f"--context {context} is longer than the training data ({len(data)} tokens)",
                "lower --context or encode more text",
            )
        # Windows available whatever the epoch's offset (the offset eats up to context-1).
        self.windows_per_epoch = (len(data) - window - (context - 1)) // context + 1
        if len(data) - window < context - 1:
            self.windows_per_epoch = 1
        global_batch = batch_size * world_size
        self.batches_per_epoch = self.windows_per_epoch // global_batch
        if self.batches_per_epoch == 0:
            raise BadInput(
                f"the training data holds only {count(self.windows_per_epoch, 'window')} of "
                f"--context {context} tokens, fewer than one batch of {global_batch}",
                "lower --batch-size or --context, or encode more text",
            )
        self._cached_epoch = -1
        self._starts = np.empty(0, dtype=np.int64)

    def _epoch_starts(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            rng = np.random.default_rng(seed_for(self.seed, epoch))
            slack = len(self.data) - self.window - (self.windows_per_epoch - 1) * self.context
            offset = int(rng.integers(0, min(self.context, slack + 1)))
            starts = offset + self.context * np.arange(self.windows_per_epoch, dtype=np.int64)
            self._starts = starts[rng.permutation(self.windows_per_epoch)]
            self._cached_epoch = epoch
        return self._starts

    def batch(self, epoch: int, index: int) -> torch.Tensor:
        """This rank's windows for batch `index` of `epoch`: (batch_size, window) int64."""
        global_batch = self.batch_size * self.world_size
        starts = self._epoch_starts(epoch)[index * global_batch : (index + 1) * global_batch]
        mine = starts[self.rank :: self.world_size]  # this rank's slice
        rows = np.stack([self.data[s : s + self.window] for s in mine]).astype(np.int64)
        return torch.from_numpy(rows)  # (B, window)


def eval_windows(
    data: np.ndarray,
    context: int,
    window: int,
    batch_size: int,
    max_batches: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(starts, windows) covering `data` for evaluation: each window's offset in `data`
    (b,) and the windows (b, window) int64.

    Windows start every `context` tokens, so each token is scored once. The tail that
    does not fill a window is scored in one shorter window of its own: for causal
    windows (window = context + 1) with 1,000 tokens and context 100, windows start at
    0..800 and score tokens 1..900; the tail window data[900:] scores tokens 901..999.
    `max_batches` (0 or None: all) bounds the work; with W ranks each takes every W-th batch.
    """
    n = len(data)
    starts = list(range(0, n - window + 1, context))
    batches = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
    complete = not max_batches or len(batches) <= max_batches
    batches = batches if complete else batches[:max_batches]
    for b, group in enumerate(batches):
        if b % world_size == rank:
            rows = np.stack([data[s : s + window] for s in group]).astype(np.int64)
            yield np.asarray(group), torch.from_numpy(rows)  # (b,), (b, window)
    covered = starts[-1] + context if starts else 0  # where the unscored tail begins
    if complete and n - covered >= window - context + 1 and len(batches) % world_size == rank:
        tail = np.asarray(data[covered:], dtype=np.int64)[None]  # (1, < window)
        yield np.asarray([covered]), torch.from_numpy(tail)


class WindowEval(EvalSource):
    """`eval_windows` as an evaluation source: keys are the windows' offsets."""

    def __init__(self, data: np.ndarray, context: int, window: int, batch_size: int,
                 max_batches: int | None = None):
        self.data, self.context, self.window = data, context, window
        self.batch_size, self.max_batches = batch_size, max_batches

    def batches(self, rank: int = 0, world_size: int = 1):
        for starts, windows in eval_windows(self.data, self.context, self.window,
                                            self.batch_size, self.max_batches, rank, world_size):
            yield starts.tolist(), windows
