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
    # True when training reads contiguous streams and carries `initial_state` from one
    # batch to the next (the AWD-LSTM); False: independent windows (the Transformer,
    # whose KV cache is for inference only).
    stateful_training: bool = False
    # A regularisation term the last training forward computed (AWD-LSTM's AR/TAR), for
    # the objective to add to the loss; see `take_penalty`.
    penalty: torch.Tensor | None = None
    # What generation may ask of the state `initial_state` makes (inference/decoding.py):
    # True when it reads a batch of prompts of different lengths at once, padded on the
    # LEFT (`initial_state(B, left_pad=...)`: a KV cache masks the pads); False: rows of
    # one length are read together and their states joined (`type(state).cat`), as an
    # LSTM's (h, c), which cannot skip pads.
    left_padding: bool = False

    @property
    def max_positions(self) -> int | None:
        """The most tokens the state can hold (a KV cache: the context), or None when it
        has no limit (an LSTM's (h, c)). Generation re-reads recent text at the limit."""
        return None

    def take_penalty(self) -> torch.Tensor | None:
        """The penalty of the last forward (None if it had none), cleared once taken."""
        penalty, self.penalty = self.penalty, None
        return penalty

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
        self, idx: torch.Tensor, where: torch.Tensor | None = None, state: State | None = None,
        head: bool = True,
    ) -> torch.Tensor:
        """Logits (B, T, V) for ids (B, T); with a (B, T) bool mask `where`, only the
        logits at its True positions, (N, V) in row-major order: the masked objective
        scores ~15% of the positions and runs the head on those alone. `state` goes to
        `encode` (so stateful training reaches it through DDP's forward). `head=False`
        stops before the head: hidden states (B, T, C) or (N, C), for a loss that applies
        `lm_head` itself (training/fused_loss.py)."""
        hidden = self.encode(idx, state)  # (B, T, C)
        if where is not None:
            hidden = hidden[where]  # (N, C)
        return self.lm_head(hidden) if head else hidden  # (B, T, V) or (N, V)

    def layer_groups(self) -> list[list[nn.Module]]:
        """Modules from the bottom (embeddings) to the top (head), for ULMFiT.

        A tied weight is reached from two groups (the embedding and the decoder);
        `parameter_groups(model, tied)` puts it in the lowest or the highest of them.
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


TIED = ("bottom", "top")


def parameter_groups(model: nn.Module, tied: str = "bottom") -> list[list[nn.Parameter]]:
    """`model.layer_groups()` as disjoint parameter lists, bottom to top.

    A parameter reached from several groups (the tied embedding/decoder matrix) goes to
    the lowest of them (`tied="bottom"`, as fastai splits a classifier) or the highest
    (`tied="top"`, as fastai splits a language model for fine-tuning, where the decoder
    learns fastest), so every parameter appears exactly once: ready for `torch.optim`
    parameter groups. Groups left empty by that choice are dropped.
    """
    if tied not in TIED:
        raise ValueError(f"tied must be one of {TIED}, not {tied!r}")
    layer_groups = model.layer_groups()
    order = range(len(layer_groups)) if tied == "bottom" else reversed(range(len(layer_groups)))
    owner: dict[int, int] = {}  # id(parameter) → the group it belongs to
    for i in order:
        for module in layer_groups[i]:
            for p in module.parameters():
                owner.setdefault(id(p), i)
    groups: list[list[nn.Parameter]] = [[] for _ in layer_groups]
    seen: set[int] = set()
    for i, modules in enumerate(layer_groups):
        for module in modules:
            for p in module.parameters():
                if owner[id(p)] == i and id(p) not in seen:
                    seen.add(id(p))
                    groups[i].append(p)
    return [g for g in groups if g]
