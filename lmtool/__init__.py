"""lmtool: tokenizers, language-model pre-training, ULMFiT fine-tuning and generation."""

__version__ = "0.1.0"
