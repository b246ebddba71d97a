"""A text classifier: a language model's backbone under ULMFiT's concat-pooling head.

Read top to bottom: the config → the document encoding (token ids in the order the
backbone reads) → concat pooling → the head → the classifier. Shapes: B documents,
T tokens (padded), C the backbone's output width, K classes.

How a document is read (Howard & Ruder 2018, §3.3, and fastai's classifier encoder):
1. Its tokens, cut to `max_tokens`, reversed for a backward LM, after one [EOS]: the
   pre-training shards end every document with [EOS], so the LM has always seen a
   document begin right after one. The [EOS] also gives an empty document a token.
2. Batches are padded on the right, with `lengths` saying how many tokens are real.
3. The AWD-LSTM reads a batch in chunks of its BPTT length, the state carried from one
   chunk to the next (detached in training, as fastai does), so a long document costs
   memory per chunk and is never cut at the training context. A Transformer reads
   windows of its context, each on its own, and the pooling runs over all of them.
4. Concat pooling over the real tokens only: [last hidden state, max-pool, mean-pool].
   A masked (bidirectional) model has no "last" state that has read everything, so its
   first position (the [EOS], which attends to the whole window) stands in for it.
5. The head: two blocks of batch norm → dropout → linear, ReLU between them. The
   first dropout is the encoder's output dropout, applied here once and not also on
   every time step inside the encoder (fastai's PoolingLinearClassifier output_p).
6. An AWD-LSTM classifier in training leaves AR/TAR (the backbone's alpha and beta,
   2 and 1 by default, as fastai's text_classifier_learner) on the encoder's outputs
   of the real tokens in `penalty`, for the objective to add to the loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.base import LanguageModel
from lmtool.models.config import ModelConfig, dataclass_from_dict
from lmtool.text.specials import SPECIAL_IDS, SpecialIds, special_ids

# fastai's ULMFiT classifier multiplies every dropout of its AWD-LSTM config
# (awd_lstm_clas_config in fastai/text/models/awdlstm.py: embed_p 0.05, input_p 0.4,
# hidden_p 0.3, weight_p 0.5, output_p 0.4; training/classifier.py LSTM_DROPOUTS) by
# drop_mult, 0.5 by default (text_classifier_learner's default, and its IMDb recipe):
# the classifier's one multiplier, for the encoder (its config's `dropout`) and head alike.
CLASSIFIER_DROP_MULT = 0.5
OUTPUT_P = 0.4  # fastai's classifier output_p: the head's first dropout before the multiplier


@dataclass
class ClassifierConfig:
    """The head and how documents are read; saved as config.json's "classifier"."""

    labels: list[str] = field(default_factory=list)  # class names; index = output unit
    head_hidden: int = 50  # width of the hidden block (fastai's lin_ftrs=[50])
    # Dropout before the first linear block: None takes the backbone's output dropout
    # (an AWD-LSTM's output_dropout x dropout, which it then no longer applies itself:
    # fastai's output_p 0.4 x drop_mult 0.5 = 0.2 by default), or 0.4 x
    # CLASSIFIER_DROP_MULT for a Transformer. Before the second block: fastai's 0.1
    # (its `ps`, which drop_mult does not scale).
    head_dropout: float | None = None
    hidden_dropout: float = 0.1
    max_tokens: int = 1440  # a document's tokens read at most, [EOS] included (fastai: 20 x 72)
    # Which end of a longer document is read: "first" (runs made before the field
    # existed) or "last" (fastai's classifier pools over a document's last max_len).
    keep: str = "first"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierConfig:
        return dataclass_from_dict(cls, data, "classifier")


# --- documents → token ids -------------------------------------------------------------


def kept_tokens(tokens, max_tokens: int, keep: str):
    """The first or the last `max_tokens` of a document's tokens (a list or an array)."""
    if len(tokens) <= max_tokens:
        return tokens
    return tokens[-max_tokens:] if keep == "last" and max_tokens > 0 else tokens[:max_tokens]


def document_ids(tokens: list[int], *, backward: bool, max_tokens: int, keep: str = "first",
                 specials: SpecialIds = SPECIAL_IDS) -> tuple[list[int], bool]:
    """The ids the classifier reads for a document's tokens, and whether it was cut.

    [EOS] first, then at most max_tokens - 1 of the document's first (or, with `keep`
    "last", last) tokens, in the backbone's reading order (reversed for a backward LM,
    so both directions of an ensemble see the same text). An imported run reads its
    own tokenizer's template around them instead (BERT: [CLS] ... [SEP]; Llama: <s> ...).
    """
    start = list(specials.start)
    end = list(specials.end) if specials.imported else []
    room = max(max_tokens - len(start) - len(end), 0)
    cut = len(tokens) > room
    tokens = kept_tokens(tokens, room, keep)
    if backward:
        tokens = tokens[::-1]
    return [*start, *tokens, *end], cut


def pad_batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and lengths (B,) for rows of token ids."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # (B,)
    # Any id serves as padding: no real position attends to it or pools it.
    ids = torch.full((len(rows), int(lengths.max())), SPECIAL_IDS.pad, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, lengths


# --- pooling and head ----------------------------------------------------------------------


def concat_pool(hidden: torch.Tensor, lengths: torch.Tensor, first: bool = False) -> torch.Tensor:
    """[last real state, max-pool, mean-pool] over each row's real tokens: (B, T, C) → (B, 3C).

    Padding (positions >= length) takes no part: the max ignores it and the mean divides
    by the real length. With `first`, position 0 stands in for the last state.
    """
    B, T, _ = hidden.shape
    hidden = hidden.float()  # pooling in fp32, whatever autocast computed
    real = torch.arange(T, device=hidden.device)[None, :] < lengths[:, None]  # (B, T)
    rows = torch.arange(B, device=hidden.device)
    last = hidden[:, 0] if first else hidden[rows, lengths - 1]  # (B, C)
    top = hidden.masked_fill(~real[:, :, None], float("-inf")).amax(dim=1)  # (B, C)
    mean = (hidden * real[:, :, None]).sum(dim=1) / lengths[:, None].to(hidden.dtype)  # (B, C)
    return torch.cat([last, top, mean], dim=-1)  # (B, 3C)


def activation_penalty(hidden: torch.Tensor, lengths: torch.Tensor, ar: float,
                       tar: float) -> torch.Tensor | None:
    """AR + TAR (Merity et al. 2017, section 4.6) over each row's real outputs (B, T, C):
    ar x mean(h^2) + tar x mean((h[t+1] - h[t])^2), padding left out (fastai's
    RNNRegularizer averages over padding too, which would weigh short documents less)."""
    if not (ar or tar):
        return None
    hidden = hidden.float()
    T = hidden.size(1)
    real = (torch.arange(T, device=hidden.device)[None, :] < lengths[:, None]).float()  # (B, T)
    width = hidden.size(-1)
    penalty = ar * (hidden.pow(2).sum(-1) * real).sum() / (real.sum() * width)
    pairs = real[:, 1:] * real[:, :-1]  # (B, T-1): both steps real
    if tar and pairs.sum() > 0:
        steps = (hidden[:, 1:] - hidden[:, :-1]).pow(2).sum(-1)  # (B, T-1)
        penalty = penalty + tar * (steps * pairs).sum() / (pairs.sum() * width)
    return penalty


class LinearBlock(nn.Sequential):
    """Batch norm → dropout → linear, fastai's LinBnDrop."""

    def __init__(self, n_in: int, n_out: int, dropout: float):
        super().__init__(nn.BatchNorm1d(n_in), nn.Dropout(dropout), nn.Linear(n_in, n_out))


class PoolingHead(nn.Module):
    """(B, 3C) pooled features → (B, K) logits through two linear blocks."""

    def __init__(self, n_in: int, config: ClassifierConfig, dropout: float):
        super().__init__()
        self.hidden = LinearBlock(n_in, config.head_hidden, dropout)
        self.out = LinearBlock(config.head_hidden, len(config.labels), config.hidden_dropout)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(pooled)))  # (B, K)


# --- the classifier --------------------------------------------------------------------------


class Classifier(nn.Module):
    """A language model's backbone (its LM head dropped) + a concat-pooling head.

    `forward(ids, lengths) -> logits (B, K)`; `layer_groups()` from the embedding at
    the bottom to the head at the top, for discriminative rates and gradual unfreezing.
    """

    def __init__(self, backbone: LanguageModel, config: ClassifierConfig):
        super().__init__()
        if len(config.labels) < 2:
            raise BadInput("a classifier needs two labels at least")
        if config.max_tokens < 2:
            raise BadInput("--max-tokens must be at least 2")
        if config.keep not in ("first", "last"):
            raise BadInput(f"a classifier keeps the first or the last tokens, not {config.keep!r}")
        mc = backbone.config
        self.config = config
        self.model_config = mc
        # The LM head (and its tied decoder, its bias, the MLM transform) is not used:
        # an Identity keeps `backbone.layer_groups()` working and holds no parameters.
        backbone.lm_head = nn.Identity()
        self.backbone = backbone
        self.masked = mc.objective == "masked"
        self.penalty: torch.Tensor | None = None  # AR/TAR of the last training forward
        width = mc.dim  # the Transformer's width; the AWD-LSTM's last layer outputs dim too
        self.head = PoolingHead(3 * width, config, self._head_dropout(backbone, config))

    @staticmethod
    def _head_dropout(backbone: LanguageModel, config: ClassifierConfig) -> float:
        """The head's first dropout. The encoder's output dropout belongs to the head,
        once (fastai): an AWD-LSTM's is taken out of the backbone (it would drop every
        time step's output before the pooling, and the head would drop again) and
        becomes the head's, unless the config names a value."""
        from lmtool.models.lstm import AWDLSTM

        output_p = OUTPUT_P * CLASSIFIER_DROP_MULT
        if isinstance(backbone, AWDLSTM):
            output_p = backbone.output_dropout.p
            backbone.output_dropout = nn.Identity()
        return output_p if config.head_dropout is None else config.head_dropout

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def encode_documents(self, token_lists: list[list[int]]) -> list[tuple[list[int], bool]]:
        """(ids, cut) for each document's tokens (see `document_ids`)."""
        specials = special_ids(self.model_config)
        return [document_ids(t, backward=self.model_config.backward,
                             max_tokens=self.config.max_tokens, keep=self.config.keep,
                             specials=specials)
                for t in token_lists]

    def read(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, C) of right-padded ids (B, T), read as the module doc says."""
        if self.model_config.arch == "lstm":
            return self._read_chunks(ids)
        return self._read_windows(ids, lengths)

    def _read_chunks(self, ids: torch.Tensor) -> torch.Tensor:
        """The LSTM: chunks of its BPTT length, the state carried. Rows shorter than
        the batch run on over padding, which only comes after their real tokens."""
        chunk = self.model_config.context
        state = self.backbone.initial_state(ids.size(0))
        outs = []
        for start in range(0, ids.size(1), chunk):
            outs.append(self.backbone.encode(ids[:, start : start + chunk], state))  # (B, t, C)
            if self.training:
                state.detach()  # truncated backpropagation, as fastai's classifier encoder
        return torch.cat(outs, dim=1)  # (B, T, C)

    def _read_windows(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The Transformer: windows of its context, each read on its own."""
        B, T = ids.shape
        W = self.model_config.context
        real = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        if T <= W:
            return self._encode(ids, real)
        n = -(-T // W)  # windows per row
        pad = n * W - T
        ids = nn.functional.pad(ids, (0, pad), value=SPECIAL_IDS.pad).view(B * n, W)
        real = nn.functional.pad(real, (0, pad), value=False).view(B * n, W)
        used = real[:, 0].nonzero().squeeze(1)  # windows holding a real token (they start real)
        hidden = self._encode(ids[used], real[used])  # (N, W, C)
        out = hidden.new_zeros(B * n, W, hidden.size(-1))
        out[used] = hidden
        return out.view(B, n * W, -1)[:, :T]  # (B, T, C)

    def _encode(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """A causal model needs no padding mask: right padding comes after every real
        query. A bidirectional one must not attend to padding."""
        if self.masked:
            return self.backbone.encode(ids, real=real)  # (B, T, C)
        return self.backbone.encode(ids)  # (B, T, C)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Right-padded ids (B, T) and real lengths (B,) → logits (B, K)."""
        hidden = self.read(ids, lengths)  # (B, T, C)
        self.backbone.take_penalty()  # the last chunk's LM penalty: replaced by the one below
        if self.training and self.model_config.arch == "lstm":
            self.penalty = activation_penalty(hidden, lengths, self.model_config.ar,
                                              self.model_config.tar)
        return self.head(concat_pool(hidden, lengths, first=self.masked))  # (B, K)

    def take_penalty(self) -> torch.Tensor | None:
        """The AR/TAR of the last training forward (None if none), cleared once taken."""
        penalty, self.penalty = self.penalty, None
        return penalty

    def layer_groups(self) -> list[list[nn.Module]]:
        """The backbone's groups, embedding at the bottom, with what was beside its LM
        head (the Transformer's final LayerNorm) joining the new head at the top."""
        *lower, top = self.backbone.layer_groups()
        rest = [m for m in top if not isinstance(m, nn.Identity)]
        return [*lower, [*rest, self.head]]


def build_classifier(model: ModelConfig | dict, classifier: ClassifierConfig | dict) -> Classifier:
    """A classifier with a freshly initialised backbone (weights come from a checkpoint
    or from the LM being fine-tuned)."""
    from lmtool.models import build_model

    if isinstance(model, dict):
        model = ModelConfig.from_dict(model)
    if isinstance(classifier, dict):
        classifier = ClassifierConfig.from_dict(classifier)
    return Classifier(build_model(model), classifier)
