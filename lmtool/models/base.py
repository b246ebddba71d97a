"""What every language model shares: the config, a length check, parameter counting,
and the state a causal model carries from one chunk of text to the next (models/state.py)."""

from __future__ import annotations

import torch
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig
from lmtool.models.state import State


class LanguageModel(nn.Module):
    """Base class: `forward(idx, where, state) -> logits`, `encode`, `initial_state`,
    `lm_head`, `layer_groups`.

    Subclasses set `self.config` and implement `encode`, `initial_state`, `lm_head` (a
    module) and `layer_groups`; `forward` is the backbone followed by the head.
    """

    config: ModelConfig
    lm_head: nn.Module

    def initial_state(self, batch_size: int, **options) -> State:
        """A fresh state for `batch_size` rows on the model's device: what `encode`
        starts from when given none. Causal models only; see models/state.py."""
        raise NotImplementedError

    def encode(self, idx: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Token ids (B, T) → hidden states (B, T, C). Without a state each call reads
        its sequence from scratch; with one, it continues from the state and advances
        it in place to the end of `idx`."""
        raise NotImplementedError

    def forward(
        self, idx: torch.Tensor, where: torch.Tensor | None = None, state: State | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V) for ids (B, T); with a (B, T) bool mask `where`, only the
        logits at its True positions, (N, V) in row-major order: the masked objective
        scores ~15% of the positions and runs the head on those alone. `state` goes to
        `encode` (so stateful training reaches it through DDP's forward)."""
        hidden = self.encode(idx, state)  # (B, T, C)
        if where is not None:
            hidden = hidden[where]  # (N, C)
        return self.lm_head(hidden)  # (B, T, V) or (N, V)

    def layer_groups(self) -> list[list[nn.Module]]:
        """Modules from the bottom (embeddings) to the top (head), for ULMFiT.

        A tied weight is reached from two groups (the embedding and the decoder); it
        belongs to the lowest one. `parameter_groups(model)` applies that rule.
        """
        raise NotImplementedError

    def num_parameters(self) -> int:
        # .parameters() yields a shared (tied) tensor once.
        return sum(p.numel() for p in self.parameters())

    def refuse_state(self) -> None:
        """A masked model reads every position at once: there is nothing to carry."""
        raise BadInput(
            "a masked (bidirectional) model has no state to carry from one chunk to the "
            "next: it reads the whole sequence at once",
            "use a causal model for generation or stateful reading",
        )

    def check_length(self, idx: torch.Tensor) -> None:
        """Refuse sequences longer than the context the model was built for."""
        if idx.dim() != 2:
            raise BadInput(f"expected token ids of shape (batch, time), got {tuple(idx.shape)}")
        if idx.size(1) > self.config.context:
            raise BadInput(
                f"a sequence of {idx.size(1)} tokens is longer than the model's context "
                f"of {self.config.context}",
                "shorten the input or train with a larger --context",
            )


def parameter_groups(model: LanguageModel) -> list[list[nn.Parameter]]:
    """`model.layer_groups()` as disjoint parameter lists, bottom to top.

    A parameter reached from several groups (tied embeddings) goes to the lowest one, so
    every parameter appears exactly once: ready for `torch.optim` parameter groups.
    """
    seen: set[int] = set()
    groups: list[list[nn.Parameter]] = []
    for modules in model.layer_groups():
        params = []
        for module in modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        groups.append(params)
    return groups
