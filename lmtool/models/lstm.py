"""AWD-LSTM (Merity et al. 2017), the backbone of ULMFiT (Howard & Ruder 2018).

Read top to bottom: the three dropouts → one weight-dropped LSTM layer → the model.
Every dropout probability is the config's base value times `config.dropout` (fastai's
drop_mult), so `--dropout 0` turns them all off. Shapes: B batch, T time, E embedding
size (config.dim), H hidden size (config.hidden), V vocabulary.

Without a state every forward starts from a zero hidden state, so batches need not be
consecutive and the trainer can shuffle them freely. With one (`initial_state`, then
`encode(idx, state)`), each call continues where the last ended and leaves the new
(h, c) in the state: stateful BPTT (detach between batches), long documents read in
chunks, token-by-token generation. The dropout masks are drawn per call either way.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.base import LanguageModel
from lmtool.models.config import ModelConfig
from lmtool.models.lstm_precision import run_lstm
from lmtool.models.state import LSTMState


def embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole rows of the embedding matrix (V, E): a dropped word is zero wherever
    it occurs in the batch. Kept rows are scaled by 1/(1-p)."""
    if not training or p == 0:
        return weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)  # (V, 1)
    return weight * mask  # (V, E)


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence, the same at every time step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask  # (B, T, C) * (B, 1, C)


class WeightDroppedLSTM(nn.Module):
    """One nn.LSTM layer whose hidden-to-hidden matrix gets DropConnect.

    The trained matrix lives here as the parameter `weight_hh_raw`; the LSTM's own
    `weight_hh_l0` is not a parameter but a plain tensor set before each call (the raw
    weight with a fresh dropout mask in training, a view of it in eval) and cleared
    after. So the weights file holds the raw matrix once, `.to()` moves it, and no
    stale dropped copy outlives the call.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_p: float):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.weight_p = weight_p
        self.weight_hh_raw = nn.Parameter(self.lstm.weight_hh_l0.detach().clone())  # (4H, H)
        del self.lstm.weight_hh_l0  # no longer a parameter of the LSTM
        self.lstm.weight_hh_l0 = None  # RNNBase.__setattr__ keeps its _flat_weights in sync

    def forward(
        self, x: torch.Tensor, hc: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Inputs (B, T, in) and the state to start from (each (1, B, hidden_size);
        None: zeros) → outputs (B, T, hidden_size) and the state after the last step."""
        if hc is not None:
            # A state made under bf16 autocast is bf16; read in fp32 (a run resumed with
            # --precision fp32) oneDNN would fail with an opaque error. Under autocast the
            # LSTM casts it back itself, so matching the input costs nothing there.
            hc = (hc[0].to(x.dtype), hc[1].to(x.dtype))
        raw = self.weight_hh_raw
        if self.training and self.weight_p > 0:
            weight = F.dropout(raw, self.weight_p, training=True)  # (4H, H), new mask per call
        else:
            weight = raw.view_as(raw)  # a plain tensor: assigning a Parameter would register it
        if x.size(1) == 1:  # one step (generation)
            return self._step(x, hc, weight)
        self.lstm.weight_hh_l0 = weight
        try:
            with warnings.catch_warnings():
                # On CUDA, cuDNN warns on every call that the weights are not one
                # contiguous chunk: true by design here (the dropped matrix is new).
                warnings.filterwarnings("ignore", message="RNN module weights are not part")
                out, hc = run_lstm(self.lstm, x, hc)  # (B, T, H), 2 x (1, B, H)
        finally:
            self.lstm.weight_hh_l0 = None
        return out, hc

    def _step(self, x: torch.Tensor, hc, weight_hh: torch.Tensor):
        """One time step through torch.lstm_cell: the same arithmetic as nn.LSTM, but
        nn.LSTM's oneDNN kernel re-prepares its weights on every call (2.9 ms per layer
        at batch 1 for 256 → 768 on a 2-core CPU, against 0.46 ms here)."""
        if hc is None:
            zeros = x.new_zeros(x.size(0), self.lstm.hidden_size)  # (B, H)
            hc = (zeros[None], zeros[None])
        lstm = self.lstm
        h, c = torch.lstm_cell(
            x[:, 0], (hc[0][0], hc[1][0]), lstm.weight_ih_l0, weight_hh, lstm.bias_ih_l0,
            lstm.bias_hh_l0,
        )  # (B, H) each
        return h[:, None], (h[None], c[None])  # (B, 1, H), 2 x (1, B, H)


class AWDLSTM(LanguageModel):
    """Embedding → LSTM layers (E → H → ... → H → E) → decoder tied to the embedding.

    The last layer outputs E, not H, so the decoder can share the embedding matrix.
    Causal by construction: an LSTM reads left to right. In training mode each forward
    leaves its AR/TAR penalty in `self.penalty` for the objective to add to the loss.
    """

    # Trained as the paper does: contiguous streams, state carried between batches.
    stateful_training = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        m = config.dropout  # fastai's drop_mult
        probs = {
            "embed": config.embed_dropout * m,
            "input": config.input_dropout * m,
            "hidden": config.hidden_dropout * m,
            "weight": config.weight_dropout * m,
            "output": config.output_dropout * m,
        }
        too_big = [f"{name} {p:.2f}" for name, p in probs.items() if not 0 <= p < 1]
        if too_big:
            raise BadInput(
                f"--dropout {m} makes AWD-LSTM dropouts reach 1 ({', '.join(too_big)})",
                "use a smaller --dropout multiplier",
            )
        E, H, V = config.dim, config.hidden, config.vocab_size
        self.embed_p = probs["embed"]
        self.embedding = nn.Embedding(V, E)
        self.input_dropout = LockedDropout(probs["input"])
        sizes = [E] + [H] * (config.layers - 1) + [E]
        self.rnns = nn.ModuleList(
            WeightDroppedLSTM(sizes[i], sizes[i + 1], probs["weight"])
            for i in range(config.layers)
        )
        # Between layers: hidden dropout; after the last one: output dropout, which is
        # the LM head's (fastai's LinearDecoder output_p): a classifier replaces it by
        # an Identity and drops its pooled features in its own head instead.
        self.layer_dropouts = nn.ModuleList(
            LockedDropout(probs["hidden"]) for _ in range(config.layers - 1)
        )
        self.output_dropout: nn.Module = LockedDropout(probs["output"])
        self.lm_head = nn.Linear(E, V)
        # ULMFiT's initialisation: small uniform embeddings, zero decoder bias.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.lm_head.bias)
        if config.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    def check_length(self, idx: torch.Tensor) -> None:
        # An LSTM has no position limit: config.context is only the training BPTT length.
        if idx.dim() != 2:
            raise BadInput(f"expected token ids of shape (batch, time), got {tuple(idx.shape)}")

    def initial_state(self, batch_size: int, **options) -> LSTMState:
        """Zero (h, c) for every layer, `batch_size` rows, on the model's device.
        (Options meant for a KV cache, such as `capacity`, mean nothing here.)"""
        if options.get("left_pad") is not None:
            raise BadInput("an LSTM state cannot skip left padding", "group rows by length")
        sizes = [rnn.lstm.hidden_size for rnn in self.rnns]
        weight = self.embedding.weight  # the state follows the weights (bf16 for inference)
        return LSTMState.zeros(sizes, batch_size, weight.device, weight.dtype)

    def encode(self, idx: torch.Tensor, state: LSTMState | None = None) -> torch.Tensor:
        """Token ids (B, T) → the last layer's (dropped-out) outputs (B, T, E). With a
        state, start from its (h, c) and replace them by the ones after `idx`."""
        self.check_length(idx)
        if state is not None:
            if not isinstance(state, LSTMState):
                raise BadInput(f"an AWD-LSTM carries an LSTMState, not {type(state).__name__}")
            if state.batch_size != idx.size(0):
                raise BadInput(f"{idx.size(0)} rows of tokens for a state of "
                               f"{state.batch_size} rows")
        weight = embedding_dropout(self.embedding.weight, self.embed_p, self.training)  # (V, E)
        x = self.input_dropout(F.embedding(idx, weight))  # (B, T, E)
        new_state = []
        dropouts = [*self.layer_dropouts, self.output_dropout]
        for i, (rnn, dropout) in enumerate(zip(self.rnns, dropouts, strict=True)):
            raw, hc = rnn(x, state.layers[i] if state is not None else None)
            x = dropout(raw)  # (B, T, H), or (B, T, E) after the last layer
            new_state.append(hc)
        if state is not None:
            state.layers = new_state
            state.length += idx.size(1)
        if self.training and (self.config.ar or self.config.tar):
            self.penalty = self._activation_penalty(raw, x)
        return x

    def _activation_penalty(self, raw: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """AR and TAR (Merity et al. 2017, section 4.6) on the last layer's outputs (B, T, E):
        AR = alpha * mean(dropped^2) keeps activations small, TAR = beta * mean((raw[t+1] -
        raw[t])^2) keeps them slow to change. As in the authors' code and fastai's
        RNNRegularizer: AR on the dropped-out output, TAR on the raw one."""
        penalty = self.config.ar * dropped.float().pow(2).mean()
        if raw.size(1) > 1:
            penalty = penalty + self.config.tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        return penalty

    def layer_groups(self) -> list[list[nn.Module]]:
        """[embedding], [LSTM 0], ..., [LSTM L-1], [decoder]; where the tied weight goes
        is `parameter_groups`' choice (fastai: the top group for LM fine-tuning, with the
        decoder, which gives fastai's 4 groups for 3 layers; the bottom for classifiers)."""
        return [[self.embedding], *([rnn] for rnn in self.rnns), [self.lm_head]]
