"""Batch classification: documents in, label probabilities out, in input order.

    from lmtool.inference import classify
    for p in classify("runs/clf", ["a lovely film", "I want my money back"]):
        print(p.label, p.probability)

How it streams (memory stays flat over an unbounded input):
1. Documents arrive one at a time and are gathered into blocks of `block` documents.
2. A block is tokenized in one call of the tokenizer's batch encoder, sorted by length
   and cut into batches of `batch_size`, so each batch pads to similar lengths.
3. Every classifier of the ensemble scores the block; their probabilities are averaged.
4. The block's predictions are handed out in input order, then the next block is read.
A block holds at most `block` documents of at most `max_tokens` tokens each.

An empty (or whitespace-only) document gets no label, as one below `threshold` does:
there is nothing in it to tell a class by. Its row is still there, flagged `empty`.
Files become documents in text/documents.py; evaluation on labelled data is in
inference/evaluate.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmtool.errors import BadInput
from lmtool.text.boundaries import document_text
from lmtool.text.documents import SkipReport, read_documents

BLOCK = 1024  # documents scored together (sorted by length within a block)
# Bytes read from a document at most, per token the classifier reads: no tokenizer
# makes a token of more than a few dozen bytes, so the cut never shortens what is read.
BYTES_PER_TOKEN = 64


@dataclass
class Prediction:
    """One document's result."""

    index: int  # the document's position in the input (0-based)
    source: str  # its file, "file:line" with per_line, or a name given by the caller
    labels: Sequence[str]  # every class, in the classifier's order
    probabilities: np.ndarray  # (K,) float, sums to 1
    label: str | None  # the most probable class; None below the threshold or when empty
    tokens: int  # tokens read ([EOS] included)
    empty: bool  # the text was empty or whitespace: no label, and flagged
    truncated: bool  # longer than max_tokens: only one end of it was read

    @property
    def probability(self) -> float:
        return float(self.probabilities.max())

    @property
    def best(self) -> str:
        """The most probable class, whatever the threshold (what evaluation counts)."""
        return self.labels[int(self.probabilities.argmax())]

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable classes, best first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


# --- loading ---------------------------------------------------------------------------


@dataclass
class Member:
    """One classifier of an ensemble, ready to run."""

    path: Path
    model: torch.nn.Module  # a models.classifier.Classifier, in eval mode
    tokenizer: object  # tokenizers.Tokenizer
    labels: list[str]


def load_member(run: Path | str, device: torch.device) -> Member:
    """A classifier run; a language model or any other directory is refused with a hint."""
    from lmtool.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(run), device, task="classifier")
    return Member(Path(run), ckpt.model, ckpt.tokenizer, list(ckpt.model.labels))


def check_same_labels(members: Sequence[Member]) -> None:
    first = members[0]
    for other in members[1:]:
        if sorted(other.labels) != sorted(first.labels):
            raise BadInput(
                f"--ensemble: {other.path} has the labels {', '.join(other.labels)} but "
                f"{first.path} has {', '.join(first.labels)}",
                "ensemble classifiers trained on the same labels",
            )


# --- scoring -------------------------------------------------------------------------------


class Scorer:
    """Probabilities of an ensemble of classifiers for lists of texts."""

    def __init__(self, members: Sequence[Member], device: torch.device,
                 dtype: torch.dtype | None, batch_size: int):
        if not members:
            raise BadInput("no classifier given")
        check_same_labels(members)
        self.members = list(members)
        self.labels = list(members[0].labels)
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        # Each member's class order mapped onto the first one's.
        self._order = [
            np.array([m.labels.index(name) for name in self.labels]) for m in self.members
        ]

    def max_chars(self) -> int:
        """Characters of a document worth reading: enough for every member's max_tokens."""
        return max(m.model.config.max_tokens for m in self.members) * BYTES_PER_TOKEN

    def readable(self, text: str) -> str:
        """The end of `text` the members read (its start, or its end for members that
        keep the last tokens; all of it when they differ): no more is tokenized."""
        limit = self.max_chars()
        keeps = {m.model.config.keep for m in self.members}
        if len(text) <= limit or len(keeps) > 1:
            return text
        return text[-limit:] if keeps == {"last"} else text[:limit]

    @torch.inference_mode()
    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (N, K), tokens read (N,), truncated (N,)) in the order of `texts`."""
        from lmtool.device import autocast
        from lmtool.models.classifier import pad_batch
        from lmtool.text.encode import batch_encoder

        n = len(texts)
        probs = np.zeros((n, len(self.labels)), dtype=np.float64)
        tokens = np.zeros(n, dtype=np.int64)
        truncated = np.zeros(n, dtype=bool)
        encoded: dict[int, list[list[int]]] = {}  # token ids by tokenizer, computed once
        for member, order in zip(self.members, self._order, strict=True):
            key = id(member.tokenizer)
            if key not in encoded:
                encoded[key] = [e.ids for e in batch_encoder(member.tokenizer)(texts)]
            docs = member.model.encode_documents(encoded[key])
            lengths = np.array([len(ids) for ids, _ in docs])
            # Longest first: the first batch shows at once whether memory suffices.
            by_length = np.argsort(-lengths, kind="stable")
            for start in range(0, n, self.batch_size):
                rows = by_length[start : start + self.batch_size]
                ids, lens = pad_batch([docs[i][0] for i in rows])
                with autocast(self.device, self.dtype):
                    logits = member.model(ids.to(self.device), lens.to(self.device))  # (b, K)
                p = torch.softmax(logits.float(), dim=-1).cpu().numpy()  # (b, K)
                probs[rows] += p[:, order]
            tokens = np.maximum(tokens, lengths)
            truncated |= np.array([cut for _, cut in docs], dtype=bool)
        return probs / len(self.members), tokens, truncated

    def predict(
        self,
        documents: Iterable[str | tuple[str, str]],
        *,
        threshold: float | None = None,
        block: int = BLOCK,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[Prediction]:
        """One Prediction per document, in input order, a block at a time. The flags are
        checked here, before the first document is read."""
        if threshold is not None and not 0 <= threshold <= 1:
            raise BadInput(f"--threshold {threshold} must be between 0 and 1")
        if block < 1:
            raise BadInput("the block size must be at least 1")
        return self._predict(documents, threshold, block, progress)

    def _predict(self, documents: Iterable[str | tuple[str, str]], threshold: float | None,
                 block: int, progress: Callable[[int], None] | None) -> Iterator[Prediction]:
        limit = self.max_chars()
        done = 0
        for items in _blocks(documents, block):
            sources = [it[0] if isinstance(it, tuple) else f"#{done + i + 1}"
                       for i, it in enumerate(items)]
            # The whitespace policy every reader follows, the classifier's training too.
            texts = [document_text(it[1] if isinstance(it, tuple) else it) for it in items]
            # Only one end of a document is read (max_tokens): tokenize no more of it.
            cut = [len(t) > limit for t in texts]
            probs, tokens, truncated = self.score([self.readable(t) for t in texts])
            for i, text in enumerate(texts):
                p = probs[i]
                best = int(p.argmax())
                below = threshold is not None and p[best] < threshold
                yield Prediction(
                    index=done + i, source=sources[i], labels=self.labels, probabilities=p,
                    label=None if below or not text else self.labels[best],
                    tokens=int(tokens[i]),
                    empty=not text, truncated=bool(truncated[i] or cut[i]),
                )
            done += len(items)
            if progress is not None:
                progress(done)


def _blocks(items: Iterable, size: int) -> Iterator[list]:
    block = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def load_scorer(
    run: Path | str,
    *,
    ensemble: Sequence[Path | str] = (),
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
) -> Scorer:
    """The classifier in `run` and those of `ensemble`, loaded and checked."""
    from lmtool.device import resolve_device, resolve_precision

    if batch_size < 1:
        raise BadInput("--batch-size must be at least 1")
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    return Scorer([load_member(r, dev) for r in [run, *ensemble]], dev, dtype, batch_size)


def classify(
    run: Path | str,
    documents: Iterable[str | tuple[str, str]],
    *,
    ensemble: Sequence[Path | str] = (),
    threshold: float | None = None,
    batch_size: int = 64,
    block: int = BLOCK,
    device: str = "auto",
    precision: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> Iterator[Prediction]:
    """Classify `documents` (texts, or (source, text) pairs) with the classifier in
    `run`, averaging the probabilities of the classifiers in `ensemble` with its own.

    Yields one Prediction per document, in input order, block by block (see the module
    doc). `threshold` in [0, 1]: below it a prediction abstains (label None).
    `progress` is called with the number of documents done after each block.
    """
    scorer = load_scorer(run, ensemble=ensemble, batch_size=batch_size, device=device,
                         precision=precision)
    yield from scorer.predict(documents, threshold=threshold, block=block, progress=progress)


def classify_sources(
    scorer: Scorer,
    sources: Sequence[str | Path],
    *,
    per_line: bool = False,
    encoding_errors: str = "strict",
    report: SkipReport | None = None,
    threshold: float | None = None,
    block: int = BLOCK,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Prediction]:
    """`scorer.predict` over files, directories, globs or "-" (see text/documents.py);
    what was skipped goes into `report`. The flags are checked before anything is read."""
    documents = read_documents(sources, per_line=per_line, encoding_errors=encoding_errors,
                               max_chars=scorer.max_chars() + 1, report=report)
    return scorer.predict(documents, threshold=threshold, block=block, progress=progress)
