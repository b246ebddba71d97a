"""Have the token embeddings of words rare in pre-training collapsed onto one direction?

    python benchmarks/embedding_collapse.py RUN [RUN ...] --shards SHARDS [--labelled FILE]

Not a test. A softmax tied to the input embedding pushes every token that does not come
next away from the hidden state at every step, so a token seldom seen as the answer is
moved mostly by that push, the same for all of them (Gao et al. 2019, "Representation
Degeneration Problem in Training Natural Language Generation Models"). Rare tokens then
share one direction and carry little of which word they are, which a classifier reading
the embeddings needs. For each bucket of tokens by their count in the pre-training
shards (SHARDS/train.bin): how many, their mean norm and the mean cosine between two of
them (500 sampled). With LABELLED (a `finetune classifier` file), its words too, split by
whether pre-training saw them often.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # see pretrain.py

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

RARE = 20  # fewer occurrences than this in the pre-training shards
COMMON = 1000
SAMPLE = 500


def labelled_counts(path: str, tokenizer, vocab: int) -> np.ndarray:
    from lmtool.text.labelled import iter_labelled

    counts = np.zeros(vocab, dtype=np.int64)
    for example in iter_labelled(path):
        for i in tokenizer.encode(example.text.strip()).ids:
            counts[i] += 1
    return counts


def bucket(embedding: torch.Tensor, mask: np.ndarray) -> str:
    """'tokens, mean norm, mean pairwise cosine' of the rows where `mask` holds."""
    rows = torch.as_tensor(np.nonzero(mask)[0])
    if len(rows) < 2:
        return f"{len(rows):6,} tokens"
    rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:SAMPLE]]
    unit = torch.nn.functional.normalize(embedding[rows], dim=1)
    cosines = (unit @ unit.T)[~torch.eye(len(rows), dtype=torch.bool)]
    return (f"{int(mask.sum()):6,} tokens, norm {embedding[rows].norm(dim=1).mean():6.2f}, "
            f"cosine {cosines.mean():6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="runs sharing SHARDS' tokenizer")
    parser.add_argument("--shards", type=Path, required=True,
                        help="the pre-training shard directory (its train.bin is counted)")
    parser.add_argument("--labelled", help="a labelled file whose words to report apart")
    args = parser.parse_args()

    from lmtool.checkpoint import load_checkpoint
    from lmtool.errors import BadInput
    from lmtool.text.shards import open_shards
    from lmtool.text.tokenizer import load_tokenizer

    try:
        shards = open_shards(args.shards)
    except BadInput as e:
        raise SystemExit(f"embedding_collapse.py: {e}") from None
    tokenizer = load_tokenizer(shards.tokenizer_path)
    vocab = shards.vocab_size
    seen = np.bincount(shards.train, minlength=vocab)
    buckets = {f"pre-training count >= {COMMON}": seen >= COMMON,
               f"count {RARE}..{COMMON - 1}": (seen >= RARE) & (seen < COMMON),
               f"count < {RARE}": seen < RARE}
    if args.labelled:
        task = labelled_counts(args.labelled, tokenizer, vocab) >= 5
        buckets[f"the labelled set's words, count >= {RARE}"] = task & (seen >= RARE)
        buckets[f"the labelled set's words, count < {RARE}"] = task & (seen < RARE)
    for run in args.runs:
        model = load_checkpoint(run, "cpu").model
        table = model.embedding if hasattr(model, "embedding") else model.tok_emb
        embedding = table.weight.detach().float()
        print(run)
        for name, mask in buckets.items():
            print(f"  {name:42} {bucket(embedding, mask)}")


if __name__ == "__main__":
    main()
