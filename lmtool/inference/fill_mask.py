"""Fill-mask: a masked (BERT-style) run's guesses for each [MASK] in a text.

    from lmtool.inference import fill_mask
    [fill] = fill_mask("runs/mlm", "The cat sat on the [MASK].", top_k=3)
    fill.masks[0]     # [MaskCandidate(token="mat", id=…, probability=0.41), …]
    fill.filled       # the text with every [MASK] replaced by its best guess

Each text is read as one document ([EOS] text [EOS], as documents sit in the shards
the model was trained on) in one forward pass; every mask is guessed independently.
Tokenizers that attach a space to the word after it (byte-level BPE, unigram) learned
[MASK] in place of " word", so the space before a written [MASK] is left to the mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lmtool.errors import BadInput
from lmtool.inference.runs import LoadedLM, load_lm
from lmtool.text.specials import MASK, SPECIAL_IDS, SPECIAL_TOKENS

SPACE_BEFORE_MASK = re.compile(r"[ \t]+(?=" + re.escape(MASK) + ")")


@dataclass
class MaskCandidate:
    token: str  # the token's text, spaces stripped
    id: int
    probability: float


@dataclass
class MaskFill:
    text: str
    masks: list[list[MaskCandidate]]  # per [MASK], in order: the top-k, most likely first
    filled: str  # the text with every [MASK] replaced by its most likely token
    index: int = 0  # position in the input

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "filled": self.filled,
            "masks": [
                [{"token": c.token, "id": c.id, "probability": round(c.probability, 6)}
                 for c in candidates]
                for candidates in self.masks
            ],
        }


def fill_mask(
    run: str | Path | LoadedLM,
    texts: str | Sequence[str],
    *,
    top_k: int = 5,
    device: str = "auto",
    precision: str = "auto",
    on_error: Callable[[int, BadInput], None] | None = None,
) -> list[MaskFill]:
    """The top_k guesses for every [MASK] of each text. A bad text raises BadInput, or,
    with `on_error`, is reported as (index, error) and skipped."""
    if top_k < 1:
        raise BadInput("--top-k must be >= 1")
    lm = load_lm(run, device=device, precision=precision, objective="masked")
    texts = [texts] if isinstance(texts, str) else list(texts)
    results = []
    for i, text in enumerate(texts):
        try:
            results.append(_fill_one(lm, text, top_k, i))
        except BadInput as e:
            if on_error is None:
                raise
            on_error(i, e)
    return results


def _attaches_space(tokenizer) -> bool:
    """Whether the tokenizer glues a space to the word after it."""
    return type(tokenizer.pre_tokenizer).__name__ in ("ByteLevel", "Metaspace")


def _encode_around_masks(tokenizer, text: str) -> list[int]:
    """The ids of a text holding [MASK]s, each text after a mask encoded as it reads
    inside the text: a tokenizer that puts a space before every text would put one
    after each mask too (text/tokenizer.py PREFIX_SPACE), so that text is encoded after
    a line end, whose tokens are then dropped (text.encode.continued)."""
    from lmtool.text.encode import continued

    first, *rest = text.split(MASK)
    ids = tokenizer.encode(first, add_special_tokens=False).ids if first else []
    for part in rest:
        ids += [SPECIAL_IDS.mask, *(continued(tokenizer, "\n", part) if part else [])]
    return ids


def _ids(lm: LoadedLM, text: str, where: str) -> tuple[list[int], int, int]:
    """The ids the model reads for `text`, and how many of them its marks take before
    and after the text. lmtool's runs: [EOS] text [EOS], around [MASK]s encoded apart.
    An imported run: its tokenizer's own encoding (its template, e.g. [CLS] ... [SEP],
    and its own mask token), as `transformers` would give it."""
    specials, tokenizer = lm.specials, lm.tokenizer
    mask = tokenizer.id_to_token(specials.mask) if specials.imported else MASK
    if mask not in text:
        raise BadInput(f"{where} has no {mask}", f"write {mask} where a word should be guessed")
    if specials.imported:
        return tokenizer.encode(text).ids, len(specials.start), len(specials.end)
    source = SPACE_BEFORE_MASK.sub("", text) if _attaches_space(tokenizer) else text
    return [SPECIAL_IDS.eos, *_encode_around_masks(tokenizer, source), SPECIAL_IDS.eos], 1, 1


def _fill_one(lm: LoadedLM, text: str, top_k: int, index: int) -> MaskFill:
    tokenizer, model, specials = lm.tokenizer, lm.model, lm.specials
    where = f"input {index + 1}"
    ids, before, after = _ids(lm, text, where)
    if len(ids) > lm.config.context:
        raise BadInput(
            f"{where} has {len(ids)} tokens with its [EOS] marks; the model reads at most "
            f"{lm.config.context}", "shorten it",
        )
    x = torch.tensor([ids], device=lm.device)  # (1, T)
    where_mask = x == specials.mask  # (1, T)
    with torch.inference_mode():
        logits = model(x, where=where_mask).float()  # (M, V): one row per mask
        never = list(specials.never_generated()) + [specials.eos] if specials.imported \
            else list(range(len(SPECIAL_TOKENS)))
        logits[:, never] = float("-inf")  # never a special token
        probs = torch.softmax(logits, dim=-1)
        top = probs.topk(min(top_k, probs.size(-1)), dim=-1)
    masks = [
        [MaskCandidate(tokenizer.decode([i]).strip(), i, p)
         for p, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    best = iter(top.indices[:, 0].tolist())
    filled_ids = [next(best) if t == specials.mask else t
                  for t in ids[before : len(ids) - after]]
    filled = tokenizer.decode(filled_ids)
    if not text[:1].isspace():  # a guess at the start keeps no space the text did not have
        filled = filled.lstrip()
    return MaskFill(text, masks, filled, index)
