"""Batches for denoising pre-training: plain text cut into segments, each read by the
encoder as a corrupted copy (text/noise.py) and rebuilt by the decoder.

    segments = text_segments(tokens, width=63)          # (N, 2): start, end of each
    source = NoisyBatches(tokens, segments, batch_size=32, seed=0, noise=Noise())
    batch = source.batch(epoch, index)                  # Seq2SeqBatch: noisy source, text

A segment is at most `width` (the context - 1) tokens of one document (documents end at
[EOS] in token shards); a long document gives several. Training batches are a pure
function of (seed, epoch, index): segments shuffled per epoch, and each segment's noise
drawn afresh every epoch (as BART re-corrupts), from a seed of (seed, epoch, segment).
Held-out segments get one fixed corruption each, so their loss compares across steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lmtool.errors import BadInput
from lmtool.text.noise import MASK_RATIO, SPAN_LAMBDA, corrupt
from lmtool.text.specials import SPECIAL_IDS
from lmtool.training.objectives import Seq2SeqBatch
from lmtool.training.pairs import batch_of
from lmtool.training.protocol import BatchSource, EvalSource
from lmtool.training.seeds import seed_for
from lmtool.wording import count

_HELD_OUT = 7  # a seed stream of its own for the held-out corruption


@dataclass(frozen=True)
class Noise:
    mask_ratio: float = MASK_RATIO
    span_lambda: float = SPAN_LAMBDA
    sentence_ends: frozenset[int] | None = None  # None: sentences keep their order

    def pair(self, ids: list[int], seed: int, width: int) -> tuple[list[int], list[int]]:
        """(source: the corrupted ids, cut to `width`, then [EOS]; target: the ids)."""
        noisy = corrupt(ids, np.random.default_rng(seed), mask_ratio=self.mask_ratio,
                        span_lambda=self.span_lambda, sentence_ends=self.sentence_ends)
        return [*noisy[:width], SPECIAL_IDS.eos], ids


def text_segments(tokens: np.ndarray, width: int, eos: int = SPECIAL_IDS.eos) -> np.ndarray:
    """(N, 2) int64 [start, end) of every segment: each document (the tokens before an
    [EOS], or the tail) cut into pieces of at most `width` tokens; empty ones left out."""
    ends = np.flatnonzero(np.asarray(tokens) == eos)
    starts = np.concatenate([[0], ends + 1])
    ends = np.concatenate([ends, [len(tokens)]])
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    pieces = -(-(ends - starts) // width)  # per document
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    seg_starts = np.repeat(starts, pieces) + (np.arange(pieces.sum()) - first) * width
    seg_ends = np.minimum(seg_starts + width, np.repeat(ends, pieces))
    return np.stack([seg_starts, seg_ends], 1).astype(np.int64)


class NoisyBatches(BatchSource):
    """Shuffled segments, corrupted afresh each epoch (see the module docstring). Under
    DDP rank r takes rows r, r+W, ... of every batch."""

    def __init__(self, tokens: np.ndarray, segments: np.ndarray, batch_size: int, seed: int,
                 noise: Noise, width: int, *, rank: int = 0, world_size: int = 1):
        self.tokens, self.segments, self.seed, self.noise = tokens, segments, seed, noise
        self.width, self.rank, self.world_size = width, rank, world_size
        n = len(segments)
        if n < world_size:
            raise BadInput(f"{count(n, 'text segment')}: too few for a batch", "pass more text")
        self.batches_per_epoch = max(1, min(-(-n // (batch_size * world_size)), n // world_size))
        self._order: tuple[int, np.ndarray] | None = None

    def batch(self, epoch: int, index: int) -> Seq2SeqBatch:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, epoch))
            self._order = (epoch, rng.permutation(len(self.segments)))
        order = self._order[1]
        cuts = np.linspace(0, len(order), self.batches_per_epoch + 1).round().astype(int)
        rows = order[cuts[index] : cuts[index + 1]][self.rank :: self.world_size]
        pairs = [self.noise.pair(self._ids(r), seed_for(self.seed, epoch, r), self.width)
                 for r in rows.tolist()]
        return batch_of([s for s, _ in pairs], [t for _, t in pairs])

    def _ids(self, row: int) -> list[int]:
        start, end = self.segments[row]
        return np.asarray(self.tokens[start:end], dtype=np.int64).tolist()


class NoisyEval(EvalSource):
    """Every held-out segment once, with one fixed corruption; keys are segment indices.
    Rank r of W takes every W-th batch."""

    def __init__(self, tokens: np.ndarray, segments: np.ndarray, batch_size: int, seed: int,
                 noise: Noise, width: int):
        self.source = NoisyBatches(tokens, segments, batch_size, seed, noise, width)
        self.batch_size = batch_size

    def batches(self, rank: int = 0, world_size: int = 1
                ) -> Iterator[tuple[list[int], Seq2SeqBatch]]:
        src = self.source
        for b, start in enumerate(range(0, len(src.segments), self.batch_size)):
            if b % world_size == rank:
                rows = list(range(start, min(start + self.batch_size, len(src.segments))))
                pairs = [src.noise.pair(src._ids(r), seed_for(src.seed, _HELD_OUT, r), src.width)
                         for r in rows]
                yield rows, batch_of([s for s, _ in pairs], [t for _, t in pairs])
