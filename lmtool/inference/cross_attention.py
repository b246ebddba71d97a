"""Where a sequence-to-sequence run looked while translating: the source x target
attention picture of Bahdanau et al. (2015), for `lmtool attention` to draw.

    picture = cross_attention_map("runs/mt-lstm", "Ein Mann fährt Fahrrad.")
    picture.weights         # (T, S): row t = how target token t weighed each source token
    picture.targets         # the T target tokens produced, then "[EOS]" if it stopped there
    picture.sources         # the S source tokens read, then "[EOS]"
    picture.translation     # the text produced

The run translates the source greedily through the generation library (translate.py);
the weights are then the model's own `cross_attention` over that output (one
teacher-forced pass): an LSTM's Bahdanau weights, or a Transformer's cross-attention
of one layer and head, or the mean over layers and/or heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmtool.errors import BadInput
from lmtool.inference.runs import LoadedLM


@dataclass
class CrossAttention:
    weights: np.ndarray  # (T, S), float32; each row sums to 1
    targets: list[str]  # the T target tokens (rows)
    sources: list[str]  # the S source tokens (columns)
    translation: str
    title: str  # which layer and head, as a person reads it


def check_has_attention(run: Path, config: dict) -> None:
    """Refuse, before anything is loaded, an LSTM trained with --attention none."""
    model = config.get("model", {})
    if model.get("arch") == "lstm" and model.get("attention") == "none":
        raise BadInput(f"{run} is an LSTM encoder–decoder without attention (--attention "
                       "none): there is no attention to show",
                       "train one with --attention bahdanau")


def cross_attention_map(run: str | Path | LoadedLM, text: str, *, layer: int | None = None,
                        head: int | None = None, device: str = "auto") -> CrossAttention:
    """Translate `text` greedily, then return the source x target attention weights."""
    import torch

    from lmtool.inference.attention import token_label
    from lmtool.inference.translate import encode_source, load_seq2seq, translate

    lm = load_seq2seq(run, device=device, precision="fp32")
    if not text.strip():
        raise BadInput("the text is empty", "give a sentence to translate")
    config = lm.config
    if config.arch == "lstm":
        check_has_attention(lm.path, {"model": config.to_dict()})
        if layer is not None or head is not None:
            raise BadInput("an LSTM's Bahdanau attention has one layer and one head",
                           "leave out --layer and --head")
        options, title = {}, "Bahdanau attention"
    else:
        _check_range("--layer", layer, config.layers)
        _check_range("--head", head, config.heads)
        options = {"layer": "mean" if layer is None else layer, "head": head}
        title = (f"layer {layer}" if layer is not None else f"mean of {config.layers} "
                 "layers") + ", " + (f"head {head}" if head is not None else
                                     f"mean of {config.heads} heads")
    source = encode_source(lm, text).ids
    [out] = translate(lm, text)
    weights = lm.model.cross_attention(source, out.tokens, **options)  # (T + 1, S)
    # The last row predicted [EOS]; when the output stopped at its length limit, no
    # token was predicted there and the row is left out.
    rows = out.tokens + ([] if out.stop_reason == "length" else [lm.specials.eos])
    weights = weights[: len(rows)].to(torch.float32).cpu().numpy()
    return CrossAttention(weights, [token_label(lm.tokenizer, i) for i in rows],
                          [token_label(lm.tokenizer, i) for i in source], out.text, title)


def _check_range(flag: str, value: int | None, count: int) -> None:
    if value is not None and not 0 <= value < count:
        raise BadInput(f"{flag} {value} is not one of the model's "
                       f"{flag.removeprefix('--')}s 0..{count - 1}")
