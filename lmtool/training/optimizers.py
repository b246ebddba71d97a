"""The optimiser: AdamW on every parameter, or Muon on the hidden weight matrices.

Muon (Jordan et al. 2024) orthogonalises each update of a weight matrix with a few
Newton-Schulz iterations. It is meant for the 2-D weights inside the network, not for
embeddings, the output head, biases or norm gains, so "muon" means Muon on the 2-D weights
of the middle layer groups (transformer blocks, LSTM layers) and AdamW on everything else.
With PyTorch's "match_rms_adamw" scaling (Liu et al. 2025, "Muon is Scalable for LLM
Training") one learning rate and schedule serve both.

`BatchedMuon` is `torch.optim.Muon` (same hyper-parameters, same state, checked against
it in tests/test_optimizers.py) with two changes:
1. Matrices of one shape are orthogonalised together, in batched matrix products:
   torch runs Newton-Schulz matrix by matrix in a Python loop, 240 small products per
   step at the tiny preset instead of 30 here.
2. A fused matrix is orthogonalised block by block, as its parts would be if they were
   separate matrices, which is what Muon's authors intend: the attention's q, k and v
   (one (3C, C) matrix here) and the LSTM's four gates ((4H, ·) matrices).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.base import parameter_groups
from lmtool.training.config import OPTIMIZERS, TrainConfig
from lmtool.training.freezing import discriminative_multipliers
from lmtool.wording import plural

_DEVICE_KEYS = ("fused", "foreach", "capturable")  # param-group flags chosen per device


class BatchedMuon(torch.optim.Muon):
    """torch.optim.Muon, with Newton-Schulz batched over matrices of one shape.

    `row_blocks` maps a parameter to the number of equal row blocks it is made of (3 for
    a fused q/k/v matrix, 4 for an LSTM's gates; 1 when absent): each block is
    orthogonalised, and its learning rate scaled, as a matrix of its own.
    `ns_dtype` is the dtype of the Newton-Schulz products: bf16 as torch's Muon, or fp32
    where bf16 matrix products are not faster (some CPUs).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        *,
        row_blocks: Mapping[nn.Parameter, int] | None = None,
        ns_dtype: torch.dtype = torch.bfloat16,
        **kwargs,
    ):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype
        self.row_blocks = {id(p): k for p, k in (row_blocks or {}).items()}
        for group in self.param_groups:
            for p in group["params"]:
                k = self.row_blocks.get(id(p), 1)
                if p.size(0) % k:
                    raise ValueError(f"a ({tuple(p.shape)}) matrix has no {k} equal row blocks")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # 1. Momentum, group by group as torch's Muon: buf = lerp(buf, grad, 1 - m), and
        #    Nesterov's look-ahead lerp(grad, buf, m).
        entries: list[tuple[dict, torch.Tensor, torch.Tensor]] = []  # (group, param, update)
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            bufs: list[torch.Tensor] = []
            self._init_group(group, params, grads, bufs)
            if not params:
                continue
            m = group["momentum"]
            torch._foreach_lerp_(bufs, grads, 1 - m)
            updates = torch._foreach_lerp(grads, bufs, m) if group["nesterov"] else bufs
            entries += [(group, p, u) for p, u in zip(params, updates, strict=True)]
        # 2. Every block as a wide matrix (rows <= columns), grouped by shape, across
        #    parameter groups (ULMFiT's layer groups differ in rate only).
        stacks: dict[tuple, list[tuple[int, bool, torch.Tensor]]] = {}
        for i, (group, p, u) in enumerate(entries):
            blocks = u.view(self._blocks(p), -1, p.size(1))  # (k, rows, cols)
            wide = blocks.size(1) <= blocks.size(2)
            blocks = blocks if wide else blocks.mT  # (k, r, c), r <= c: the smaller Gram
            key = (*blocks.shape[1:], group["ns_coefficients"], group["ns_steps"], group["eps"])
            stacks.setdefault(key, []).append((i, wide, blocks))
        # 3. Newton-Schulz on each stack (cast while stacking: one pass), then the decoupled
        #    weight decay and the step, written through views of each block: no copies.
        for (rows, cols, coefficients, steps, eps), members in stacks.items():
            count = sum(b.size(0) for _, _, b in members)
            stack = torch.empty(count, rows, cols, dtype=self.ns_dtype, device=members[0][2].device)
            torch.cat([b for _, _, b in members], out=stack)  # (N, r, c)
            stack = newton_schulz(stack, coefficients, steps, eps)
            done = stack.split([b.size(0) for _, _, b in members])  # (k, r, c) each
            for (i, wide, _), blocks in zip(members, done, strict=True):
                group, p, _ = entries[i]
                lr, k = group["lr"], self._blocks(p)
                scale = _rate_scale(group["adjust_lr_fn"], p.size(0) // k, p.size(1))
                p.mul_(1 - lr * group["weight_decay"])
                p.view(k, -1, p.size(1)).add_(blocks if wide else blocks.mT, alpha=-lr * scale)
        return loss

    def _blocks(self, p: torch.Tensor) -> int:
        return self.row_blocks.get(id(p), 1)


def newton_schulz(x: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  eps: float) -> torch.Tensor:
    """The quintic Newton-Schulz iteration of Muon on a stack of wide matrices (N, r, c),
    r <= c: each is scaled to Frobenius norm 1 (so its spectral norm is at most 1), then
    X <- a X + (b A + c A^2) X with A = X X^T, which drives its singular values towards 1
    (roughly U V^T of its SVD, with singular values in about [0.7, 1.2])."""
    a, b, c = coefficients
    x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)  # (N, r, c)
    for _ in range(steps):
        gram = x @ x.mT  # (N, r, r)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    return x


def _rate_scale(adjust: str | None, rows: int, cols: int) -> float:
    """Muon's learning-rate factor for a (rows, cols) matrix (torch's `_adjust_lr`)."""
    if adjust == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))  # the RMS of an AdamW update
    if adjust in (None, "original"):
        return math.sqrt(max(1, rows / cols))
    return 1.0


def fused_row_blocks(model: nn.Module) -> dict[nn.Parameter, int]:
    """The matrices that are several matrices side by side, with how many: a transformer
    attention's q/k/v projection (3; with grouped-query attention H/KV blocks of query
    heads, then k and v) and an LSTM layer's input and recurrent weights (4 gates:
    input, forget, cell, output)."""
    from lmtool.models.lstm import WeightDroppedLSTM
    from lmtool.models.transformer import SelfAttention

    blocks: dict[nn.Parameter, int] = {}
    for module in model.modules():
        if isinstance(module, SelfAttention):
            blocks[module.qkv.weight] = module.heads // module.kv_heads + 2
        elif isinstance(module, nn.LSTM):
            for name, p in module.named_parameters():
                if name.startswith("weight_"):  # weight_ih_l0, weight_hh_l0 (4H, ·)
                    blocks[p] = 4
        if isinstance(module, WeightDroppedLSTM):
            blocks[module.weight_hh_raw] = 4  # the LSTM's recurrent matrix, kept here
    return blocks


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
                f"the checkpoint holds the state of {plural(len(state), 'optimiser')} "
                f"{', '.join(sorted(state))}, "
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
    ns_dtype: torch.dtype | None = None,
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
    `ns_dtype`: Muon's Newton-Schulz dtype; None: bf16 where bf16 matrix products are
    fast (CUDA, or a CPU where `--precision auto` picks bf16), else fp32.
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
        if ns_dtype is None:
            from lmtool.device import resolve_precision

            ns_dtype = resolve_precision("auto", device) or torch.float32
        named["muon"] = BatchedMuon(
            muon, row_blocks=fused_row_blocks(model), ns_dtype=ns_dtype,
            lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw",
        )
    # Fused AdamW updates all parameters in one kernel. On the CPU the default is the
    # per-tensor loop, which took ~6 ms of a ~60 ms step at the tiny preset.
    fused = True if device.type in ("cuda", "cpu") else None
    named["adamw"] = torch.optim.AdamW(adamw, lr=lr, betas=betas, fused=fused)
    return Optimizers(named)


def ulmfit_optimizer(model: nn.Module, config: TrainConfig, device: torch.device, *,
                     tied: str = "top", grouped: bool | None = None) -> Optimizers:
    """The optimiser of a run's plan. ULMFiT's layer groups (models/base.py), each at
    its discriminative rate (training/freezing.py), with the tied embedding/decoder in
    the `tied` group: "top" as fastai splits a language model, "bottom" in a classifier.
    `grouped` None: groups only when the rates differ or groups unfreeze, else one group
    (the fewest optimiser kernels per step)."""
    if grouped is None:
        grouped = config.discriminative != 1 or bool(config.unfreeze_start)
    groups = multipliers = None
    if grouped:
        groups = parameter_groups(model, tied=tied)
        multipliers = discriminative_multipliers(len(groups), config.discriminative)
    return build_optimizer(
        model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
        betas=(config.beta1, config.beta2), device=device, groups=groups,
        multipliers=multipliers,
    )
