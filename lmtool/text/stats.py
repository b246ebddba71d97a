"""`tokenize stats`: how a tokenizer fits a corpus (tokens, characters per token, [UNK] rate)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmtool.text.encode import CHUNK_CHARS, iter_encoded
from lmtool.text.sources import ReadReport, iter_pieces
from lmtool.text.specials import SPECIAL_IDS


def corpus_stats(
    sources: Sequence[str | Path],
    tok: Any,
    *,
    document: str = "paragraph",
    encoding_errors: str = "strict",
    chunk_chars: int = CHUNK_CHARS,
) -> dict:
    """Encode `sources` (streaming, nothing written) and count what the tokenizer did.

    Tokens are the text's own tokens: the [EOS] that `encode` adds between documents is
    not counted. Vocabulary use is distinct ids seen / vocabulary size.
    """
    vocab_size = tok.get_vocab_size()
    counts = np.zeros(vocab_size, dtype=np.int64)  # occurrences of every id
    report = ReadReport()
    pieces = iter_pieces(sources, document=document, encoding_errors=encoding_errors, report=report)
    for _, ids_list in iter_encoded(tok, pieces, chunk_chars=chunk_chars):
        flat = np.fromiter((i for ids in ids_list for i in ids), dtype=np.int64)
        counts += np.bincount(flat, minlength=vocab_size)[:vocab_size]
    if report.documents == 0:
        raise report.no_text()
    tokens = int(counts.sum())
    unknown = int(counts[SPECIAL_IDS.unk])
    distinct = int((counts > 0).sum())
    return {
        "documents": report.documents,
        "tokens": tokens,
        "characters": report.characters,
        "bytes": report.bytes,
        "chars_per_token": report.characters / tokens if tokens else 0.0,
        "unknown_tokens": unknown,
        "unknown_rate": unknown / tokens if tokens else 0.0,
        "distinct_ids": distinct,
        "vocab_size": vocab_size,
        "vocab_use": distinct / vocab_size,
        "files": report.files,
        "warnings": report.warnings(encoding_errors),
    }
