"""Language models: configs and presets, the transformer, the AWD-LSTM; and the
encoder–decoders (models/seq2seq.py).

    from lmtool.models import build_model, resolve_model_config
    config = resolve_model_config("transformer", "causal", "tiny", {"vocab_size": 65})
    model = build_model(config)       # model(idx) -> logits (B, T, V)
    model = build_seq2seq(seq2seq_config)   # models/seq2seq_config.py's Seq2SeqConfig
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lmtool.models.config import PRESETS, ModelConfig, resolve_model_config

if TYPE_CHECKING:
    from lmtool.models.base import LanguageModel, parameter_groups
    from lmtool.models.seq2seq import EncoderDecoder
    from lmtool.models.seq2seq_config import Seq2SeqConfig

__all__ = [
    "PRESETS",
    "LanguageModel",
    "ModelConfig",
    "build_model",
    "build_seq2seq",
    "parameter_groups",
    "resolve_model_config",
]


def __getattr__(name: str):
    """Torch loads on first use: the CLI reads configs (and --help) without it."""
    if name in ("LanguageModel", "parameter_groups"):
        return getattr(importlib.import_module("lmtool.models.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(config: ModelConfig) -> LanguageModel:
    """A freshly initialised model for `config` (its vocab_size must be set)."""
    from lmtool.errors import BadInput

    if config.vocab_size < 1:
        raise BadInput("the model config has no vocab_size", "set it from the tokenizer")
    if config.arch == "lstm":
        from lmtool.models.lstm import AWDLSTM

        return AWDLSTM(config)
    from lmtool.models.transformer import Transformer

    return Transformer(config)


def build_seq2seq(config: Seq2SeqConfig | dict) -> EncoderDecoder:
    """A freshly initialised encoder–decoder (models/seq2seq.py) for `config` (its
    vocab_size must be set): the LSTM or the Transformer."""
    from lmtool.errors import BadInput
    from lmtool.models.seq2seq_config import Seq2SeqConfig

    if isinstance(config, dict):
        config = Seq2SeqConfig.from_dict(config)
    if config.vocab_size < 1:
        raise BadInput("the model config has no vocab_size", "set it from the tokenizer")
    if config.arch == "lstm":
        from lmtool.models.seq2seq_lstm import LSTMSeq2Seq

        return LSTMSeq2Seq(config)
    from lmtool.models.seq2seq_transformer import TransformerSeq2Seq

    return TransformerSeq2Seq(config)
