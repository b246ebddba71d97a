"""The LSTM encoder–decoder: a bidirectional LSTM reads the source; an LSTM decoder,
started from the encoder's final states, writes the target.

attention "none" (Sutskever et al. 2014; as Cho et al. 2014 do, the vector is also fed
to every decoder step and to the readout): the encoder's final states are all the
decoder ever sees of the source, a fixed-size vector c however long the sentence.
attention "bahdanau" (Bahdanau et al. 2015): before each target step the decoder's
previous state s_{t-1} scores every source position additively,
e_tj = v . tanh(W s_{t-1} + U h_j), softmax over j (pads excluded) gives weights a_tj,
and the context c_t = sum_j a_tj h_j is fed to the LSTM beside the previous target
word. Both read out tanh(W_o [s_t; c_t]) into the output layer (the tied embedding):
the two differ only in where c_t comes from.

Shapes: B batch, S source, T target, E embedding (config.dim), N hidden, L layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmtool.errors import BadInput
from lmtool.models.lstm_precision import run_lstm
from lmtool.models.seq2seq import EncoderDecoder, Seq2SeqState
from lmtool.models.seq2seq_config import Seq2SeqConfig


class AdditiveAttention(nn.Module):
    """Bahdanau's scoring: v . tanh(W q + U h_j). U h_j depends on the source alone, so
    `keys` computes it once per source."""

    def __init__(self, query: int, memory: int, width: int):
        super().__init__()
        self.key = nn.Linear(memory, width, bias=False)  # U
        self.query = nn.Linear(query, width)  # W (and the bias)
        self.v = nn.Linear(width, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key(memory)  # (B, S, A)

    def forward(self, query, keys, memory, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, N), keys (n, S, A), memory (n, S, 2N), mask (n, S) → context
        (B, 2N) and weights (B, S), which sum to one over the real positions. n = B / G
        sources, each read by G consecutive rows (a beam search's beams)."""
        n, S, A = keys.shape
        q = self.query(query).view(n, -1, 1, A)  # (n, G, 1, A)
        scores = self.v(torch.tanh(keys[:, None] + q)).squeeze(-1)  # (n, G, S)
        weights = scores.float().masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        context = torch.bmm(weights.to(memory.dtype), memory)  # (n, G, 2N)
        return context.flatten(0, 1), weights.flatten(0, 1)  # (B, 2N), (B, S)


def lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from its pre-activations (B, 4N), in nn.LSTM's gate order (input,
    forget, cell, output), and the previous cell (B, N) → the new (h, c), (B, N) each."""
    i, f, g, o = gates.chunk(4, dim=1)  # (B, N) each
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class LSTMSeq2Seq(EncoderDecoder):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        E, N, L = c.dim, c.hidden, c.layers
        self.attend = c.attention == "bahdanau"
        between = c.dropout if L > 1 else 0.0
        self.tok_emb = nn.Embedding(c.vocab_size, E)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.LSTM(E, N, L, batch_first=True, bidirectional=True, dropout=between)
        # Each layer's (forward, backward) final states → that decoder layer's start.
        self.bridge_h = nn.Linear(2 * N, N)
        self.bridge_c = nn.Linear(2 * N, N)
        context = 2 * N  # c_t: attention's, or the fixed vector
        self.attention = AdditiveAttention(N, 2 * N, N) if self.attend else None
        self.decoder = nn.LSTM(E + context, N, L, batch_first=True, dropout=between)
        self.readout = nn.Linear(N + context, E)
        self.lm_head = nn.Linear(E, c.vocab_size, bias=False)
        nn.init.uniform_(self.tok_emb.weight, -0.1, 0.1)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def remember(self, source, source_mask, *, cache=False, capacity=None) -> Seq2SeqState:
        B, S = source.shape
        L, N = self.config.layers, self.config.hidden
        x = self.drop(self.tok_emb(source))  # (B, S, E)
        lengths = source_mask.sum(1).cpu()
        if bool((lengths == 0).any()):
            raise BadInput("an empty source: every source needs at least one token")
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = run_lstm(self.encoder, packed)  # h, c: (2L, B, N), the last real position's
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, 2N)
        h = h.view(L, 2, B, N).permute(0, 2, 1, 3).reshape(L, B, 2 * N)  # (L, B, 2N)
        c = c.view(L, 2, B, N).permute(0, 2, 1, 3).reshape(L, B, 2 * N)
        rows = {"h": torch.tanh(self.bridge_h(h)).transpose(0, 1),  # (B, L, N)
                "c": self.bridge_c(c).transpose(0, 1)}
        sources = {"mask": source_mask}
        if self.attend:
            sources["memory"] = memory
            sources["keys"] = self.attention.keys(memory)  # (B, S, N): once per source
        else:
            sources["context"] = h[-1]  # (B, 2N): the top layer's final states, both ways
        return Seq2SeqState(sources, rows)

    def decode(self, target, state: Seq2SeqState, weights: list | None = None) -> torch.Tensor:
        rows = state.rows
        x = self.drop(self.tok_emb(target))  # (B, T, E)
        h = rows["h"].transpose(0, 1).contiguous()  # (L, B, N)
        c = rows["c"].transpose(0, 1).contiguous()
        if not self.attend:
            fixed = state.per_row("context")[:, None].expand(-1, x.size(1), -1)  # (B, T, 2N)
            fixed = fixed.to(x.dtype)
            # the whole target at once
            out, (h, c) = run_lstm(self.decoder, torch.cat([x, fixed], -1), (h, c))
            features = torch.cat([out, fixed.to(out.dtype)], -1)  # (B, T, 3N)
        else:
            features, (h, c) = self.attend_steps(x, (h, c), state.sources, weights)  # (B, T, 3N)
        rows["h"], rows["c"] = h.transpose(0, 1), c.transpose(0, 1)
        state.advance(target.size(1))
        return self.drop(torch.tanh(self.readout(features)))  # (B, T, E)

    def attend_steps(self, x, hc, sources, weights: list | None):
        """Bahdanau's decoder over embedded targets x (B, T, E) from (h, c) (L, B, N)
        each, attending to the state's per-source tensors → features [s_t; c_t]
        (B, T, 3N) and the last (h, c). The arithmetic of `self.decoder` fed one
        (B, 1, E + 2N) step at a time, with the LSTM's cells written out so that what
        does not wait for the step before is done once: layer 0's product with the
        embeddings (and both biases) for all T positions at once."""
        lstm, L, E = self.decoder, self.config.layers, self.config.dim
        between = lstm.dropout if self.training else 0.0
        w0 = lstm.weight_ih_l0  # (4N, E + 2N): [embedding | context] columns
        ahead = F.linear(x, w0[:, :E], lstm.bias_ih_l0 + lstm.bias_hh_l0)  # (B, T, 4N)
        # T tensors (B, 4N) in one op: its backward stacks their gradients once, where
        # indexing ahead[:, t] would fill a zero (B, T, 4N) gradient at every step.
        ahead = ahead.unbind(1)
        # Layer l's pre-activations: [below] @ inputs[l].T + h_l @ recurrent[l].T + biases[l]
        # (layer 0: the context below, and `ahead` for the embedding and the biases).
        # Column slices and .T are views: no weight is copied, at any step.
        inputs = [w0[:, E:]] + [getattr(lstm, f"weight_ih_l{i}") for i in range(1, L)]
        recurrent = [getattr(lstm, f"weight_hh_l{i}") for i in range(L)]  # (4N, N) each
        biases = [getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}")
                  for i in range(1, L)]  # (4N,) each
        h, c = list(hc[0].unbind(0)), list(hc[1].unbind(0))  # L x (B, N) each
        steps = []
        for t in range(x.size(1)):  # each step's context needs the step before
            context, w = self.attention(h[-1], sources["keys"], sources["memory"],
                                        sources["mask"])  # (B, 2N), (B, S)
            if weights is not None:
                weights.append(w)
            inp = context.to(x.dtype)  # (B, 2N)
            for layer in range(L):
                if layer:
                    inp = F.dropout(inp, between, self.training)  # as nn.LSTM between layers
                gates = biases[layer - 1] if layer else ahead[t]  # (4N,) or (B, 4N)
                gates = torch.addmm(gates, inp, inputs[layer].t())  # (B, 4N)
                gates = torch.addmm(gates, h[layer], recurrent[layer].t())
                h[layer], c[layer] = lstm_cell(gates, c[layer])  # (B, N) each
                inp = h[layer]
            steps.append(torch.cat([inp, context.to(inp.dtype)], -1))  # (B, 3N)
        return torch.stack(steps, 1), (torch.stack(h), torch.stack(c))  # (B, T, 3N), (L, B, N)

    @torch.no_grad()
    def cross_attention(self, source: list[int], target: list[int], **options) -> torch.Tensor:
        if not self.attend:
            raise BadInput("this LSTM has no attention (--attention none): its decoder sees "
                           "only the encoder's final states", "train with --attention bahdanau")
        return torch.stack(self.attention_steps(source, target), 1)[0]  # (T, S)

    def layer_groups(self) -> list[list[nn.Module]]:
        encoder = [self.encoder, self.bridge_h, self.bridge_c]
        decoder = [self.decoder] + ([self.attention] if self.attention is not None else [])
        return [[self.tok_emb], encoder, decoder, [self.readout, self.lm_head]]
