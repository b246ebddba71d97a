"""Special tokens. Every lmtool tokenizer, of any kind, has all of them at ids 0..6.

Fixed ids keep the rest of the code simple: a model never needs to ask which id is
padding, and a checkpoint's tokenizer can always be checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # What the model reads before a text and after it: lmtool's own runs start every
    # document after an [EOS] (as in their token shards); an imported run keeps what
    # its tokenizer adds (Llama's <s>, BERT's [CLS] ... [SEP], nothing for GPT-2).
    start: tuple[int, ...] = (3,)
    end: tuple[int, ...] = (3,)
    imported: bool = False  # ids from an imported tokenizer, not lmtool's 0..6
    others: tuple[int, ...] = field(default=())  # the tokenizer's other special ids

    def never_generated(self) -> tuple[int, ...]:
        """Special ids a generator never writes: all but [EOS] (end of document)."""
        ids = {self.pad, self.unk, self.bos, self.mask, self.cls, self.sep, *self.others}
        return tuple(sorted(ids - {self.eos}))


SPECIAL_IDS = SpecialIds()


def special_ids(model_config) -> SpecialIds:
    """The special ids of a run's model: lmtool's 0..6, or those its import recorded."""
    recorded = getattr(model_config, "specials", None) or {}
    if not recorded:
        return SPECIAL_IDS
    names = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")
    return SpecialIds(**{k: int(recorded[k]) for k in names},
                      start=tuple(recorded.get("start", ())), end=tuple(recorded.get("end", ())),
                      imported=True, others=tuple(recorded.get("others", ())))
