"""Special tokens. Every lmtool tokenizer, of any kind, has all of them at ids 0..6.

Fixed ids keep the rest of the code simple: a model never needs to ask which id is
padding, and a checkpoint's tokenizer can always be checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass

PAD, UNK, BOS, EOS, MASK, CLS, SEP = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS: list[str] = [PAD, UNK, BOS, EOS, MASK, CLS, SEP]


@dataclass(frozen=True)
class SpecialIds:
    pad: int = 0
    unk: int = 1
    bos: int = 2
    eos: int = 3
    mask: int = 4
    cls: int = 5
    sep: int = 6


SPECIAL_IDS = SpecialIds()
