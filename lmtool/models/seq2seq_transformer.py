"""The Transformer encoder–decoder (Vaswani et al. 2017), pre-norm, built from the LM's
own pieces (models/transformer.py: `Block` for the encoder, `SelfAttention` and `MLP`
in the decoder, the rotary tables, the fused `attention`) plus cross-attention.

Read top to bottom: cross-attention → decoder block → model. Shapes: B batch, S source
tokens, T target tokens, C width, H heads, D = C / H, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.config import ModelConfig
from lmtool.models.seq2seq import EncoderDecoder, Seq2SeqState
from lmtool.models.seq2seq_config import Seq2SeqConfig
from lmtool.models.state import KVCache
from lmtool.models.step_linear import step_linear
from lmtool.models.transformer import MLP, Block, SelfAttention, attention, norm, rotary_tables


def block_config(c: Seq2SeqConfig) -> ModelConfig:
    """The LM config the shared blocks read (their width, heads, MLP and dropout)."""
    return ModelConfig(arch="transformer", objective="causal", vocab_size=c.vocab_size,
                       context=c.context, layers=c.layers, heads=c.heads, dim=c.dim,
                       mlp_ratio=c.mlp_ratio, positions=c.positions, dropout=c.dropout)


class CrossAttention(nn.Module):
    """Target queries over the encoder's output. Keys and values depend on the source
    alone: `memory` computes them once per source, every decoding step reuses them."""

    def __init__(self, c: Seq2SeqConfig):
        super().__init__()
        self.heads = c.heads
        self.dropout = c.dropout
        self.q = nn.Linear(c.dim, c.dim, bias=False)
        self.kv = nn.Linear(c.dim, 2 * c.dim, bias=False)
        self.proj = nn.Linear(c.dim, c.dim, bias=False)
        self.resid_dropout = nn.Dropout(c.dropout)

    def memory(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, C = encoded.shape
        kv = self.kv(encoded).view(B, S, 2, self.heads, C // self.heads)  # (B, S, 2, H, D)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, S, D)
        return k, v

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return self.q(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x, k, v, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), k and v (n, H, S, D), mask (n, 1, 1, S) True at real sources;
        n = B / G sources, each read by G consecutive rows (a beam search's beams)."""
        B, T, C = x.shape
        y = self._attend(self.q(x), k, v, mask, self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.to(x.dtype)))  # (B, T, C)

    def step(self, x, k, v, mask: torch.Tensor) -> torch.Tensor:
        """`forward` for inference in fewer PyTorch calls (no module calls, no dropout)."""
        y = self._attend(step_linear(self.q)(x), k, v, mask, 0.0)  # (B, T, C)
        return step_linear(self.proj)(y.to(x.dtype))  # (B, T, C)

    def _attend(self, q, k, v, mask, dropout: float) -> torch.Tensor:
        """Queries (B, T, C) over their sources' k and v → (B, T, C). The G rows of a
        source are its queries together: one (n, H, G*T, D) attention reads each
        source's keys once, rather than G copies of them."""
        B, T, C = q.shape
        n, H = k.size(0), self.heads
        G = B // n
        q = q.view(n, G, T, H, C // H).permute(0, 3, 1, 2, 4)  # (n, H, G, T, D)
        q = q.reshape(n, H, G * T, C // H).to(k.dtype)  # (n, H, G*T, D)
        y = attention(q, k, v, False, dropout, mask)  # (n, H, G*T, D)
        return y.view(n, H, G, T, C // H).permute(0, 2, 3, 1, 4).reshape(B, T, C)

    def weights(self, x: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The attention probabilities themselves, (B, H, T, S) (for pictures; one row
        per source)."""
        q = self._queries(x).float()  # (B, H, T, D)
        scores = q @ k.float().transpose(-1, -2) / math.sqrt(q.size(-1))  # (B, H, T, S)
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)


class DecoderBlock(nn.Module):
    """Pre-norm: x + self_attn(ln(x)) (causal), x + cross(ln(x)), x + mlp(ln(x))."""

    def __init__(self, c: Seq2SeqConfig, layer: int):
        super().__init__()
        bc = block_config(c)
        self.ln1 = nn.LayerNorm(c.dim)
        self.attn = SelfAttention(bc, causal=True, layer=layer)
        self.ln2 = nn.LayerNorm(c.dim)
        self.cross = CrossAttention(c)
        self.ln3 = nn.LayerNorm(c.dim)
        self.mlp = MLP(bc)

    def forward(self, x, rope, k, v, mask, cache: KVCache | None = None, self_mask=None,
                weights: list | None = None) -> torch.Tensor:
        h = self.ln1(x)
        if cache is None:
            x = x + self.attn(h, rope)  # (B, T, C), is_causal
        else:
            x = x + self.attn.step(h, rope, cache, self_mask)  # after the cached targets
        h = self.ln2(x)
        if weights is not None:
            weights.append(self.cross.weights(h, k, mask))  # (B, H, T, S)
        x = x + self.cross(h, k, v, mask)  # (B, T, C)
        return x + self.mlp(self.ln3(x))  # (B, T, C)

    def step(self, x, rope, k, v, mask, cache: KVCache, self_mask) -> torch.Tensor:
        """`forward` with a KV cache, for inference, in as few PyTorch calls as it can
        (as the LM's Block.step): decoding a token costs more in calls than in maths."""
        x = x + self.attn.step(norm(x, self.ln1), rope, cache, self_mask)  # (B, T, C)
        x = x + self.cross.step(norm(x, self.ln2), k, v, mask)  # (B, T, C)
        return x + self.mlp.step(norm(x, self.ln3))  # (B, T, C)


class TransformerSeq2Seq(EncoderDecoder):
    """Shared embedding → encoder blocks → LayerNorm; embedding → decoder blocks →
    LayerNorm → head (tied to the embedding)."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        c = config
        C, V = c.dim, c.vocab_size
        self.tok_emb = nn.Embedding(V, C)  # source and target alike
        learned = c.positions == "learned"
        self.enc_pos = nn.Embedding(c.context, C) if learned else None
        self.dec_pos = nn.Embedding(c.context, C) if learned else None
        if not learned:
            cos, sin = rotary_tables(C // c.heads, c.context)
            self.register_buffer("rope_cos", cos, persistent=False)  # (context, D)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(c.dropout)
        bc = block_config(c)
        self.encoder = nn.ModuleList(Block(bc, causal=False, layer=i) for i in range(c.layers))
        self.ln_enc = nn.LayerNorm(C)
        self.decoder = nn.ModuleList(DecoderBlock(c, i) for i in range(c.layers))
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.apply(self._init_weights)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        # GPT-2's scaled init of what writes into the residual stream (2 or 3 per block).
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.proj.weight", "cross.proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(3 * c.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def max_positions(self) -> int:
        return self.config.context

    def _rope(self, start: int, T: int):
        if self.enc_pos is not None:
            return None
        rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])  # (T, D)
        dtype = self.tok_emb.weight.dtype
        return rope if rope[0].dtype == dtype else tuple(t.to(dtype) for t in rope)

    def remember(self, source, source_mask, *, cache=False, capacity=None) -> Seq2SeqState:
        S = source.size(1)
        x = self.tok_emb(source)  # (B, S, C)
        if self.enc_pos is not None:
            x = x + self.enc_pos.weight[:S]
        x = self.drop(x)
        mask = source_mask[:, None, None, :]  # (B, 1, 1, S): real keys
        rope = self._rope(0, S)
        for block in self.encoder:
            x = block(x, rope, mask)  # (B, S, C)
        x = self.ln_enc(x)
        sources = {"mask": source_mask}
        for i, block in enumerate(self.decoder):
            sources[f"k{i}"], sources[f"v{i}"] = block.cross.memory(x)  # (B, H, S, D) each
        kv = None
        if cache:
            c = self.config
            device = self.tok_emb.weight.device
            # fp32 on CPUs, as the LM's cache (models/transformer.py initial_state).
            kv = KVCache(c.layers, source.size(0), c.heads, c.dim // c.heads, c.context,
                         device, capacity, None, torch.float32 if device.type == "cpu" else None)
        return Seq2SeqState(sources, cache=kv)

    def decode(self, target, state: Seq2SeqState, weights: list | None = None) -> torch.Tensor:
        T = target.size(1)
        cache = state.cache
        start = state.length
        if cache is None and start:
            raise BadInput("without a KV cache the decoder reads a whole target at once")
        if cache is not None:
            if self.training:
                raise BadInput("a KV cache is for inference", "call model.eval() first")
            if cache.room() < T:
                raise BadInput(f"{T} more target tokens do not fit the context of "
                               f"{self.config.context}")
        x = F.embedding(target, self.tok_emb.weight)  # (B, T, C)
        if self.dec_pos is not None:
            x = x + self.dec_pos.weight[start : start + T]
        x = self.drop(x)
        rope = self._rope(start, T)
        mask = state.sources["mask"][:, None, None, :]  # (n, 1, 1, S): per source
        self_mask = cache.attention_mask(T) if cache is not None else None
        lean = cache is not None and weights is None  # inference: the blocks' `step`
        for i, block in enumerate(self.decoder):
            k, v = state.sources[f"k{i}"], state.sources[f"v{i}"]  # (n, H, S, D)
            if lean:
                x = block.step(x, rope, k, v, mask, cache, self_mask)  # (B, T, C)
            else:
                x = block(x, rope, k, v, mask, cache, self_mask, weights)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        else:
            state.advance(T)
        return norm(x, self.ln_f)  # (B, T, C)

    @torch.no_grad()
    def cross_attention(self, source: list[int], target: list[int], *, layer: int | None = None,
                        head: int | None = None) -> torch.Tensor:
        """(T, S) weights: of `layer` (default the last; -1 counts from it too) and
        `head`, or the mean over heads (and over layers with layer="mean")."""
        stacked = torch.stack(self.attention_steps(source, target))[:, 0]  # (L, H, T, S)
        picked = stacked.mean(0) if layer == "mean" else stacked[-1 if layer is None else layer]
        return picked.mean(0) if head is None else picked[head]  # (T, S)

    def layer_groups(self) -> list[list[nn.Module]]:
        bottom = [self.tok_emb] + [m for m in (self.enc_pos, self.dec_pos) if m is not None]
        return [bottom, [*self.encoder, self.ln_enc], list(self.decoder), [self.ln_f,
                                                                          self.lm_head]]
