"""Labelled documents for classifier training: tokenized once, batched by length.

    docs = encode_documents(iter_labelled("train.tsv"), tokenizer)
    source = DocumentBatches(docs, labels, batch_size=32, seed=0, backward=False,
                             max_tokens=1440)
    batch = source.batch(epoch, index)    # Batch(inputs (B, T), targets (B,), mask (B, T))

The documents live in flat arrays (all token ids end to end, an offset per document,
a label code per document): a few bytes a token, never a Python list per document.

Batches by length (fastai's "sortish" sampler), a pure function of (seed, epoch):
1. shuffle the documents;
2. cut the shuffled order into chunks of 50 batches and sort each chunk by length, so
   a batch holds documents of similar length and pads little;
3. cut the chunks into batches of near-equal size (none smaller than half the batch
   size, so batch norm always sees several rows), and shuffle the batches.
Under DDP every batch is cut for all ranks together; rank r takes rows r, r+W, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lmtool.errors import BadInput
from lmtool.models.classifier import document_ids, kept_tokens, pad_batch
from lmtool.text.labelled import Example, LabelVocab
from lmtool.text.specials import SPECIAL_IDS, SpecialIds
from lmtool.training.objectives import Batch
from lmtool.training.protocol import BatchSource, EvalSource
from lmtool.training.seeds import seed_for
from lmtool.wording import count

CHUNK_DOCS = 4096  # documents tokenized per call of the batch encoder
SORT_CHUNK = 50  # batches whose documents are sorted by length together
UNSEEN = -1  # the target of a document whose label the classifier does not know


@dataclass
class Documents:
    """Tokenized documents: document i is ids[offsets[i]:offsets[i + 1]], labelled
    names[codes[i]]."""

    ids: np.ndarray  # (total tokens,) int32
    offsets: np.ndarray  # (N + 1,) int64
    codes: np.ndarray  # (N,) int64, indices into `names`
    names: list[str]  # the labels in the order first met

    def __len__(self) -> int:
        return len(self.codes)

    def tokens(self, i: int) -> list[int]:
        return self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def targets(self, vocab: LabelVocab) -> np.ndarray:
        """Class indices (N,) in `vocab`; UNSEEN for a label it does not hold."""
        index = np.array([vocab.get(name) if name in vocab else UNSEEN for name in self.names],
                         dtype=np.int64)
        return index[self.codes]

    def select(self, keep: np.ndarray) -> Documents:
        """The documents where `keep` (N,) is True, in order."""
        rows = np.flatnonzero(keep)
        lengths = self.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = (np.concatenate([self.ids[self.offsets[i] : self.offsets[i + 1]] for i in rows])
               if len(rows) else np.zeros(0, dtype=np.int32))
        return Documents(ids.astype(np.int32), offsets, self.codes[rows].copy(), self.names)


def encode_documents(examples: Iterable[Example], tokenizer, *,
                     max_tokens: int | None = None, keep: str = "first") -> Documents:
    """Tokenize labelled examples with the run's tokenizer, a chunk at a time. Only the
    first (`keep` "last": the last) `max_tokens` tokens of a document are kept (the
    classifier reads no more)."""
    from lmtool.text.encode import batch_encoder

    encode = batch_encoder(tokenizer)
    parts: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    codes: list[int] = []
    names: dict[str, int] = {}

    def flush(texts: list[str]) -> None:
        for e in encode(texts):
            ids = np.asarray(kept_tokens(e.ids, max_tokens, keep) if max_tokens else e.ids,
                             dtype=np.int32)
            parts.append(ids)
            lengths.append(len(ids))

    texts: list[str] = []
    for example in examples:
        codes.append(names.setdefault(example.label, len(names)))
        texts.append(example.text)
        if len(texts) == CHUNK_DOCS:
            flush(texts)
            texts = []
    if texts:
        flush(texts)
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths_arr)]).astype(np.int64)
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return Documents(ids, offsets, np.asarray(codes, dtype=np.int64), list(names))


def make_batch(docs: Documents, targets: np.ndarray, rows: np.ndarray, *, backward: bool,
               max_tokens: int, keep: str = "first",
               specials: SpecialIds = SPECIAL_IDS) -> Batch:
    """Documents `rows` as the classifier reads them: right-padded ids, mask, labels."""
    ids, lengths = pad_batch([document_ids(docs.tokens(int(i)), backward=backward,
                                           max_tokens=max_tokens, keep=keep,
                                           specials=specials)[0]
                              for i in rows])
    mask = torch.arange(ids.size(1))[None, :] < lengths[:, None]  # (B, T)
    return Batch(ids, torch.from_numpy(targets[rows].astype(np.int64)), mask)


class DocumentBatches(BatchSource):
    """Shuffled, length-sorted batches of labelled documents (see the module doc)."""

    def __init__(self, docs: Documents, targets: np.ndarray, batch_size: int, seed: int, *,
                 backward: bool, max_tokens: int, keep: str = "first", rank: int = 0,
                 world_size: int = 1, specials: SpecialIds = SPECIAL_IDS):
        self.docs, self.targets = docs, targets
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.backward, self.max_tokens, self.keep = backward, max_tokens, keep
        self.specials = specials  # the run's ids around each document (an import's own)
        global_batch = batch_size * world_size
        n = len(docs)
        if n < 2 * world_size:
            raise BadInput(f"{count(n, 'training document')}: too few for a batch",
                           "pass more labelled examples")
        # Near-equal batches: ceil(n / global_batch) of them, sizes differing by one.
        self.batches_per_epoch = max(1, -(-n // global_batch))
        self.lengths = np.minimum(docs.lengths, max_tokens)
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, epoch))
            order = rng.permutation(len(self.docs))
            cuts = np.linspace(0, len(order), self.batches_per_epoch + 1).round().astype(int)
            sizes = np.diff(cuts)
            batches = []
            for c in range(0, self.batches_per_epoch, SORT_CHUNK):
                start, end = cuts[c], cuts[min(c + SORT_CHUNK, self.batches_per_epoch)]
                chunk = order[start:end]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                pos = 0
                for size in sizes[c : c + SORT_CHUNK]:
                    batches.append(chunk[pos : pos + size])
                    pos += size
            self._cached = (epoch, [batches[i] for i in rng.permutation(len(batches))])
        return self._cached[1]

    def batch(self, epoch: int, index: int) -> Batch:
        rows = self._epoch(epoch)[index][self.rank :: self.world_size]
        return make_batch(self.docs, self.targets, rows, backward=self.backward,
                          max_tokens=self.max_tokens, keep=self.keep,
                          specials=self.specials)


class DocumentEval(EvalSource):
    """Every held-out document once, in batches sorted by length; keys are the
    documents' indices. Rank r of W takes every W-th batch."""

    def __init__(self, docs: Documents, targets: np.ndarray, batch_size: int, *,
                 backward: bool, max_tokens: int, keep: str = "first",
                 specials: SpecialIds = SPECIAL_IDS):
        self.docs, self.targets, self.batch_size = docs, targets, batch_size
        self.backward, self.max_tokens, self.keep = backward, max_tokens, keep
        self.specials = specials  # the run's ids around each document (an import's own)

    def batches(self, rank: int = 0, world_size: int = 1) -> Iterator[tuple[list[int], Batch]]:
        order = np.argsort(-np.minimum(self.docs.lengths, self.max_tokens), kind="stable")
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            if b % world_size == rank:
                rows = order[start : start + self.batch_size]
                yield rows.tolist(), make_batch(self.docs, self.targets, rows,
                                                backward=self.backward,
                                                max_tokens=self.max_tokens, keep=self.keep,
                                                specials=self.specials)
