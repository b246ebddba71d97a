"""Contiguous LM streams for stateful BPTT (Merity et al. 2017, the AWD-LSTM's training).

Training (`StreamSampler`), a pure function of (seed, epoch, index) like the windows:

1. The N training tokens are cut into S = batch_size x world_size streams of
   n = (N - 1) // S tokens of targets each; stream j reads tokens j*n .. (j+1)*n (one
   token of overlap: the last input's target). Rank r reads streams r*B .. (r+1)*B - 1.
2. Epoch e cuts the streams into K chunks at the same boundaries for every stream, with
   Merity et al.'s variable BPTT: each length is `context` with probability 0.95, else
   half of it, plus normal noise (sd 5), at least 5 tokens. So that every epoch has the
   same number of batches (steps per epoch, and so the schedule, stay fixed), K is
   n / (the expected length) and the drawn lengths are rescaled to add up to n exactly.
3. Batch k is chunk k of this rank's streams, (B, length_k + 1); the trainer carries the
   model's state from batch k to k+1 (detached) and starts afresh at the epoch's first.
   As in the paper, the learning rate is scaled by length_k / context (`lr_scale`), so
   a short batch moves the weights less.

Worked example: 10,001 tokens, batch 2, one process, context 70: streams of 5,000
targets (tokens 0..5000 and 5000..10000), K = round(5000 / 68.25) = 73 batches per
epoch of about 68 tokens each.

A backward model reads right to left: `reverse=True` walks the streams from the end of
the data to its start and returns each chunk in memory order, for the objective to flip.

Evaluation (`StreamEval`) reads the held-out tokens the same way with fixed chunks of
`context` tokens and the state carried throughout (Merity et al. evaluate so, with 10
streams); the last (N - 1) mod S tokens, fewer than S, are not scored.
"""

from __future__ import annotations

import numpy as np
import torch

from lmtool.errors import BadInput
from lmtool.training.protocol import BatchSource, EvalSource
from lmtool.training.seeds import seed_for

_STREAMS = 4  # a seed stream of its own, distinct from the trainer's (training/trainer.py)
MIN_LENGTH = 5  # Merity et al.: "prevent excessively small or negative sequence lengths"


def _rows(data: np.ndarray, spans: list[tuple[int, int]], reverse: bool) -> torch.Tensor:
    """Token rows data[a..b] (inclusive, reading coordinates) in memory order, (R, b-a+1)."""
    n = len(data)
    if reverse:  # reading position p is memory position n-1-p
        rows = [data[n - 1 - b : n - a] for a, b in spans]
    else:
        rows = [data[a : b + 1] for a, b in spans]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


class StreamSampler(BatchSource):
    """Training chunks of `batch_size` contiguous streams per rank (see the module doc)."""

    stateful = True

    def __init__(self, data: np.ndarray, context: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, reverse: bool = False):
        self.data, self.context, self.seed = data, context, seed
        self.batch_size, self.rank, self.reverse = batch_size, rank, reverse
        streams = batch_size * world_size
        self.stream_length = (len(data) - 1) // streams  # n: targets per stream
        if self.stream_length < context:
            raise BadInput(
                f"the training data ({len(data)} tokens) is too short for {streams} "
                f"streams of at least --context {context} tokens",
                "lower --batch-size or --context, or give more text",
            )
        expected = 0.95 * context + 0.05 * context / 2
        self.batches_per_epoch = max(1, round(self.stream_length / expected))
        self.first = rank * batch_size  # this rank's first stream
        self._cached_epoch = -1
        self._bounds = np.empty(0, dtype=np.int64)

    def _epoch_bounds(self, epoch: int) -> np.ndarray:
        """Chunk boundaries 0 = b_0 < b_1 < ... < b_K = n of `epoch`, (K + 1,)."""
        if epoch != self._cached_epoch:
            rng = np.random.default_rng(seed_for(self.seed, epoch, _STREAMS))
            K = self.batches_per_epoch
            base = np.where(rng.random(K) < 0.95, self.context, self.context / 2)
            lengths = np.maximum(MIN_LENGTH, rng.normal(base, 5.0).astype(np.int64))  # (K,)
            ends = np.round(np.cumsum(lengths) * self.stream_length / lengths.sum())
            bounds = np.concatenate([[0], ends.astype(np.int64)])
            # Rounding cannot make a chunk empty unless n < K, excluded above.
            self._bounds = np.maximum.accumulate(bounds)
            self._cached_epoch = epoch
        return self._bounds

    def batch(self, epoch: int, index: int) -> torch.Tensor:
        """This rank's chunk `index` of `epoch`: (batch_size, length + 1) int64."""
        bounds = self._epoch_bounds(epoch)
        a, b = int(bounds[index]), int(bounds[index + 1])
        n = self.stream_length
        spans = [(j * n + a, j * n + b) for j in range(self.first, self.first + self.batch_size)]
        return _rows(self.data, spans, self.reverse)  # (B, b - a + 1)

    def lr_scale(self, epoch: int, index: int) -> float:
        bounds = self._epoch_bounds(epoch)
        return float(bounds[index + 1] - bounds[index]) / self.context


class StreamEval(EvalSource):
    """Held-out streams read in chunks of `context` tokens, state carried (module doc).
    With several ranks, rank r reads streams r, r + W, ... (and none if there are fewer
    streams than ranks); all read the same number of chunks."""

    stateful = True

    def __init__(self, data: np.ndarray, context: int, streams: int,
                 max_batches: int | None = None, reverse: bool = False):
        self.data, self.context, self.reverse = data, context, reverse
        self.streams = max(1, min(streams, len(data) - 1))
        self.stream_length = (len(data) - 1) // self.streams
        self.max_batches = max_batches

    def batches(self, rank: int = 0, world_size: int = 1):
        n = self.stream_length
        mine = list(range(rank, self.streams, world_size))
        if not mine or n == 0:
            return
        for k, a in enumerate(range(0, n, self.context)):
            if self.max_batches and k >= self.max_batches:
                return
            b = min(a + self.context, n)
            spans = [(j * n + a, j * n + b) for j in mine]
            yield [s for s, _ in spans], _rows(self.data, spans, self.reverse)  # (R, b-a+1)
