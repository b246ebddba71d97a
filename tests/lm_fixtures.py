"""Tiny generated corpora, tokenizers and shards for the training tests (not a test file).

The text is made by a seeded toy grammar, so it has real structure (a model can beat
the unigram baseline) and nothing is copied from anywhere.
"""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "her sister", "the bird"]
VERBS = ["sees", "likes", "finds", "follows", "calls", "feeds"]
OBJECTS = ["the ball", "a red apple", "the small house", "his hat", "the river", "a letter"]
ENDINGS = ["today", "at night", "in the garden", "after lunch", "again", "with care"]

# Small enough for the tests: 2 layers, width 32, context 32.
TINY = ["--layers", "2", "--heads", "2", "--dim", "32", "--context", "32"]


def generate_text(seed: int = 0, paragraphs: int = 120) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(1, 3)):
            s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            sentences.append(s + f" {rng.choice(ENDINGS)}.")
        out.append(" ".join(sentences).capitalize())
    return "\n\n".join(out) + "\n"


def make_shards(root: Path, *, kind: str = "char", vocab_size: int = 64, seed: int = 0,
                paragraphs: int = 120, name: str = "data") -> Path:
    """Write text, train a tokenizer and encode shards under `root`; return the shard dir."""
    from lmtool.text.encode import encode_corpus
    from lmtool.text.tokenizer import save_tokenizer, train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    text = root / f"{name}.txt"
    text.write_text(generate_text(seed, paragraphs))
    tok = train_tokenizer([text], kind=kind, vocab_size=vocab_size, min_frequency=1)
    tok_path = root / f"{name}-tok.json"
    save_tokenizer(tok, tok_path)
    out = root / name
    encode_corpus([text], tok_path, out, val_fraction=0.1, seed=seed)
    return out


def assert_torchrun_succeeded(proc) -> None:
    """Every rank of a torchrun exited 0: no tolerance for an abort at interpreter exit
    (the ranks leave through distributed.exit_rank, which skips finalization)."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr, proc.stderr[-3000:]
