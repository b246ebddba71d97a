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

Reading the sources (`read_documents`): a file is one document, or each of its lines
with `per_line`; a binary or unreadable file is reported in a `SkipReport` and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmtool.errors import BadInput
from lmtool.text.labelled import LabelledReport
from lmtool.text.sources import (
    ENCODING_ERRORS,
    SNIFF_BYTES,
    STDIN,
    ReadReport,
    iter_lines,
    resolve_sources,
)
from lmtool.wording import count

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
    label: str | None  # the most probable class; None when it is below the threshold
    tokens: int  # tokens read ([EOS] included)
    empty: bool  # the text was empty or whitespace: classified, and flagged
    truncated: bool  # longer than max_tokens: only its beginning was read

    @property
    def probability(self) -> float:
        return float(self.probabilities.max())

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable classes, best first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


@dataclass
class SkipReport:
    """Inputs left out while reading; the CLI exits non-zero when there are any."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why)
    undecodable_files: int = 0  # files whose invalid UTF-8 --encoding-errors changed

    def warnings(self) -> list[str]:
        out = [f"skipped {path}: {why}" for path, why in self.skipped[:10]]
        if len(self.skipped) > 10:
            out.append(f"... and {count(len(self.skipped) - 10, 'more skipped file')}")
        if self.undecodable_files:
            files = count(self.undecodable_files, "file")
            out.append(f"invalid UTF-8 replaced or dropped in {files}")
        return out


# --- loading ---------------------------------------------------------------------------


@dataclass
class Member:
    """One classifier of an ensemble, ready to run."""

    path: Path
    model: torch.nn.Module  # a models.classifier.Classifier, in eval mode
    tokenizer: object  # tokenizers.Tokenizer
    labels: list[str]


def load_member(run: Path | str, device: torch.device) -> Member:
    """A classifier run; a language model is refused with a hint."""
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
        """One Prediction per document, in input order, a block at a time."""
        limit = self.max_chars()
        done = 0
        for items in _blocks(documents, block):
            sources = [it[0] if isinstance(it, tuple) else f"#{done + i + 1}"
                       for i, it in enumerate(items)]
            # Stripped, as the labelled readers strip what the classifier was trained on.
            texts = [(it[1] if isinstance(it, tuple) else it).strip() for it in items]
            # Only a document's beginning is read (max_tokens): tokenize no more of it.
            cut = [len(t) > limit for t in texts]
            probs, tokens, truncated = self.score([t[:limit] for t in texts])
            for i, text in enumerate(texts):
                p = probs[i]
                best = int(p.argmax())
                below = threshold is not None and p[best] < threshold
                yield Prediction(
                    index=done + i, source=sources[i], labels=self.labels, probabilities=p,
                    label=None if below else self.labels[best], tokens=int(tokens[i]),
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


def _check(threshold: float | None, block: int) -> None:
    if threshold is not None and not 0 <= threshold <= 1:
        raise BadInput(f"--threshold {threshold} must be between 0 and 1")
    if block < 1:
        raise BadInput("the block size must be at least 1")


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
    _check(threshold, block)
    scorer = load_scorer(run, ensemble=ensemble, batch_size=batch_size, device=device,
                         precision=precision)
    yield from scorer.predict(documents, threshold=threshold, block=block, progress=progress)


def classify_sources(
    run: Path | str,
    sources: Sequence[str | Path],
    *,
    per_line: bool = False,
    encoding_errors: str = "strict",
    report: SkipReport | None = None,
    ensemble: Sequence[Path | str] = (),
    threshold: float | None = None,
    batch_size: int = 64,
    block: int = BLOCK,
    device: str = "auto",
    precision: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> Iterator[Prediction]:
    """`classify` over files, directories, globs or "-" (see `read_documents`); what
    was skipped goes into `report`."""
    _check(threshold, block)
    scorer = load_scorer(run, ensemble=ensemble, batch_size=batch_size, device=device,
                         precision=precision)
    documents = read_documents(sources, per_line=per_line, encoding_errors=encoding_errors,
                               max_chars=scorer.max_chars() + 1, report=report)
    yield from scorer.predict(documents, threshold=threshold, block=block, progress=progress)


# --- reading the sources ------------------------------------------------------------------


def _read_head(source: Path | str, limit: int) -> bytes:
    """The first `limit` bytes of a file or stdin (the rest is never read)."""
    if source == STDIN:
        import sys

        return sys.stdin.buffer.read(limit)
    with open(source, "rb") as f:
        return f.read(limit)


def _decode(data: bytes, errors: str, complete: bool) -> tuple[str | None, bool]:
    """(text, whether bytes were replaced or dropped); text None for invalid UTF-8 under
    "strict". An incomplete read may end inside a character: that one is no error."""
    if not complete:
        # The read limit may have cut the last character: drop its bytes.
        end = len(data)
        while end > 0 and data[end - 1] & 0xC0 == 0x80 and len(data) - end < 3:
            end -= 1  # continuation bytes (10xxxxxx)
        if end > 0 and data[end - 1] >= 0xC0:
            data = data[: end - 1]  # the lead byte of the cut character
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        if errors == "strict":
            return None, False
        return data.decode("utf-8", errors=errors), True


def read_documents(
    sources: Sequence[str | Path],
    *,
    per_line: bool = False,
    encoding_errors: str = "strict",
    max_chars: int = 1 << 20,
    report: SkipReport | None = None,
) -> Iterator[tuple[str, str]]:
    """(source, text) for every document of `sources` (files, directories, globs, "-").

    A file (or stdin) is one document, of which the first `max_chars` characters are
    kept; with `per_line` each line is one (an empty line too: it is classified and
    flagged, never dropped). A binary, unreadable or (with strict decoding) invalid
    UTF-8 file is recorded in `report` and skipped.
    """
    if encoding_errors not in ENCODING_ERRORS:
        raise BadInput(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}")
    report = report if report is not None else SkipReport()
    found = ReadReport()
    files = resolve_sources(list(sources), report=found)
    report.skipped.extend((path, "binary") for path in found.skipped_binary)
    for source in files:
        name = "<stdin>" if source == STDIN else str(source)
        if per_line:
            yield from _lines_of(source, name, encoding_errors, max_chars, report)
            continue
        limit = max_chars * 4  # bytes: a character is at most 4
        try:
            data = _read_head(source, limit + 1)
        except OSError as e:
            report.skipped.append((name, e.strerror or str(e)))
            continue
        if b"\0" in data[:SNIFF_BYTES]:
            report.skipped.append((name, "binary"))
            continue
        text, changed = _decode(data[:limit], encoding_errors, complete=len(data) <= limit)
        if text is None:
            report.skipped.append((name, "not valid UTF-8 (see --encoding-errors)"))
            continue
        report.undecodable_files += changed
        yield name, text[:max_chars]


def _lines_of(source, name: str, errors: str, max_chars: int,
              report: SkipReport) -> Iterator[tuple[str, str]]:
    """Each line of one file as a document; a line longer than `max_chars` is cut."""
    found = ReadReport()
    number, parts, size = 0, [], 0
    try:
        for _, piece in iter_lines([source], encoding_errors=errors, report=found,
                                   limit=max(max_chars, 1)):
            if size < max_chars:  # the parts of a huge line past max_chars are dropped
                parts.append(piece)
                size += len(piece)
            if piece.endswith("\n"):
                number += 1
                yield f"{name}:{number}", "".join(parts).rstrip("\r\n")[:max_chars]
                parts, size = [], 0
        if parts:
            number += 1
            yield f"{name}:{number}", "".join(parts).rstrip("\r\n")[:max_chars]
    except BadInput as e:  # invalid UTF-8 in strict mode, an unreadable file
        report.skipped.append((name, e.message))
    if found.skipped_binary:
        report.skipped.append((name, "binary"))
    report.undecodable_files += bool(found.undecodable_bytes)


# --- evaluation on labelled data -------------------------------------------------------------


def evaluate_classifier(
    run: Path | str,
    labelled: str | Path,
    *,
    ensemble: Sequence[Path | str] = (),
    batch_size: int = 64,
    block: int = BLOCK,
    device: str = "auto",
    precision: str = "auto",
    encoding_errors: str = "strict",
    report: LabelledReport | None = None,
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of the
    classifier in `run` (with `ensemble`) on a labelled file, folder or "-".

    Streams: examples are read, scored and counted a block at a time. A true label the
    classifier never saw is counted as wrong and listed under "unseen_labels" with its
    number of examples.
    """
    from collections import deque

    from lmtool.metrics import Confusion
    from lmtool.text.labelled import iter_labelled

    scorer = load_scorer(run, ensemble=ensemble, batch_size=batch_size, device=device,
                         precision=precision)
    report = report if report is not None else LabelledReport()
    labels: deque[str] = deque()  # true labels of the examples read and not yet scored

    def documents() -> Iterator[tuple[str, str]]:
        for example in iter_labelled(labelled, encoding_errors=encoding_errors, report=report):
            labels.append(example.label)
            yield example.where, example.text

    confusion = Confusion(scorer.labels)
    for p in scorer.predict(documents(), block=block):
        confusion.add(labels.popleft(), p.label)
    result = confusion.report()
    support = {name: result["per_class"][name]["support"] for name in result["unseen_labels"]}
    result["unseen_labels"] = support  # label → examples, all counted wrong
    result["labels"] = list(scorer.labels)
    result["empty_texts"] = len(report.empty_texts)
    return result
