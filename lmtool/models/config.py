"""Model configuration: one typed dataclass, saved as JSON in every checkpoint.

Presets are plain dicts of overrides; `resolve_model_config` applies a preset, then the
user's overrides, and reports every problem at once, naming the flag to fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from lmtool.errors import BadInput
from lmtool.wording import plural

ARCHS = ("transformer", "lstm")
OBJECTIVES = ("causal", "masked")
POSITIONS = ("learned", "rotary")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACES = ("pre", "post")
MLPS = ("gelu", "swiglu")
GELUS = ("exact", "tanh")
# The transformer's family fields: the defaults are lmtool's own Transformer; GPT-2,
# Llama and BERT checkpoints set them (lmtool/hub). Runs from before they existed omit them.
FAMILY_FIELDS = ("norm", "norm_eps", "norm_place", "mlp", "gelu", "mlp_width", "bias",
                 "kv_heads", "rope_theta", "embed_norm", "token_types")
# Fields only one backbone reads (`info` shows a run's own and leaves the others out).
ARCH_FIELDS = {
    "transformer": ("heads", "mlp_ratio", "positions", *FAMILY_FIELDS),
    "lstm": ("hidden", "embed_dropout", "input_dropout", "hidden_dropout", "weight_dropout",
             "output_dropout", "ar", "tar"),
}


def dataclass_from_dict(cls, data: dict, what: str):
    """cls(**data), refusing unknown keys with a BadInput that names them."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise BadInput(f"unknown {what} config {plural(len(unknown), 'field')}: "
                       f"{', '.join(unknown)}")
    return cls(**data)


@dataclass
class ModelConfig:
    arch: str = "transformer"  # "transformer" or "lstm" (AWD-LSTM)
    objective: str = "causal"  # "causal" (next token) or "masked" (BERT-style MLM)
    vocab_size: int = 0  # taken from the tokenizer
    context: int = 256  # tokens per sequence: transformer max positions, LSTM BPTT length
    layers: int = 4  # transformer blocks or stacked LSTM layers
    heads: int = 4  # attention heads (transformer only)
    dim: int = 256  # transformer width; LSTM embedding size
    hidden: int = 1152  # LSTM hidden size (ULMFiT uses 1152); unused by the transformer
    mlp_ratio: int = 4  # transformer MLP width = mlp_ratio * dim
    # "rotary" (RoPE) or "learned" absolute embeddings. Rotary: held-out loss 1.84 vs
    # 1.93 for learned at the tiny preset after 1,100 steps of char tinyshakespeare.
    positions: str = "rotary"
    # Transformer: dropout on attention and residual paths. AWD-LSTM: a multiplier on
    # the five dropouts below (fastai's drop_mult), so 0 turns them all off.
    dropout: float = 0.1
    # AWD-LSTM dropouts at multiplier 1: fastai's values for ULMFiT's language model
    # (`awd_lstm_lm_config` in fastai/text/models/awdlstm.py), not Merity et al.'s: their
    # WikiText-2 model used embedding 0.1, input 0.65, hidden 0.2, output 0.4, weight
    # 0.5 (salesforce/awd-lstm-lm, main.py defaults and the README's WT2 command).
    embed_dropout: float = 0.02  # drop whole words from the embedding matrix
    input_dropout: float = 0.25  # locked dropout on the embedding output
    hidden_dropout: float = 0.15  # locked dropout between LSTM layers
    weight_dropout: float = 0.2  # DropConnect on hidden-to-hidden weights
    output_dropout: float = 0.1  # locked dropout on the last LSTM output
    # AWD-LSTM activation regularisation (Merity et al. 2017, alpha 2 and beta 1 there,
    # and in fastai's TextLearner): AR on the last layer's dropped-out output, TAR
    # (temporal) on the change of its raw output between steps. 0 turns either off.
    ar: float = 2.0
    tar: float = 1.0
    tie_embeddings: bool = True  # share the input embedding with the output projection
    # Causal only: read and predict the text right to left (ULMFiT's backward LM, which
    # it ensembles with the forward one). Training reverses each window.
    backward: bool = False
    # --- Transformer family fields: what published checkpoints differ in. The defaults
    # are lmtool's own; GPT-2 sets bias, gelu "tanh", learned positions; Llama sets
    # rmsnorm, swiglu, kv_heads, rope_theta; BERT sets norm_place "post", embed_norm,
    # token_types and bias (lmtool/hub maps each family's weights).
    norm: str = "layernorm"  # "layernorm" (weight + bias) or "rmsnorm" (weight only)
    norm_eps: float = 1e-5  # added to the variance in every norm (BERT 1e-12)
    # "pre": x + f(norm(x)) and a final norm (GPT-2, Llama); "post": norm(x + f(x)) and
    # no final norm (BERT)
    norm_place: str = "pre"
    mlp: str = "gelu"  # "gelu": fc, GELU, proj; "swiglu": silu(gate) * up, proj (Llama)
    gelu: str = "exact"  # "exact" (erf) or "tanh" (its approximation: GPT-2's gelu_new)
    mlp_width: int = 0  # the MLP's inner width; 0 means mlp_ratio * dim
    bias: bool = False  # biases on the attention and MLP linears (GPT-2, BERT)
    kv_heads: int = 0  # key/value heads, grouped-query attention; 0 means heads
    rope_theta: float = 10000.0  # rotary base: position t turns pair i by t * theta^(-2i/D)
    embed_norm: bool = False  # a norm right after the embeddings (BERT)
    # Rows of a token-type (segment) embedding; row 0, BERT's single-text segment, is
    # added to every token. 0: none.
    token_types: int = 0
    # An imported tokenizer's own special-token ids and conventions (lmtool/hub/specials.py):
    # {"pad": 50256, ..., "start": [ids before a text], "end": [ids after it]}, as its
    # tokenizer adds them. Empty: lmtool's [PAD] ... [SEP] at ids 0..6, [EOS] before a text.
    specials: dict = field(default_factory=dict)

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads actually used (kv_heads, or heads when 0)."""
        return self.kv_heads or self.heads

    @property
    def inner_width(self) -> int:
        """The MLP's inner width actually used."""
        return self.mlp_width or self.mlp_ratio * self.dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return dataclass_from_dict(cls, data, "model")


# Whole configurations by name. `tiny` trains in CPU minutes; `small` is nanoGPT's
# Shakespeare model / a small ULMFiT LM; `base` is GPT-2 small / ULMFiT's AWD-LSTM.
PRESETS: dict[str, dict[str, dict]] = {
    "transformer": {
        "tiny": dict(layers=4, heads=4, dim=128, context=64, dropout=0.0),
        "small": dict(layers=6, heads=6, dim=384, context=256, dropout=0.2),
        "base": dict(layers=12, heads=12, dim=768, context=1024, dropout=0.1),
    },
    "lstm": {
        "tiny": dict(layers=3, dim=128, hidden=384, context=70, dropout=0.5),
        "small": dict(layers=3, dim=256, hidden=768, context=70, dropout=0.7),
        "base": dict(layers=3, dim=400, hidden=1152, context=70, dropout=1.0),
    },
}


def resolve_model_config(
    arch: str, objective: str, preset: str, overrides: dict | None = None
) -> ModelConfig:
    """Preset, then overrides (None values mean "not given"); validate everything at once."""
    problems: list[str] = []
    if arch not in ARCHS:
        raise BadInput(f"unknown --arch {arch!r}", f"choose one of {', '.join(ARCHS)}")
    if preset not in PRESETS[arch]:
        raise BadInput(
            f"unknown --preset {preset!r}", f"choose one of {', '.join(PRESETS[arch])}"
        )
    values = {"arch": arch, "objective": objective, **PRESETS[arch][preset]}
    known = {f.name for f in fields(ModelConfig)}
    for key, value in (overrides or {}).items():
        if key not in known:
            problems.append(f"unknown model field {key!r}")
        elif value is not None:
            values[key] = value
    if problems:
        raise BadInput("; ".join(problems))
    config = ModelConfig(**values)
    validate_model_config(config)
    return config


def validate_model_config(c: ModelConfig) -> None:
    """Raise one BadInput listing every problem, each naming its flag."""
    problems = []
    if c.objective not in OBJECTIVES:
        problems.append(f"--objective must be one of {', '.join(OBJECTIVES)}")
    if c.arch == "lstm" and c.objective == "masked":
        problems.append("--objective masked needs --arch transformer (an LSTM reads one way)")
    if c.backward and c.objective != "causal":
        problems.append("--backward needs --objective causal (a masked model reads both ways)")
    if c.positions not in POSITIONS:
        problems.append(f"--positions must be one of {', '.join(POSITIONS)}")
    for name in ("context", "layers", "heads", "dim", "hidden", "mlp_ratio"):
        if getattr(c, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if c.arch == "transformer" and c.heads >= 1 and c.dim % c.heads:
        problems.append(f"--dim ({c.dim}) must be divisible by --heads ({c.heads})")
    if c.arch == "transformer" and c.positions == "rotary" and (c.dim // max(c.heads, 1)) % 2:
        problems.append("rotary positions need an even head size (--dim / --heads)")
    for name, allowed in (("norm", NORMS), ("norm_place", NORM_PLACES), ("mlp", MLPS),
                          ("gelu", GELUS)):
        if getattr(c, name) not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}")
    if c.kv_heads < 0 or (c.kv_heads and c.heads % c.kv_heads):
        problems.append(f"kv_heads ({c.kv_heads}) must divide --heads ({c.heads})")
    if c.mlp_width < 0 or c.token_types < 0 or c.norm_eps <= 0 or c.rope_theta <= 0:
        problems.append("mlp_width and token_types must be >= 0, norm_eps and rope_theta > 0")
    if c.arch == "transformer" and not 0 <= c.dropout < 1:
        problems.append("--dropout must be in [0, 1)")
    if c.arch == "lstm" and c.dropout < 0:
        problems.append("--dropout (a multiplier for the LSTM) must be >= 0")
    for name in ("ar", "tar"):
        if getattr(c, name) < 0:
            problems.append(f"--{name} must not be negative")
    if problems:
        raise BadInput("invalid model config: " + "; ".join(problems))
