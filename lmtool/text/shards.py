"""Token shards on disk: what `tokenize encode` writes and `pretrain` reads.

A shard directory holds:

    meta.json       format, dtype, vocab size, tokenizer hash, per-split counts, sources
    train.bin       every training document's token ids, each followed by [EOS]
    val.bin         the held-out documents, same layout (absent when --val-fraction 0)
    tokenizer.json  a copy of the tokenizer the ids come from

`.bin` files are raw little-endian uint16 (uint32 when the vocabulary has more than
65,536 entries), read back with numpy.memmap so a corpus never has to fit in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmtool.errors import BadInput

FORMAT = "lmtool-shards"
VERSION = 1
META = "meta.json"
TOKENIZER = "tokenizer.json"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class Shards:
    """An opened shard directory. `train` and `val` are read-only memmaps of token ids."""

    path: Path
    meta: dict
    train: np.ndarray
    val: np.ndarray | None

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER

    @property
    def tokenizer_sha256(self) -> str:
        return self.meta["tokenizer_sha256"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])


def open_shards(path: Path) -> Shards:
    """Open a shard directory, checking it is complete; raise BadInput saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(
            f"{path} is not a directory of token shards",
            "make one with: lmtool tokenize encode SOURCES --tokenizer T -o DIR",
        )
    meta_path = path / META
    if not meta_path.is_file():
        raise BadInput(
            f"{path} holds no token shards (no {META})",
            "make them with: lmtool tokenize encode SOURCES --tokenizer T -o DIR",
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{meta_path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise BadInput(f"{meta_path} is not an lmtool shard description")
    dtype = np.dtype(meta["dtype"])
    arrays: dict[str, np.ndarray | None] = {}
    for split in ("train", "val"):
        info = meta["splits"].get(split)
        file = path / f"{split}.bin"
        if not info or info["tokens"] == 0:
            arrays[split] = None
            continue
        if not file.is_file():
            raise BadInput(f"{file} is missing", "re-run lmtool tokenize encode")
        expected = info["tokens"] * dtype.itemsize
        if file.stat().st_size != expected:
            raise BadInput(
                f"{file} has {file.stat().st_size} bytes, meta.json says {expected}",
                "the shards are incomplete or corrupt; re-run lmtool tokenize encode",
            )
        arrays[split] = np.memmap(file, dtype=dtype, mode="r")
    if arrays["train"] is None:
        raise BadInput(f"{path} has no training tokens")
    if not (path / TOKENIZER).is_file():
        raise BadInput(f"{path / TOKENIZER} is missing", "re-run lmtool tokenize encode")
    return Shards(path=path, meta=meta, train=arrays["train"], val=arrays["val"])
