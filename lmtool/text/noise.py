"""BART's noise (Lewis et al. 2019): the corrupted copy of a text that an encoder–decoder
learns to rebuild in denoising pre-training.

    rng = np.random.default_rng(seed)
    noisy = corrupt(ids, rng)                        # 30% of the tokens masked, in spans
    noisy = corrupt(ids, rng, sentence_ends=ends)    # sentences shuffled first

Text infilling: span lengths are drawn from Poisson(λ = 3) until they cover
`mask_ratio` of the tokens (the last cut to fit), and each span, whatever its length
(0 included: then a [MASK] is inserted), becomes a single [MASK], so the model must also
learn how many tokens are missing. Spans never touch: between two of them there is at
least one kept token (two adjacent spans would read as one [MASK]).

The places are drawn so: with n tokens, k spans covering L of them, there are n - L kept
tokens and n - L + 1 gaps around them; the spans take k distinct gaps, in order.

Sentence permutation: the sentences (each ending at a token in `sentence_ends`, the last
at the end of the text) are shuffled before the infilling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmtool.text.specials import SPECIAL_IDS, SPECIAL_TOKENS

MASK_RATIO = 0.3  # BART's best mix: 30% of the tokens masked
SPAN_LAMBDA = 3.0  # mean span length (Poisson)


def mask_spans(n: int, rng: np.random.Generator, *, mask_ratio: float = MASK_RATIO,
               span_lambda: float = SPAN_LAMBDA) -> list[tuple[int, int]]:
    """(start, length) of the spans to mask in a text of n tokens, in order,
    non-overlapping and never adjacent; their lengths add up to round(mask_ratio * n)
    when the text leaves room for them (a text of one token keeps it)."""
    target = min(int(round(mask_ratio * n)), n - 1)
    if n < 2 or target <= 0:
        return []
    lengths: list[int] = []
    while sum(lengths) < target:
        lengths.append(int(rng.poisson(span_lambda)))
    lengths[-1] -= sum(lengths) - target  # the last span cut to fit
    kept = n - target
    lengths = lengths[: kept + 1]  # at most one span per gap (keeps them apart)
    lengths[-1] += target - sum(lengths)  # dropped spans: their tokens go to the last
    gaps = np.sort(rng.choice(kept + 1, size=len(lengths), replace=False))
    spans, removed = [], 0
    for gap, length in zip(gaps.tolist(), lengths, strict=True):
        start = gap + removed  # kept tokens before it, and the spans' tokens before those
        spans.append((start, length))
        removed += length
    return spans


def permute_sentences(ids: Sequence[int], rng: np.random.Generator,
                      sentence_ends: set[int] | frozenset[int]) -> list[int]:
    """The sentences of `ids` in a random order (one sentence: unchanged)."""
    sentences, start = [], 0
    for i, token in enumerate(ids):
        if token in sentence_ends:
            sentences.append(list(ids[start : i + 1]))
            start = i + 1
    if start < len(ids):
        sentences.append(list(ids[start:]))
    order = rng.permutation(len(sentences))
    return [t for i in order for t in sentences[i]]


def corrupt(ids: Sequence[int], rng: np.random.Generator, *, mask_ratio: float = MASK_RATIO,
            span_lambda: float = SPAN_LAMBDA,
            sentence_ends: set[int] | frozenset[int] | None = None) -> list[int]:
    """`ids` with sentences shuffled (if `sentence_ends`), then each span of
    `mask_spans` replaced by one [MASK]."""
    ids = permute_sentences(ids, rng, sentence_ends) if sentence_ends else list(ids)
    out, at = [], 0
    for start, length in mask_spans(len(ids), rng, mask_ratio=mask_ratio,
                                    span_lambda=span_lambda):
        out += ids[at:start]
        out.append(SPECIAL_IDS.mask)
        at = start + length
    return out + ids[at:]


def sentence_end_ids(tokenizer) -> frozenset[int]:
    """The tokens that end a sentence: those whose text ends in . ! or ? (a character
    tokenizer's ".", a BPE's "Ġshop." alike)."""
    ends = (".", "!", "?")
    return frozenset(i for i in tokenizer.get_vocab().values()
                     if i >= len(SPECIAL_TOKENS) and tokenizer.decode([i]).rstrip().endswith(ends))
