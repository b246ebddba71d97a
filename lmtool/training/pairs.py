"""Source/target pairs for encoder–decoder training: tokenized once, batched by length.

    pairs = encode_pairs(iter_pairs("pairs.tsv"), tokenizer, max_tokens=128)
    source = PairBatches(pairs, batch_size=64, seed=0)
    batch = source.batch(epoch, index)     # Seq2SeqBatch: source, mask, target in/out

The pairs live in flat arrays (each side's ids end to end, an offset per pair): a few
bytes a token, no Python list per sentence. A source is its ids then [EOS]; a target is
read as [BOS] + ids and predicted as ids + [EOS]; each side keeps its first
`max_tokens` - 1 ids (the model's context, [EOS] or [BOS] included).

Batches by length, a pure function of (seed, epoch), as training/documents.py does it:
shuffle, sort chunks of 50 batches by length (source + target) so a batch pads little,
cut, shuffle the batches. Under DDP rank r takes rows r, r+W, ... of every batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lmtool.errors import BadInput
from lmtool.text.specials import SPECIAL_IDS
from lmtool.training.objectives import IGNORE, Seq2SeqBatch
from lmtool.training.protocol import BatchSource, EvalSource
from lmtool.training.seeds import seed_for
from lmtool.wording import count

CHUNK_PAIRS = 4096  # pairs tokenized per call of the batch encoder
SORT_CHUNK = 50  # batches whose pairs are sorted by length together


@dataclass
class EncodedPairs:
    """Pair i: source ids src[src_off[i]:src_off[i+1]] ([EOS] included), target ids
    tgt[tgt_off[i]:tgt_off[i+1]] (no [BOS]/[EOS])."""

    src: np.ndarray
    src_off: np.ndarray
    tgt: np.ndarray
    tgt_off: np.ndarray

    def __len__(self) -> int:
        return len(self.src_off) - 1

    def source(self, i: int) -> list[int]:
        return self.src[self.src_off[i] : self.src_off[i + 1]].tolist()

    def target(self, i: int) -> list[int]:
        return self.tgt[self.tgt_off[i] : self.tgt_off[i + 1]].tolist()

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.src_off) + np.diff(self.tgt_off)

    def select(self, rows: np.ndarray) -> EncodedPairs:
        def take(ids, off):
            parts = [ids[off[i] : off[i + 1]] for i in rows]
            lengths = np.array([len(p) for p in parts], dtype=np.int64)
            flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
            return flat.astype(np.int32), np.concatenate([[0], np.cumsum(lengths)]).astype(
                np.int64)

        return EncodedPairs(*take(self.src, self.src_off), *take(self.tgt, self.tgt_off))

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for a in (self.src, self.src_off, self.tgt, self.tgt_off):
            digest.update(np.ascontiguousarray(a).tobytes())
            digest.update(b"|")
        return digest.hexdigest()

    @property
    def tokens(self) -> int:
        return int(self.src.size + self.tgt.size)


def encode_pairs(pairs: Iterable[tuple[str, str]], tokenizer, *, max_tokens: int
                 ) -> EncodedPairs:
    """Tokenize pairs with the run's tokenizer, a chunk at a time."""
    from lmtool.text.encode import batch_encoder

    encode = batch_encoder(tokenizer)
    keep = max_tokens - 1
    sides: list[list[np.ndarray]] = [[], []]

    def flush(chunk: list[tuple[str, str]]) -> None:
        sources = encode([s for s, _ in chunk])
        targets = encode([t for _, t in chunk])
        for s, t in zip(sources, targets, strict=True):
            sides[0].append(np.asarray([*s.ids[:keep], SPECIAL_IDS.eos], dtype=np.int32))
            sides[1].append(np.asarray(t.ids[:keep], dtype=np.int32))

    chunk: list[tuple[str, str]] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == CHUNK_PAIRS:
            flush(chunk)
            chunk = []
    if chunk:
        flush(chunk)

    def flat(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    return EncodedPairs(*flat(sides[0]), *flat(sides[1]))


def make_batch(pairs: EncodedPairs, rows: Iterable[int]) -> Seq2SeqBatch:
    """Pairs `rows` right-padded (see `batch_of`)."""
    rows = list(rows)
    return batch_of([pairs.source(int(i)) for i in rows], [pairs.target(int(i)) for i in rows])


def batch_of(sources: list[list[int]], targets: list[list[int]]) -> Seq2SeqBatch:
    """Sources (ids, [EOS] included) and targets (ids alone) right-padded: source (B, S)
    + mask, decoder input [BOS] + target and its targets target + [EOS] (B, T), IGNORE
    at padding."""
    B = len(sources)
    S = max(len(s) for s in sources)
    T = max(len(t) for t in targets) + 1
    source = torch.full((B, S), SPECIAL_IDS.pad, dtype=torch.long)
    inputs = torch.full((B, T), SPECIAL_IDS.pad, dtype=torch.long)
    out = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, (s, t) in enumerate(zip(sources, targets, strict=True)):
        source[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        inputs[b, : len(t) + 1] = torch.tensor([SPECIAL_IDS.bos, *t], dtype=torch.long)
        out[b, : len(t) + 1] = torch.tensor([*t, SPECIAL_IDS.eos], dtype=torch.long)
    mask = source != SPECIAL_IDS.pad
    return Seq2SeqBatch(source, mask, inputs, out)


class PairBatches(BatchSource):
    """Shuffled, length-sorted batches of pairs (see the module docstring)."""

    def __init__(self, pairs: EncodedPairs, batch_size: int, seed: int, *, rank: int = 0,
                 world_size: int = 1):
        self.pairs, self.seed, self.rank, self.world_size = pairs, seed, rank, world_size
        n = len(pairs)
        if n < world_size:
            raise BadInput(f"{count(n, 'training pair')}: too few for a batch",
                           "pass more pairs")
        # Near-equal batches, each with a row for every rank.
        self.batches_per_epoch = max(1, min(-(-n // (batch_size * world_size)), n // world_size))
        self.lengths = pairs.lengths
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, epoch))
            order = rng.permutation(len(self.pairs))
            cuts = np.linspace(0, len(order), self.batches_per_epoch + 1).round().astype(int)
            batches = []
            for c in range(0, self.batches_per_epoch, SORT_CHUNK):
                end = min(c + SORT_CHUNK, self.batches_per_epoch)
                chunk = order[cuts[c] : cuts[end]]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                base = cuts[c]
                batches += [chunk[cuts[i] - base : cuts[i + 1] - base] for i in range(c, end)]
            self._cached = (epoch, [batches[i] for i in rng.permutation(len(batches))])
        return self._cached[1]

    def batch(self, epoch: int, index: int) -> Seq2SeqBatch:
        rows = self._epoch(epoch)[index][self.rank :: self.world_size]
        return make_batch(self.pairs, rows)


class PairEval(EvalSource):
    """Every held-out pair once, in batches sorted by length; keys are pair indices.
    Rank r of W takes every W-th batch."""

    def __init__(self, pairs: EncodedPairs, batch_size: int):
        self.pairs, self.batch_size = pairs, batch_size

    def batches(self, rank: int = 0, world_size: int = 1
                ) -> Iterator[tuple[list[int], Seq2SeqBatch]]:
        order = np.argsort(-self.pairs.lengths, kind="stable")
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            if b % world_size == rank:
                rows = order[start : start + self.batch_size]
                yield rows.tolist(), make_batch(self.pairs, rows)
