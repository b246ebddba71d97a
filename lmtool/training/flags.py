"""Training flags, typed: what a person gave on the command line, in a --config file or
as keyword arguments from Python, one field per flag (None: not given, so the preset,
the base run, the resumed run or the default wins).

Each command builds its `TrainFlags` by name (lmtool/cli/options.py), and the functions
here apply them to the configs, each checking the result once:

- `resolve_configs`: a new run (pretrain): the preset, then --config, then the flags;
- `finetune_configs`: a fine-tune: the base run's configs, the task's defaults, then
  the flags (which may not change the base run's model but for its dropout);
- `resume_configs`: --resume: the saved configs, changed only where a resumed run may.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig, resolve_model_config, validate_model_config
from lmtool.training.config import (
    MODEL_FIELDS,
    TRAIN_FIELDS,
    TRAIN_PRESETS,
    TrainConfig,
    read_config_file,
    validate_train_config,
)
from lmtool.wording import plural


@dataclass(frozen=True)
class TrainFlags:
    """One field per flag, named as the config field it sets (--batch-size → batch_size)."""

    # The model's shape: ModelConfig's fields (pretrain; a fine-tune keeps its base run's
    # model and may change only `dropout`).
    context: int | None = None
    layers: int | None = None
    heads: int | None = None
    dim: int | None = None
    hidden: int | None = None
    mlp_ratio: int | None = None
    positions: str | None = None
    dropout: float | None = None
    embed_dropout: float | None = None
    input_dropout: float | None = None
    hidden_dropout: float | None = None
    weight_dropout: float | None = None
    output_dropout: float | None = None
    ar: float | None = None
    tar: float | None = None
    tie_embeddings: bool | None = None
    backward: bool | None = None
    # The Transformer's family fields (models/config.py): no command-line flags, but a
    # --config file or Python may set them, e.g. to pre-train a Llama-shaped model.
    norm: str | None = None
    norm_eps: float | None = None
    norm_place: str | None = None
    mlp: str | None = None
    gelu: str | None = None
    mlp_width: int | None = None
    bias: bool | None = None
    kv_heads: int | None = None
    rope_theta: float | None = None
    embed_norm: bool | None = None
    token_types: int | None = None
    # Training: TrainConfig's fields.
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    warmup: int | None = None
    schedule: str | None = None
    min_lr_ratio: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    grad_accum: int | None = None
    grad_clip: float | None = None
    max_steps: int | None = None
    max_time: float | None = None
    epochs: float | None = None
    eval_every: int | None = None
    eval_batches: int | None = None
    save_every: int | None = None
    log_every: int | None = None
    seed: int | None = None
    device: str | None = None
    precision: str | None = None
    compile: bool | None = None
    discriminative: float | None = None
    unfreeze_start: int | None = None
    unfreeze_every: float | None = None
    stateful: bool | None = None
    window: int | None = None  # no flag: a --config file or Python may set it

    def __post_init__(self) -> None:
        for f in fields(self):  # a CLI choice arrives as an Enum: keep its value
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                object.__setattr__(self, f.name, value.value)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "") -> TrainFlags:
        """Flags from a field → value mapping; BadInput naming any unknown field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadInput(f"unknown {plural(len(unknown), 'field')}{where}: "
                           f"{', '.join(unknown)}",
                           f"known fields: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def of(cls, flags: TrainFlags | Mapping[str, Any] | None) -> TrainFlags:
        """`flags` as TrainFlags (a mapping: from Python callers, as before)."""
        if isinstance(flags, TrainFlags):
            return flags
        return cls.from_dict(dict(flags or {}))

    def given(self) -> dict[str, Any]:
        """The fields that were given, field → value."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def over(self, below: TrainFlags) -> TrainFlags:
        """These flags where given, `below`'s elsewhere."""
        return replace(below, **self.given())


def apply_flags(model: ModelConfig, train: TrainConfig, flags: TrainFlags, *,
                model_fields: frozenset[str] | set[str] = frozenset(MODEL_FIELDS)
                ) -> tuple[ModelConfig, TrainConfig]:
    """The configs with the given flags set (only `model_fields` of the model's), both
    checked: each problem is reported at once, naming its flag."""
    given = flags.given()
    model = replace(model, **{k: v for k, v in given.items() if k in model_fields})
    train = replace(train, **{k: v for k, v in given.items() if k in TRAIN_FIELDS})
    validate_model_config(model)
    validate_train_config(train)
    return model, train


def with_config_file(flags: TrainFlags, config_file: Path | None) -> tuple[TrainFlags, dict]:
    """`flags` over the fields of a --config file, and the file's objective, arch and
    preset (which only a new run uses)."""
    if not config_file:
        return flags, {}
    from_file = read_config_file(config_file)
    top = {k: from_file.pop(k) for k in ("objective", "arch", "preset") if k in from_file}
    return flags.over(TrainFlags.from_dict(from_file, f" in --config {config_file}")), top


def resolve_configs(*, objective: str | None, arch: str | None, preset: str | None,
                    flags: TrainFlags, config_file: Path | None = None, vocab_size: int = 0
                    ) -> tuple[ModelConfig, TrainConfig, str]:
    """A new run's configs: the preset < the config file < the flags. Returns the model
    and training configs and the preset's name."""
    flags, top = with_config_file(flags, config_file)
    objective = objective or top.get("objective") or "causal"
    arch = arch or top.get("arch") or "transformer"
    preset = preset or top.get("preset") or "tiny"
    model = resolve_model_config(arch, objective, preset)
    train = TrainConfig(**TRAIN_PRESETS.get(arch, {}).get(preset, {}))
    model, train = apply_flags(model, train, flags)
    model.vocab_size = vocab_size
    return model, train, preset


REGULARISERS = ("dropout", "ar", "tar")  # model fields a fine-tune may change


def finetune_configs(base: dict, defaults: dict, flags: TrainFlags, command: str, *,
                     model_changes: dict | None = None) -> tuple[ModelConfig, TrainConfig]:
    """A fine-tune's configs: the base run's model (with `model_changes`, e.g. the
    classifier's dropouts) and training settings, the task's `defaults` over those, then
    the flags. Model fields but the regularisers (`dropout`, `ar`, `tar`) are fixed by
    the base run: `command` refuses them."""
    fixed = sorted(k for k in flags.given() if k in MODEL_FIELDS and k not in REGULARISERS)
    if fixed:
        raise BadInput(f"{command} cannot change " + ", ".join(
            f"--{k.replace('_', '-')}" for k in fixed), "those are fixed by the base run")
    model = replace(ModelConfig.from_dict(base["model"]), **(model_changes or {}))
    train = TrainConfig.from_dict({**base.get("training", {}), **defaults})
    return apply_flags(model, train, flags, model_fields=set(REGULARISERS))


# When to stop. They count from the start of the run (steps, seconds, epochs in total),
# and a limit given with --resume replaces all the saved ones: `--resume --max-steps
# 450` after a `--max-time 30` run trains to step 450, whatever the time, or to the end
# of the default epochs if that comes first (the caps never lengthen the plan: `--resume
# --epochs 3` does).
LIMITS = ("max_steps", "max_time", "epochs")
# Fields of a finished run that --resume may change: when to stop, how often to log,
# evaluate and save, and where/how to compute. The rest would make a different run.
RESUMABLE_FIELDS = {
    *LIMITS, "eval_every", "eval_batches", "save_every", "log_every", "device",
    "precision", "compile",
}


def resume_configs(run_dir: Path, flags: TrainFlags, *, objective: str | None = None,
                   arch: str | None = None, model_class: type = ModelConfig
                   ) -> tuple[dict, ModelConfig, TrainConfig]:
    """The saved config.json and configs, with only what a resumed run may change taken
    from `flags`; BadInput naming every flag that would change more. `model_class`: the
    model config's type (an encoder–decoder's is models/seq2seq_config.Seq2SeqConfig)."""
    from lmtool.checkpoint import read_run_config

    saved = read_run_config(run_dir)
    model = model_class.from_dict(saved["model"])
    train = TrainConfig.from_dict(saved.get("training", {}))
    given = {**flags.given(), **{k: v for k, v in (("objective", objective), ("arch", arch))
                                 if v is not None}}
    if any(k in given for k in LIMITS):
        train = replace(train, **{k: given.pop(k, None) for k in LIMITS})
    conflicts = []
    for key, value in given.items():
        if key in RESUMABLE_FIELDS:
            train = replace(train, **{key: value})
        elif key in MODEL_FIELDS or key in ("objective", "arch"):
            if getattr(model, key, None) != value:
                conflicts.append(f"--{key.replace('_', '-')} {value} (the run has "
                                 f"{getattr(model, key, None)})")
        elif getattr(train, key) != value:
            conflicts.append(f"--{key.replace('_', '-')} {value} (the run has "
                             f"{getattr(train, key)})")
    if conflicts:
        raise BadInput(
            "--resume cannot change the run's settings: " + "; ".join(conflicts),
            "drop those flags, or start a new run with -o elsewhere",
        )
    validate_train_config(train)
    return saved, model, train
