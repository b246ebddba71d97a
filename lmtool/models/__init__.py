"""Language models: configs and presets, the transformer, the AWD-LSTM.

    from lmtool.models import build_model, resolve_model_config
    config = resolve_model_config("transformer", "causal", "tiny", {"vocab_size": 65})
    model = build_model(config)       # model(idx) -> logits (B, T, V)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lmtool.models.config import PRESETS, ModelConfig, resolve_model_config

if TYPE_CHECKING:
    from lmtool.models.base import LanguageModel, parameter_groups

__all__ = [
    "PRESETS",
    "LanguageModel",
    "ModelConfig",
    "build_model",
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
