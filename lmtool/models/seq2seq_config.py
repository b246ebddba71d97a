"""Encoder–decoder configuration: one typed dataclass (saved in config.json), presets
as plain dicts of overrides, one validation that names every bad flag. No torch here:
the CLI reads it for --help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from lmtool.errors import BadInput
from lmtool.models.config import POSITIONS, dataclass_from_dict

ATTENTIONS = ("none", "bahdanau")  # LSTM decoder: Sutskever's fixed vector, or additive


@dataclass
class Seq2SeqConfig:
    arch: str = "transformer"  # "transformer" or "lstm" (bidirectional encoder, LSTM decoder)
    objective: str = "seq2seq"  # always: what config.json's "objective" says of such a run
    vocab_size: int = 0  # the one tokenizer's, shared by source and target
    context: int = 128  # most tokens of a source, and of a target, the model reads
    layers: int = 3  # encoder layers, and as many decoder layers
    heads: int = 4  # attention heads (transformer)
    dim: int = 256  # transformer width; LSTM embedding size (and its output layer's)
    hidden: int = 512  # LSTM hidden size (each direction of the encoder, the decoder)
    mlp_ratio: int = 4  # transformer MLP width = mlp_ratio * dim
    positions: str = "rotary"  # transformer: "rotary" or "learned", as the LM's
    # "none": the decoder starts from the encoder's final states and never looks back
    # (Sutskever et al. 2014); "bahdanau": additive attention over every source
    # position at every target step (Bahdanau et al. 2015). LSTM only.
    attention: str = "bahdanau"
    dropout: float = 0.1
    # The source and target embeddings and the output layer are one matrix: one
    # tokenizer serves both sides, so a word has one vector wherever it appears.
    tie_embeddings: bool = True
    # Teacher-forced cross-entropy against targets smoothed by this much (Szegedy et al.
    # 2016; Vaswani et al. 2017 used 0.1). Held-out loss and perplexity are unsmoothed.
    label_smoothing: float = 0.1
    backward: bool = False  # never: what the generation library asks of every model

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Seq2SeqConfig:
        return dataclass_from_dict(cls, data, "seq2seq model")


FIELDS = {f.name for f in fields(Seq2SeqConfig)} - {"arch", "objective", "vocab_size", "backward"}
# Fields only one architecture reads.
ARCH_FIELDS = {"transformer": ("heads", "mlp_ratio", "positions"),
               "lstm": ("hidden", "attention")}

# tiny: CPU minutes (the tests' synthetic tasks, a first look at Multi30k); small: CPU
# hours (Multi30k-sized, the size of the PyTorch tutorials' models); base: a GPU
# (Vaswani et al.'s base Transformer; Bahdanau et al.'s 1000-unit RNNsearch, narrower).
PRESETS: dict[str, dict[str, dict]] = {
    "transformer": {
        "tiny": dict(layers=2, heads=4, dim=128, context=64, dropout=0.1),
        "small": dict(layers=3, heads=8, dim=256, context=128, dropout=0.1),
        "base": dict(layers=6, heads=8, dim=512, context=256, dropout=0.1),
    },
    "lstm": {
        "tiny": dict(layers=1, dim=128, hidden=256, context=64, dropout=0.2),
        "small": dict(layers=2, dim=256, hidden=512, context=128, dropout=0.3),
        "base": dict(layers=2, dim=512, hidden=1000, context=256, dropout=0.3),
    },
}
# Training defaults that go with them (over TrainConfig's, under the flags).
TRAIN_PRESETS: dict[str, dict[str, dict]] = {
    "transformer": {
        "tiny": dict(batch_size=32, lr=2e-3, optimizer="adamw", weight_decay=0.01,
                     beta2=0.98, epochs=10),
        "small": dict(batch_size=64, lr=1e-3, optimizer="adamw", weight_decay=0.01,
                      beta2=0.98, epochs=10),
        "base": dict(batch_size=64, lr=5e-4, optimizer="adamw", weight_decay=0.01,
                     beta2=0.98, epochs=20),
    },
    "lstm": {
        "tiny": dict(batch_size=32, lr=2e-3, optimizer="adamw", weight_decay=0.01, epochs=10),
        "small": dict(batch_size=64, lr=1e-3, optimizer="adamw", weight_decay=0.01,
                      epochs=10),
        "base": dict(batch_size=64, lr=1e-3, optimizer="adamw", weight_decay=0.01,
                     epochs=15),
    },
}


def resolve_seq2seq_config(arch: str, preset: str, overrides: dict | None = None
                           ) -> Seq2SeqConfig:
    """The preset, then the overrides (None values: not given); validated at once."""
    if arch not in PRESETS:
        raise BadInput(f"unknown --arch {arch!r}", f"choose one of {', '.join(PRESETS)}")
    if preset not in PRESETS[arch]:
        raise BadInput(f"unknown --preset {preset!r}",
                       f"choose one of {', '.join(PRESETS[arch])}")
    values = {"arch": arch, **PRESETS[arch][preset]}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = Seq2SeqConfig.from_dict(values)
    validate_seq2seq_config(config)
    return config


def validate_seq2seq_config(c: Seq2SeqConfig) -> None:
    """Raise one BadInput listing every problem, each naming its flag."""
    problems = []
    if c.arch not in PRESETS:
        problems.append(f"--arch must be one of {', '.join(PRESETS)}")
    if c.attention not in ATTENTIONS:
        problems.append(f"--attention must be one of {', '.join(ATTENTIONS)}")
    if c.positions not in POSITIONS:
        problems.append(f"--positions must be one of {', '.join(POSITIONS)}")
    for name in ("context", "layers", "heads", "dim", "hidden", "mlp_ratio"):
        if getattr(c, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if c.context < 2:
        problems.append("--context must be at least 2 (a token and [EOS])")
    if c.arch == "transformer" and c.heads >= 1 and c.dim % c.heads:
        problems.append(f"--dim ({c.dim}) must be divisible by --heads ({c.heads})")
    if c.arch == "transformer" and c.positions == "rotary" and (c.dim // max(c.heads, 1)) % 2:
        problems.append("rotary positions need an even head size (--dim / --heads)")
    if not 0 <= c.dropout < 1:
        problems.append("--dropout must be in [0, 1)")
    if not 0 <= c.label_smoothing < 1:
        problems.append("--label-smoothing must be in [0, 1)")
    if c.objective != "seq2seq" or c.backward:
        problems.append("an encoder–decoder's objective is seq2seq, read forward")
    if problems:
        raise BadInput("invalid model config: " + "; ".join(problems))
