"""The self-attention a Transformer run pays to a text, for `lmtool attention` to draw.

    maps = attention_maps("runs/lm", "The baker opened the shop.")
    maps.weights            # (layers, heads, T, T): row i = how query token i weighs each key
    maps.tokens             # the T tokens as read, "[EOS]" first
    maps.select(layer=1, head=None)   # (T, T): layer 1, its heads' mean (None: the mean)

The text is read as a document is: a causal model reads [EOS] then the text (reversed for
a backward model, tokens listed in its reading order), a masked one [EOS] text [EOS].
One forward with the blocks' `keep_weights` set computes softmax(q k^T / sqrt(D) + mask)
explicitly (models/transformer.py) instead of through SDPA, which never returns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmtool.errors import BadInput
from lmtool.inference.runs import LoadedLM, load_lm
from lmtool.text.boundaries import document_text
from lmtool.text.specials import SPECIAL_IDS, SPECIAL_TOKENS


@dataclass
class AttentionMaps:
    weights: np.ndarray  # (layers, heads, T, T), float32; each row sums to 1
    tokens: list[str]  # the T tokens, in reading order

    def select(self, layer: int | None = None, head: int | None = None) -> np.ndarray:
        """(T, T): one layer's (0-based) or the mean of every layer's, one head's or
        the mean of the heads'. A mean of rows that sum to 1 sums to 1."""
        layers, heads = self.weights.shape[:2]
        if layer is not None and not 0 <= layer < layers:
            raise BadInput(f"--layer {layer} is not one of the model's layers 0..{layers - 1}")
        if head is not None and not 0 <= head < heads:
            raise BadInput(f"--head {head} is not one of the model's heads 0..{heads - 1}")
        chosen = self.weights if layer is None else self.weights[layer : layer + 1]
        chosen = chosen if head is None else chosen[:, head : head + 1]  # (L', H', T, T)
        return chosen.mean(axis=(0, 1))  # (T, T)


def token_label(tokenizer, token_id: int) -> str:
    """A token as a person reads it: "[EOS]", "baker", "##er"; a leading space (byte-level
    BPE's Ġ) dropped, a space alone (a character tokenizer's) shown as "␣", any other
    whitespace shown as an escape."""
    if token_id < len(SPECIAL_TOKENS):
        return SPECIAL_TOKENS[token_id]
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    if text == " ":
        return "\u2423"  # ␣: a blank label would hide which column it is
    text = text[1:] if text.startswith(" ") and len(text) > 1 else text
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def reading_ids(lm: LoadedLM, text: str) -> list[int]:
    """The ids the model reads for `text`, as a document (see the module docstring)."""
    body = document_text(text)
    if not body:
        raise BadInput("the text is empty", "give a sentence to read")
    tokens = lm.tokenizer.encode(body, add_special_tokens=False).ids
    if lm.config.objective == "masked":
        ids = [SPECIAL_IDS.eos, *tokens, SPECIAL_IDS.eos]
    else:
        ids = [SPECIAL_IDS.eos, *(tokens[::-1] if lm.config.backward else tokens)]
    if len(ids) > lm.config.context:
        raise BadInput(f"the text is {len(ids)} tokens with its [EOS] marks; the model reads "
                       f"at most {lm.config.context}", "shorten it")
    return ids


def attention_maps(run: str | Path | LoadedLM, text: str, *, device: str = "auto",
                   precision: str = "fp32") -> AttentionMaps:
    """Every layer's and head's attention weights over `text` (one forward pass)."""
    import torch

    lm = _load(run, device, precision)
    ids = reading_ids(lm, text)
    blocks = lm.model.blocks
    for block in blocks:
        block.attn.keep_weights = True
    try:
        with torch.inference_mode():
            lm.model.encode(torch.tensor([ids], device=lm.device))  # (1, T, C)
        weights = torch.stack([b.attn.weights[0] for b in blocks])  # (layers, H, T, T)
    finally:
        for block in blocks:
            block.attn.keep_weights, block.attn.weights = False, None
    tokens = [token_label(lm.tokenizer, i) for i in ids]
    return AttentionMaps(weights.float().cpu().numpy(), tokens)


def _load(run: str | Path | LoadedLM, device: str, precision: str) -> LoadedLM:
    """A Transformer language model, causal or masked; an AWD-LSTM is refused."""
    if isinstance(run, LoadedLM):
        lm = run
    else:
        from lmtool.checkpoint import read_run_config

        config = read_run_config(Path(run))
        model = config.get("model", {})
        if model.get("arch") == "lstm":
            raise BadInput(f"{run} is an AWD-LSTM: it has no attention to draw",
                           "pass a Transformer run (pretrain --arch transformer)")
        lm = load_lm(run, device=device, precision=precision,
                     objective=model.get("objective", "causal"))
    if lm.config.arch != "transformer":
        raise BadInput(f"{lm.path} is an AWD-LSTM: it has no attention to draw",
                       "pass a Transformer run (pretrain --arch transformer)")
    return lm
