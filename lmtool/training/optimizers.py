"""The optimiser: AdamW on every parameter, or Muon on the hidden weight matrices.

Muon (Jordan et al. 2024; `torch.optim.Muon`) orthogonalises each update of a weight
matrix with a few Newton-Schulz iterations. It is meant for the 2-D weights inside the
network, not for embeddings, the output head, biases or norm gains, so "muon" means
Muon on the 2-D weights of the middle layer groups (transformer blocks, LSTM layers) and
AdamW on everything else. With PyTorch's "match_rms_adamw" scaling (Liu et al. 2025,
"Muon is Scalable for LLM Training") one learning rate and schedule serve both.

On the tiny preset, char-level tinyshakespeare, 1,100 steps: AdamW reaches a held-out
loss of 1.84, Muon 1.68 (README "Benchmarks"). A Muon step costs more (57-74 ms instead
of 45 at the tiny preset on a 2-core CPU: torch runs Newton-Schulz matrix by matrix),
and still wins within a fixed time: 1.75 against 1.86 in 60 s.
"""

from __future__ import annotations

import torch
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.base import parameter_groups
from lmtool.training.config import OPTIMIZERS

_DEVICE_KEYS = ("fused", "foreach", "capturable")  # param-group flags chosen per device


class Optimizers:
    """Several torch optimisers stepped as one. `param_groups` lists all their groups
    (the same dicts), so setting a group's "lr" reaches the optimiser that owns it."""

    def __init__(self, named: dict[str, torch.optim.Optimizer]):
        self.named = named

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.named.values() for g in opt.param_groups]

    def zero_grad(self) -> None:
        for opt in self.named.values():
            opt.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        for opt in self.named.values():
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)  # skips the step when the fp16 gradients overflowed

    def unscale_(self, scaler: torch.amp.GradScaler) -> None:
        for opt in self.named.values():
            scaler.unscale_(opt)

    def state_dict(self) -> dict[str, dict]:
        return {name: opt.state_dict() for name, opt in self.named.items()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        if set(state) != set(self.named):
            raise BadInput(
                f"the checkpoint holds the state of optimiser(s) {', '.join(sorted(state))}, "
                f"not {', '.join(self.named)}",
                "resume with the run's own --optimizer",
            )
        for name, opt in self.named.items():
            # The kernels suit this device, not necessarily the one the run was saved on.
            built = [{k: g[k] for k in _DEVICE_KEYS if k in g} for g in opt.param_groups]
            opt.load_state_dict(state[name])
            for group, keys in zip(opt.param_groups, built, strict=True):
                group.update(keys)


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
    groups: list[list[nn.Parameter]] | None = None,
    multipliers: list[float] | None = None,
) -> Optimizers:
    """AdamW (fused on CPU and CUDA) over the whole model, or Muon + AdamW (see above).

    `groups` (bottom to top, e.g. `parameter_groups(model, tied)`; None: the whole model
    as one group) become torch parameter groups, each split into {decay, no decay}
    (AdamW decays weight matrices and embedding tables, not biases or norm gains) and,
    with Muon, {Muon, AdamW}. Every torch group carries "layer_group" (its index in
    `groups`) and "lr_mult" (`multipliers[i]`, default 1): the trainer sets its rate to
    the schedule's times that. Frozen parameters (requires_grad False) are registered
    all the same: both optimisers skip a parameter without a gradient and create no
    state for it, so unfreezing needs no rebuild.
    """
    if name not in OPTIMIZERS:
        raise BadInput(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
    groups = groups if groups is not None else [list(model.parameters())]
    multipliers = multipliers if multipliers is not None else [1.0] * len(groups)
    hidden: set[int] = set()  # Muon's: 2-D weights of the middle layer groups
    if name == "muon":
        hidden = {id(p) for group in parameter_groups(model)[1:-1] for p in group if p.dim() == 2}
    muon: list[dict] = []
    adamw: list[dict] = []
    for index, (params, mult) in enumerate(zip(groups, multipliers, strict=True)):
        tags = {"layer_group": index, "lr_mult": mult}
        mine = [p for p in params if id(p) in hidden]
        rest = [p for p in params if id(p) not in hidden]
        if mine:
            muon.append({"params": mine, **tags})
        for decay in (True, False):
            chosen = [p for p in rest if (p.dim() >= 2) == decay]
            if chosen:
                adamw.append({"params": chosen, "weight_decay": weight_decay if decay else 0.0,
                              **tags})
    named: dict[str, torch.optim.Optimizer] = {}
    if muon:
        named["muon"] = torch.optim.Muon(
            muon, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw"
        )
    # Fused AdamW updates all parameters in one kernel. On the CPU the default is the
    # per-tensor loop, which took ~6 ms of a ~60 ms step at the tiny preset.
    fused = True if device.type in ("cuda", "cpu") else None
    named["adamw"] = torch.optim.AdamW(adamw, lr=lr, betas=betas, fused=fused)
    return Optimizers(named)
