"""`tokenize encode`: text sources → token shards (the writer side of lmtool.text.shards).

The corpus streams through in chunks of about `CHUNK_CHARS` characters: each chunk is
encoded with the tokenizer's batch encoder (Rust, all cores) in a worker thread while
the next chunk is read, and its ids are appended to train.bin / val.bin at once. Peak
memory is a few chunks, whatever the corpus size.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmtool import __version__
from lmtool.errors import BadInput
from lmtool.fsio import atomic_dir, named
from lmtool.outputs import SHARDS, check_output
from lmtool.text.shards import FORMAT, META, TOKENIZER, VERSION, dtype_for_vocab
from lmtool.text.sources import STDIN, ReadReport, iter_pieces, resolve_sources
from lmtool.text.specials import SPECIAL_IDS
from lmtool.text.tokenizer import find_tokenizer_file, load_tokenizer, tokenizer_sha256

CHUNK_CHARS = 1 << 20  # characters of text per batch-encode call
SPLITS = ("train", "val")

# A progress callback gets (bytes read so far, total bytes or None for stdin, tokens so far).
Progress = Callable[[int, "int | None", int], None]


def in_val(index: int, seed: int, val_fraction: float) -> bool:
    """Whether document `index` is held out: a seeded hash of the index, so it can be
    decided while streaming and is the same on every run with the same seed."""
    if val_fraction <= 0:
        return False
    # splitmix64 of (seed, index): well-mixed 64 bits → a uniform number in [0, 1).
    mask = (1 << 64) - 1
    x = (index + (seed & mask) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    return x / 2.0**64 < val_fraction


def batch_encoder(tok: Any) -> Callable[[list[str]], list]:
    """The tokenizer's fastest batch encoder (no offsets), adding no special tokens."""
    encode = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    return lambda texts: encode(texts, add_special_tokens=False)


def iter_encoded(
    tok: Any, pieces: Iterable[tuple[str, bool]], *, chunk_chars: int = CHUNK_CHARS
) -> Iterator[tuple[list[bool], list[list[int]]]]:
    """(is_last flags, ids) per chunk of document pieces, in order.

    Chunk k+1 is read (Python, holding the GIL) while chunk k is encoded (Rust, which
    releases it), so reading and encoding overlap; at most two chunks are alive.
    """
    encode = batch_encoder(tok)

    def run(texts: list[str], anchors: list[str]) -> list[list[int]]:
        whole = iter(encode([t for t, a in zip(texts, anchors, strict=True) if not a]))
        return [continued(tok, a, t) if a else next(whole).ids
                for t, a in zip(texts, anchors, strict=True)]

    def chunks() -> Iterator[tuple[list[str], list[bool], list[str]]]:
        texts: list[str] = []
        lasts: list[bool] = []
        anchors: list[str] = []  # the previous piece's last character, for a continuation
        size = 0
        before = ""
        for text, last in pieces:
            texts.append(text)
            lasts.append(last)
            anchors.append(before)
            before = "" if last else text[-1:]
            size += len(text)
            if size >= chunk_chars:
                yield texts, lasts, anchors
                texts, lasts, anchors, size = [], [], [], 0
        if texts:
            yield texts, lasts, anchors

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for texts, lasts, anchors in chunks():
            future = pool.submit(run, texts, anchors)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (lasts, future)
        if pending is not None:
            yield pending[0], pending[1].result()


def continued(tok: Any, anchor: str, text: str) -> list[int]:
    """The ids of `text`, a piece that continues a document after `anchor` (the end of
    the piece before: its last character), as they are inside the whole document. Encoded
    alone, its first word would get the space a tokenizer puts before a text
    (tokenizer.PREFIX_SPACE); encoded after the anchor, the tokens that cover only the
    anchor are dropped."""
    e = tok.encode(anchor + text, add_special_tokens=False)
    return [i for i, (_, end) in zip(e.ids, e.offsets, strict=True) if end > len(anchor)]


@dataclass
class ShardWriter:
    """Appends token ids to `<split>.bin` files in `directory`, counting tokens and documents.

    `add` buffers one document piece (plus [EOS] after a document's last piece); `flush`
    writes the buffers out, once per chunk, so numpy converts one long list per split.
    """

    directory: Path
    dtype: np.dtype
    splits: Sequence[str] = SPLITS
    eos: int = SPECIAL_IDS.eos
    tokens: dict[str, int] = field(default_factory=dict)
    documents: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # .bin files are little-endian whatever the machine.
        self.dtype = np.dtype(self.dtype).newbyteorder("<")
        # The files stay open for the writer's life; close() closes them.
        self._files = {s: open(self.directory / f"{s}.bin", "wb") for s in self.splits}  # noqa: SIM115
        self._buffer: dict[str, list[int]] = {s: [] for s in self.splits}
        self._current = dict.fromkeys(self.splits, 0)  # tokens of the unfinished document
        self._last_doc = dict.fromkeys(self.splits, 0)  # tokens of the last finished one
        for s in self.splits:
            self.tokens[s] = self.documents[s] = 0

    def write(self, split: str, ids: Sequence[int] | np.ndarray, documents: int = 0) -> None:
        """Append ids straight to the file; `documents` says how many documents they end."""
        array = np.asarray(ids, dtype=self.dtype)
        f = self._files[split]
        try:
            f.write(array.data)  # not ndarray.tofile: its OSError has no errno
        except OSError as e:
            raise named(e, Path(f.name)) from None
        self.tokens[split] += len(array)
        self.documents[split] += documents

    def add(self, split: str, ids: Sequence[int], last: bool) -> None:
        """Buffer one piece of a document; after its last piece comes [EOS]."""
        buffer = self._buffer[split]
        buffer.extend(ids)
        self._current[split] += len(ids)
        if last:
            buffer.append(self.eos)
            self.documents[split] += 1
            self._last_doc[split] = self._current[split] + 1
            self._current[split] = 0

    def flush(self) -> None:
        for split, buffer in self._buffer.items():
            if buffer:
                self.write(split, buffer)
                buffer.clear()

    def move_last_document(self, src: str, dst: str) -> None:
        """Move the last finished document of `src` to the end of `dst`, truncating `src`."""
        self.flush()
        n = self._last_doc[src]
        f = self._files[src]
        f.flush()
        start = (self.tokens[src] - n) * self.dtype.itemsize
        with open(f.name, "rb") as r:
            r.seek(start)
            self._files[dst].write(r.read())
        f.truncate(start)
        f.seek(start)
        self.tokens[src] -= n
        self.documents[src] -= 1
        self.tokens[dst] += n
        self.documents[dst] += 1
        self._last_doc[src] = 0

    def close(self) -> None:
        self.flush()
        for f in self._files.values():
            f.close()

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {"tokens": self.tokens[s], "documents": self.documents[s]} for s in self.splits}


def _check_args(val_fraction: float) -> None:
    if not 0 <= val_fraction < 1:
        raise BadInput(
            f"--val-fraction must be at least 0 and below 1, not {val_fraction}",
            "0.1 holds out a tenth of the documents",
        )


def _balance_splits(writer: ShardWriter, val_fraction: float, warnings: list[str]) -> None:
    """Make sure both splits have a document when val_fraction > 0 and there are two."""
    if val_fraction <= 0:
        return
    train, val = writer.documents["train"], writer.documents["val"]
    if train + val < 2:
        warnings.append(
            "only one document, so the validation split is empty "
            "(use --document paragraph or line, or add sources)"
        )
    elif val == 0:
        writer.move_last_document("train", "val")
    elif train == 0:
        writer.move_last_document("val", "train")


def encode_corpus(
    sources: Sequence[str | Path],
    tokenizer_path: Path,
    out_dir: Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    document: str = "paragraph",
    encoding_errors: str = "strict",
    force: bool = False,
    progress: Progress | None = None,
    chunk_chars: int = CHUNK_CHARS,
) -> dict:
    """Encode `sources` with the tokenizer into a shard directory; return its meta.

    Every document is followed by [EOS]; a document goes to val.bin when `in_val(index,
    seed, val_fraction)`. If no document landed in val (tiny corpus) the last one is
    moved there; with a single document val stays empty and meta["warnings"] says so.
    """
    _check_args(val_fraction)
    out_dir = Path(out_dir)
    check_output(out_dir, SHARDS, force=force)  # fail before reading anything
    tok = load_tokenizer(tokenizer_path)
    vocab_size = tok.get_vocab_size()
    dtype = dtype_for_vocab(vocab_size)
    report = ReadReport()
    files = resolve_sources(sources, report=report)
    total = None if STDIN in files else sum(os.path.getsize(f) for f in files)
    eos = SPECIAL_IDS.eos
    splits = SPLITS if val_fraction > 0 else ("train",)
    warnings: list[str] = []

    with atomic_dir(out_dir, force=force) as tmp:
        writer = ShardWriter(tmp, dtype, splits, eos=eos)
        try:
            pieces = iter_pieces(
                files, document=document, encoding_errors=encoding_errors, report=report
            )
            index = 0  # index of the document the next piece belongs to
            for lasts, ids_list in iter_encoded(tok, pieces, chunk_chars=chunk_chars):
                for last, ids in zip(lasts, ids_list, strict=True):
                    writer.add("val" if in_val(index, seed, val_fraction) else "train", ids, last)
                    index += last
                writer.flush()
                if progress is not None:
                    progress(report.bytes, total, sum(writer.tokens.values()))
            if report.documents == 0:
                raise report.no_text()
            _balance_splits(writer, val_fraction, warnings)
        finally:
            writer.close()
        if "val" in splits and writer.tokens["val"] == 0:
            (tmp / "val.bin").unlink()
        shutil.copyfile(find_tokenizer_file(tokenizer_path), tmp / TOKENIZER)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "eos_id": eos,
            "tokenizer_sha256": tokenizer_sha256(tok),
            "splits": writer.counts() | ({} if "val" in splits else {"val": _empty()}),
            # absolute, so a run trained elsewhere can name them (stdin stays "-")
            "sources": [s if s == STDIN else os.path.abspath(s) for s in map(str, sources)],
            "files": report.files,
            "counts": {
                "bytes": report.bytes,
                "characters": report.characters,
                "documents": report.documents,
                "tokens": sum(writer.tokens.values()),
            },
            "val_fraction": val_fraction,
            "seed": seed,
            "document": document,
            "encoding_errors": encoding_errors,
            "skipped_binary": report.skipped_binary,
            "undecodable_bytes": report.undecodable_bytes,
            "warnings": warnings + report.warnings(encoding_errors),
            "lmtool_version": __version__,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _empty() -> dict[str, int]:
    return {"tokens": 0, "documents": 0}
