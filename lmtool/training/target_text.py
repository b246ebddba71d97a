"""The target text of `finetune lm`: encoded with the base run's tokenizer into shards
in a temporary directory (a tenth of its documents held out), or a shard directory made
with that tokenizer, read as it is."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmtool.checkpoint import TOKENIZER
from lmtool.errors import BadInput
from lmtool.training.run import stored_path
from lmtool.wording import count

VAL_FRACTION = 0.1  # of the target's documents, held out


def tokens_sha256(*arrays: np.ndarray | None) -> str:
    """A hash of token arrays, as int64 (whatever their dtype on disk)."""
    digest = hashlib.sha256()
    for array in arrays:
        for start in range(0, 0 if array is None else len(array), 1 << 20):
            digest.update(np.asarray(array[start : start + (1 << 20)], dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def encode_target(sources: Sequence[str | Path], tokenizer_path: Path, out_dir: Path, *,
                  seed: int, document: str, encoding_errors: str,
                  specials: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode the target text into out_dir/{train,val}.bin; (train, val) memmaps.
    `specials`: an imported run's recorded ids (its end-of-text ends each document)."""
    from lmtool.text.encode import ShardWriter, in_val, iter_encoded
    from lmtool.text.labelled import iter_text_pieces
    from lmtool.text.shards import dtype_for_vocab
    from lmtool.text.sources import ReadReport
    from lmtool.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path, lmtool_specials=not specials)
    dtype = dtype_for_vocab(tok.get_vocab_size())
    report = ReadReport()
    writer = ShardWriter(out_dir, dtype, **({"eos": int(specials["eos"])} if specials else {}))
    try:
        index = 0
        pieces = iter_text_pieces(sources, document=document,
                                  encoding_errors=encoding_errors, report=report)
        for lasts, ids_list in iter_encoded(tok, pieces):
            for last, ids in zip(lasts, ids_list, strict=True):
                writer.add("val" if in_val(index, seed, VAL_FRACTION) else "train", ids, last)
                index += last
            writer.flush()
        if writer.documents["val"] == 0 and writer.documents["train"] > 1:
            writer.move_last_document("train", "val")  # a tiny target still holds one out
    finally:
        writer.close()
    if report.documents == 0:
        binary = f" ({count(len(report.skipped_binary), 'binary file')} skipped)" if (
            report.skipped_binary) else ""
        raise BadInput(f"the target text holds no text{binary}", "pass text files")
    if writer.documents["val"] == 0:
        raise BadInput("the target text is a single document: nothing to hold out for "
                       "evaluation", "pass more text, or --document line")
    arrays = tuple(np.fromfile(out_dir / f"{split}.bin", dtype=dtype) if writer.tokens[split]
                   else np.zeros(0, dtype=dtype) for split in ("train", "val"))
    return arrays  # type: ignore[return-value]


@contextlib.contextmanager
def target_data(sources, base_dir: Path, output: Path, base_config: dict, *, seed: int,
                 document: str, encoding_errors: str):
    """(train, val, description) of the target, from shards or encoded text (cleaned up)."""
    from lmtool.text.shards import META, open_shards

    if len(sources) == 1 and str(sources[0]) != "-" and (Path(sources[0]) / META).is_file():
        shards = open_shards(Path(sources[0]))
        if shards.tokenizer_sha256 != base_config.get("tokenizer", {}).get("sha256"):
            raise BadInput(f"the shards in {sources[0]} were made with another tokenizer than "
                           f"the run {base_dir}'s",
                           f"pass text, or shards encoded with {base_dir / TOKENIZER}")
        if shards.val is None:
            raise BadInput(f"{sources[0]} has no validation split to evaluate on",
                           "encode it with --val-fraction above 0, or pass text")
        yield shards.train, shards.val, {"path": str(Path(sources[0]).resolve())}
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{output.name}.finetune-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=output.parent))
    try:
        train, val = encode_target(sources, base_dir / TOKENIZER, tmp, seed=seed,
                                   document=document, encoding_errors=encoding_errors,
                                   specials=base_config.get("model", {}).get("specials"))
        paths = [stored_path(s) for s in sources]
        yield train, val, {"path": ", ".join(paths), "sources": paths, "document": document}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
