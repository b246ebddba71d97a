"""Training objectives: how a batch becomes (inputs, targets) and a loss: causal and
masked language modelling, classification, and sequence to sequence.

The trainer knows nothing of GPT, BERT or LSTM; it asks an objective for a batch and for
`(loss, metrics)`. Models return logits; the losses live here, so one backbone serves
causal and masked training alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmtool.models.config import ModelConfig
from lmtool.text.specials import SPECIAL_IDS, SPECIAL_TOKENS, SpecialIds, special_ids
from lmtool.training import fused_loss
from lmtool.training.fused_loss import linear_cross_entropy
from lmtool.training.seeds import seed_for

IGNORE = -100  # cross_entropy's ignore_index: positions that carry no loss
NUM_SPECIAL = len(SPECIAL_TOKENS)  # ids 0..6 are special in every lmtool tokenizer


@dataclass
class Batch:
    """What a training or evaluation step feeds the model and the loss."""

    inputs: torch.Tensor  # (B, T) int64 token ids fed to the model
    # (B, T) int64 ids to predict, IGNORE where there is no loss (language models);
    # (B,) label ids (classifiers)
    targets: torch.Tensor
    mask: torch.Tensor | None = None  # (B, T) bool, True at real tokens (padded batches)

    def to(self, device: torch.device) -> Batch:
        mask = self.mask.to(device, non_blocking=True) if self.mask is not None else None
        return Batch(self.inputs.to(device, non_blocking=True),
                     self.targets.to(device, non_blocking=True), mask)

    @property
    def num_tokens(self) -> int:
        """Input tokens the model reads (padding excluded), for tokens/s. Ask on the CPU."""
        return int(self.mask.sum()) if self.mask is not None else self.inputs.numel()

    @staticmethod
    def cat(batches: list[Batch]) -> Batch:
        """Rows of several batches of the same length, one after the other."""
        masks = [b.mask for b in batches]
        return Batch(torch.cat([b.inputs for b in batches]),
                     torch.cat([b.targets for b in batches]),
                     torch.cat(masks) if all(m is not None for m in masks) else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP and/or torch.compile wrapper."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


@dataclass
class Sums:
    """Additive totals, so evaluation over many batches (and ranks) averages per token.
    An objective turns them into its metrics (`Objective.metrics`)."""

    loss: float = 0.0  # sum over scored tokens of their cross-entropy (nats)
    tokens: int = 0  # scored tokens
    correct: int = 0  # scored tokens whose argmax prediction is right
    extra: dict[str, float] = field(default_factory=dict)  # any other totals, by name

    def add(self, other: Sums) -> None:
        self.loss += other.loss
        self.tokens += other.tokens
        self.correct += other.correct
        for key, value in other.extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value

    def flat(self) -> list[float]:
        """The totals as one list (for one all-reduce over ranks); `extra` by sorted key."""
        return [self.loss, self.tokens, self.correct, *(self.extra[k] for k in sorted(self.extra))]

    def from_flat(self, values: list[float]) -> Sums:
        """Totals of the same shape as these, from `flat()` values (e.g. summed over ranks)."""
        loss, tokens, correct, *rest = values
        extra = dict(zip(sorted(self.extra), rest, strict=True))
        return Sums(loss, int(tokens), int(correct), extra)


class Objective:
    """What the trainer and `score` need from an objective; see training/data.py for the
    batch sources whose `raw` batches an objective turns into a `Batch`."""

    name: str = ""

    def window(self, context: int) -> int:
        """Tokens to read from the data per sequence (language models)."""
        raise NotImplementedError

    def make_batch(self, raw, generator: torch.Generator) -> Batch:
        """A training batch from a source's raw batch; `generator` for any randomness."""
        raise NotImplementedError

    def make_eval_batch(self, raw, keys, seed: int) -> Batch:
        """An evaluation batch: row i's randomness drawn from (seed, keys[i]) alone, so
        a row scores the same in any batch. Objectives without randomness need not
        override this."""
        return self.make_batch(raw, torch.Generator().manual_seed(seed))

    def loss(self, model: torch.nn.Module, batch: Batch, state=None) -> tuple[torch.Tensor, dict]:
        """(the loss to minimise: the mean over the scored tokens, plus any penalty the
        model reports, such as the AWD-LSTM's AR/TAR; metrics). `state` is a carried
        model state (stateful sources), advanced in place."""
        raise NotImplementedError

    def sums(self, model: torch.nn.Module, batch: Batch, state=None) -> Sums:
        """Totals for evaluation (no gradient)."""
        raise NotImplementedError

    def metrics(self, sums: Sums) -> dict[str, float]:
        """What evaluation reports, from the totals: {"loss": mean per scored token, ...}.
        The trainer logs them prefixed with "val_"; `evaluate` returns them as they are."""
        raise NotImplementedError


def _with_penalty(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    take = getattr(unwrap(model), "take_penalty", None)
    penalty = take() if take is not None else None
    return loss if penalty is None else loss + penalty


def _per_row(make, raw: torch.Tensor, keys, seed: int) -> Batch:
    """make(row, generator) for each row with its own generator seeded by (seed, key)."""
    return Batch.cat([make(row[None], torch.Generator().manual_seed(seed_for(seed, int(key))))
                      for key, row in zip(keys, raw, strict=True)])


class CausalObjective(Objective):
    """Next-token prediction: the target at position t is the input at t+1. A backward
    model reads each window reversed, so it predicts the token before."""

    name = "causal"

    def __init__(self, backward: bool = False):
        self.backward = backward

    def window(self, context: int) -> int:
        return context + 1  # one extra token: the last input's target

    def make_batch(self, windows: torch.Tensor, generator: torch.Generator) -> Batch:
        if self.backward:
            windows = windows.flip(1)  # (B, T+1) right to left
        return Batch(windows[:, :-1], windows[:, 1:])  # (B, T), (B, T)

    def loss(self, model, batch, state=None):
        head = unwrap(model).lm_head
        targets = batch.targets.flatten()  # (B*T,)
        if isinstance(head, torch.nn.Linear) and fused_loss.pays(targets.numel(),
                                                                 head.out_features):
            # The head and the loss in blocks of rows, never the (B*T, V) logits: the
            # same loss and gradients as below, with less memory traffic.
            hidden = model(batch.inputs, state=state, head=False)  # (B, T, C)
            loss = linear_cross_entropy(hidden.flatten(0, 1), head.weight, head.bias, targets)
        else:
            logits = model(batch.inputs, state=state)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets)
        return _with_penalty(model, loss), {"tokens": batch.targets.numel()}

    @torch.no_grad()
    def sums(self, model, batch, state=None) -> Sums:
        logits = model(batch.inputs, state=state).float()  # (B, T, V)
        flat, targets = logits.flatten(0, 1), batch.targets.flatten()  # (B*T, V), (B*T,)
        loss = F.cross_entropy(flat, targets, reduction="sum")
        correct = (flat.argmax(-1) == targets).sum()
        return Sums(float(loss), targets.numel(), int(correct))

    def metrics(self, sums: Sums) -> dict[str, float]:
        loss = sums.loss / sums.tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                "bits_per_token": loss / math.log(2), "tokens": sums.tokens}


def mask_tokens(
    ids: torch.Tensor,
    vocab_size: int,
    generator: torch.Generator,
    rate: float = 0.15,
    specials: SpecialIds = SPECIAL_IDS,
) -> Batch:
    """BERT's masking rule on a (B, T) batch of ids (on the CPU, so any device agrees).

    1. Select `rate` of the non-special tokens (special tokens are never selected).
    2. Of the selected: 80% become [MASK], 10% a random non-special token, 10% stay.
    3. Only selected positions carry a target; the rest are IGNORE.
    An imported run's specials lie anywhere in its vocabulary: they are told by id, and
    its random replacements may (rarely) be one of them.
    """
    if specials.imported:
        special = torch.isin(ids, torch.tensor(sorted({
            specials.pad, specials.unk, specials.bos, specials.eos, specials.mask,
            specials.cls, specials.sep, *specials.others})))  # (B, T)
        low = 0
    else:
        special = ids < NUM_SPECIAL  # (B, T) ids 0..6 are [PAD] [UNK] [BOS] [EOS] [MASK] ...
        low = NUM_SPECIAL
    selected = (torch.rand(ids.shape, generator=generator) < rate) & ~special  # (B, T)
    if not selected.any():
        # Cannot happen in practice (B*T*0.15 tokens), but a batch with no target would
        # give a NaN loss; score the first ordinary token instead.
        candidates = (~special).flatten().nonzero()
        if len(candidates):
            selected.view(-1)[candidates[0]] = True
    roll = torch.rand(ids.shape, generator=generator)  # (B, T) decides mask / random / keep
    random_ids = torch.randint(low, vocab_size, ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[selected & (roll < 0.8)] = specials.mask
    swap = selected & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    targets = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    return Batch(inputs, targets)


class MaskedObjective(Objective):
    """Masked-token prediction (BERT): loss only on the selected positions."""

    name = "masked"

    def __init__(self, vocab_size: int, rate: float = 0.15,
                 specials: SpecialIds = SPECIAL_IDS):
        self.vocab_size = vocab_size
        self.rate = rate
        self.specials = specials

    def window(self, context: int) -> int:
        return context

    def make_batch(self, windows: torch.Tensor, generator: torch.Generator) -> Batch:
        return mask_tokens(windows, self.vocab_size, generator, self.rate, self.specials)

    def make_eval_batch(self, windows: torch.Tensor, keys, seed: int) -> Batch:
        return _per_row(self.make_batch, windows, keys, seed)

    def _logits(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        picked = batch.targets != IGNORE  # (B, T)
        return model(batch.inputs, picked), batch.targets[picked]  # (N, V), (N,) scored only

    def loss(self, model, batch, state=None):
        logits, targets = self._logits(model, batch)
        loss = F.cross_entropy(logits.float(), targets)
        return _with_penalty(model, loss), {"tokens": targets.numel()}

    @torch.no_grad()
    def sums(self, model, batch, state=None) -> Sums:
        logits, targets = self._logits(model, batch)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        correct = (logits.argmax(-1) == targets).sum()
        return Sums(float(loss), targets.numel(), int(correct))

    def metrics(self, sums: Sums) -> dict[str, float]:
        # loss and accuracy over the masked tokens only; "tokens" counts those
        return {"loss": sums.loss / sums.tokens, "accuracy": sums.correct / sums.tokens,
                "tokens": sums.tokens}


class ClassificationObjective(Objective):
    """Cross-entropy over the classes; accuracy, macro-F1 and the confusion matrix as
    metrics. A held-out document whose label the classifier does not know (target -1)
    counts as wrong and takes no part in the loss."""

    name = "classify"

    def __init__(self, labels: Sequence[str], class_weights: Sequence[float] | None = None):
        self.labels = list(labels)
        self.weights = (torch.tensor(class_weights, dtype=torch.float32)
                        if class_weights is not None else None)

    def make_batch(self, raw: Batch, generator: torch.Generator) -> Batch:
        return raw  # the source made it whole: nothing random here

    def _logits(self, model, batch: Batch) -> torch.Tensor:
        lengths = batch.mask.sum(dim=1)  # (B,) real tokens per row
        return model(batch.inputs, lengths).float()  # (B, K)

    def loss(self, model, batch: Batch, state=None) -> tuple[torch.Tensor, dict]:
        logits = self._logits(model, batch)
        weight = self.weights.to(logits.device) if self.weights is not None else None
        loss = F.cross_entropy(logits, batch.targets, weight=weight, ignore_index=-1)
        return _with_penalty(model, loss), {"documents": batch.targets.numel()}

    @torch.no_grad()
    def sums(self, model, batch: Batch, state=None) -> Sums:
        logits = self._logits(model, batch)
        targets = batch.targets
        known = targets >= 0
        loss = F.cross_entropy(logits[known], targets[known], reduction="sum")
        predicted = logits.argmax(dim=-1)  # (B,)
        K = len(self.labels)
        # Confusion counts: rows are true labels (K known, then one for unseen ones).
        cells = torch.where(known, targets, K) * K + predicted  # (B,)
        counts = torch.bincount(cells, minlength=(K + 1) * K).cpu().tolist()
        extra = {f"confusion.{i:06d}": float(c) for i, c in enumerate(counts)}
        extra["known"] = float(known.sum())
        return Sums(float(loss), targets.numel(), int((predicted == targets).sum()), extra)

    def metrics(self, sums: Sums) -> dict[str, float]:
        from lmtool.metrics import Confusion

        K = len(self.labels)
        cells = [sums.extra[f"confusion.{i:06d}"] for i in range((K + 1) * K)]
        matrix = np.asarray(cells, dtype=np.int64).reshape(K + 1, K)
        confusion = Confusion(self.labels)
        confusion.add_counts(matrix[:K])
        if matrix[K].any():  # held-out labels the classifier does not know, all wrong
            confusion._row("(unseen labels)")
            confusion.counts[K, :K] += matrix[K]
        report = confusion.report()
        return {"loss": sums.loss / max(sums.extra["known"], 1.0),
                "accuracy": sums.correct / sums.tokens, "macro_f1": report["macro_f1"],
                "documents": sums.tokens}


@dataclass
class Seq2SeqBatch:
    """Pairs for an encoder–decoder (training/pairs.py makes them)."""

    source: torch.Tensor  # (B, S) source ids, right-padded
    source_mask: torch.Tensor  # (B, S) bool, True at real source tokens
    inputs: torch.Tensor  # (B, T) what the decoder reads: [BOS] + target
    targets: torch.Tensor  # (B, T) what it predicts: target + [EOS], IGNORE at padding

    def to(self, device: torch.device) -> Seq2SeqBatch:
        return Seq2SeqBatch(*(t.to(device, non_blocking=True) for t in (
            self.source, self.source_mask, self.inputs, self.targets)))

    @property
    def num_tokens(self) -> int:
        """Tokens read (real source and target tokens), for tokens/s. Ask on the CPU."""
        return int(self.source_mask.sum()) + int((self.targets != IGNORE).sum())


class Seq2SeqObjective(Objective):
    """Teacher forcing: the decoder reads [BOS] + target and each position predicts the
    next target token (then [EOS]); cross-entropy against targets smoothed by
    `label_smoothing` for training, plain for evaluation (so perplexity is the model's)."""

    name = "seq2seq"

    def __init__(self, label_smoothing: float = 0.1):
        self.label_smoothing = label_smoothing

    def make_batch(self, raw: Seq2SeqBatch, generator: torch.Generator) -> Seq2SeqBatch:
        return raw  # the source made it whole: nothing random here

    def _logits(self, model, batch: Seq2SeqBatch) -> torch.Tensor:
        return model(batch.source, batch.source_mask, batch.inputs).float()  # (B, T, V)

    def loss(self, model, batch, state=None) -> tuple[torch.Tensor, dict]:
        targets = batch.targets.flatten()  # (B*T,)
        scored = targets != IGNORE  # (B*T,)
        tokens = int(scored.sum())
        head = unwrap(model).lm_head
        if isinstance(head, torch.nn.Linear) and fused_loss.pays(tokens, head.out_features,
                                                                 self.label_smoothing):
            # The head and the smoothed loss in blocks of the scored rows only (padding
            # left out first, as ignore_index would): the same loss and gradients.
            hidden = model(batch.source, batch.source_mask, batch.inputs, head=False)
            loss = linear_cross_entropy(hidden.flatten(0, 1)[scored], head.weight, head.bias,
                                        targets[scored], self.label_smoothing)
        else:
            loss = F.cross_entropy(self._logits(model, batch).flatten(0, 1), targets,
                                   ignore_index=IGNORE, label_smoothing=self.label_smoothing)
        return loss, {"tokens": tokens}

    @torch.no_grad()
    def sums(self, model, batch, state=None) -> Sums:
        logits = self._logits(model, batch).flatten(0, 1)  # (B*T, V)
        targets = batch.targets.flatten()  # (B*T,)
        scored = targets != IGNORE
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
        correct = ((logits.argmax(-1) == targets) & scored).sum()
        return Sums(float(loss), int(scored.sum()), int(correct))

    def metrics(self, sums: Sums) -> dict[str, float]:
        loss = sums.loss / max(sums.tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                "accuracy": sums.correct / max(sums.tokens, 1), "tokens": sums.tokens}


def make_objective(config: ModelConfig) -> Objective:
    """The objective a model was built for (config.objective, config.backward)."""
    if config.objective == "causal":
        return CausalObjective(config.backward)
    if config.objective == "masked":
        return MaskedObjective(config.vocab_size, specials=special_ids(config))
    raise ValueError(f"unknown objective {config.objective!r}")
