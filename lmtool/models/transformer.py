"""The transformer: a GPT-style decoder (causal) or a BERT-style encoder (masked).

Read top to bottom: rotary positions → attention → MLP → block → heads → model. One
backbone serves both objectives; only the attention's causality and the head differ.
Shapes: B batch, T time (tokens), C width (config.dim), H heads, D = C / H head size,
V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.base import LanguageModel
from lmtool.models.config import ModelConfig
from lmtool.models.state import KVCache


def rotary_tables(head_size: int, context: int, base: float = 10000.0):
    """cos and signed sin tables for rotary positions (RoPE, Su et al. 2021), each (T, D).

    Channel pair (i, i + D/2) of the token at position t turns by the angle
    t * base^(-2i/D): low channels turn fast, high channels slowly. The sin table is
    negated on its first half, so that `apply_rotary` needs no negation of its own.
    """
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (D/2,)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)  # (T, D/2)
    cos, sin = angles.cos(), angles.sin()  # (T, D/2) each
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)  # (T, D) each


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (i, i + D/2) of x (..., T, D) by its position's angle:
    (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    swapped = x.roll(x.size(-1) // 2, dims=-1)  # (..., T, D): (x2, x1)
    if cos.dtype != x.dtype:
        # The tables are fp32; under autocast q and k are bf16/fp16, and SDPA needs q, k,
        # v in one dtype, so the tables follow x.
        cos, signed_sin = cos.to(x.dtype), signed_sin.to(x.dtype)
    return x * cos + swapped * signed_sin  # (..., T, D)


def attention(q, k, v, causal: bool, dropout: float, mask: torch.Tensor | None = None):
    """softmax(q k^T / sqrt(D)) v over (B, H, T, D) tensors, via PyTorch's fused kernels.

    q may have fewer positions than k and v (a KV cache: T new queries, L + T keys);
    `mask` (bool, True = may attend) then says which keys each query sees, and `causal`
    must be False (SDPA's is_causal aligns top-left, see models/state.py).

    On the CPU under bf16 autocast the attention itself runs in fp32: PyTorch's CPU
    flash-attention backward is several times slower in bf16 than in fp32 (6x at
    B=12, H=4, T=64, D=32 on a 2-core AMX CPU, torch 2.13; no faster at T=256, D=64),
    while the matmuls around it gain 4x from bf16. The upcast costs three copies.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):  # else autocast casts back to bf16
            return F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout,
                is_causal=causal,
            )  # (B, H, T, D) in fp32; the next linear casts it back to bf16
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal
    )


def attention_weights(q, k, causal: bool, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + mask) written out, (B, H, T, L): what `attention` weighs
    v by, for `lmtool attention` to draw (SDPA never returns it). Rows sum to 1."""
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, L)
    if causal:
        T, L = scores.shape[-2:]
        mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril()  # top-left, as SDPA's
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)  # (B, H, T, L)


class SelfAttention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention.

    One fused linear makes q, k and v (one matmul instead of three). Causal attention
    passes is_causal=True and no mask tensor, so PyTorch can pick its flash kernels.
    With a KV cache, this call's k and v (after the rotary step) are appended to the
    cached ones and the queries attend over all of them: one new token with no mask (it
    may see everything), a chunk with the cache's bottom-right causal mask.
    """

    def __init__(self, config: ModelConfig, causal: bool, layer: int = 0):
        super().__init__()
        self.heads = config.heads
        self.causal = causal
        self.layer = layer  # which of the KV cache's blocks is ours
        self.dropout = config.dropout
        # bias=False: a little faster and no worse (nanoGPT's finding); LayerNorms keep theirs.
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.proj = nn.Linear(config.dim, config.dim, bias=False)
        self.resid_dropout = nn.Dropout(config.dropout)
        # Set by inference/attention.py for one forward: the weights are then computed
        # explicitly and kept in `weights` (B, H, T, T); training never pays for it.
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None = None,
    ):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, C // self.heads)  # (B, T, 3, H, D)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, T, D), no copy
        if rope is not None:
            q, k = apply_rotary(qkv[:2], *rope).unbind(0)  # 2 x (B, H, T, D), in one go
            v = qkv[2]  # (B, H, T, D)
        else:
            q, k, v = qkv.unbind(0)  # 3 x (B, H, T, D)
        dropout = self.dropout if self.training else 0.0
        # A padding mask (from encode's `real`) already holds the causal rule.
        if self.keep_weights:
            self.weights = attention_weights(q, k, self.causal and mask is None, mask)
            y = (self.weights @ v.float()).to(v.dtype)  # (B, H, T, D), no dropout: eval only
        else:
            y = attention(q, k, v, self.causal and mask is None, dropout, mask)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.proj(y))  # (B, T, C)
    def step(self, x: torch.Tensor, rope, cache: KVCache, mask: torch.Tensor | None):
        """`forward` after the KV cache's positions, for inference: this call's k and v
        join the cache and the queries attend over all of them. The same arithmetic as
        `forward` in fewer PyTorch calls (no dropout, no module calls): decoding one
        token at batch 1 costs about 3 us per call on a CPU, more than the maths."""
        B, T, C = x.shape
        qkv = F.linear(x, self.qkv.weight).view(B, T, 3, self.heads, C // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, T, D), no copy
        qk = apply_rotary(qkv[:2], *rope) if rope is not None else qkv[:2]  # (2, B, H, T, D)
        k, v = cache.update(self.layer, qk[1], qkv[2])  # (B, H, L + T, D) each
        q = qk[0] if qk.dtype == k.dtype else qk[0].to(k.dtype)  # an fp32 cache, bf16 weights
        # No mask: either one new token (sees all) or a first chunk (plain causal).
        y = attention(q, k, v, mask is None and T > 1, 0.0, mask)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C).to(x.dtype)  # (B, T, C): heads side by side
        return F.linear(y, self.proj.weight)  # (B, T, C)




class MLP(nn.Module):
    """Position-wise feed-forward: widen by mlp_ratio, GELU, project back."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = config.mlp_ratio * config.dim
        self.fc = nn.Linear(config.dim, width, bias=False)
        self.proj = nn.Linear(width, config.dim, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc(x))  # (B, T, mlp_ratio * C)
        return self.dropout(self.proj(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig, causal: bool, layer: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.dim)
        self.attn = SelfAttention(config, causal, layer)
        self.ln2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None = None,
    ):
        x = x + self.attn(self.ln1(x), rope, mask)  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)
    def step(self, x: torch.Tensor, rope, cache: KVCache, mask: torch.Tensor | None):
        """`forward` with a KV cache, for inference, in as few PyTorch calls as it can."""
        ln1, ln2, mlp = self.ln1, self.ln2, self.mlp
        h = F.layer_norm(x, ln1.normalized_shape, ln1.weight, ln1.bias, ln1.eps)  # (B, T, C)
        x = x + self.attn.step(h, rope, cache, mask)  # (B, T, C)
        h = F.layer_norm(x, ln2.normalized_shape, ln2.weight, ln2.bias, ln2.eps)
        h = F.gelu(F.linear(h, mlp.fc.weight))  # (B, T, mlp_ratio * C)
        return x + F.linear(h, mlp.proj.weight)  # (B, T, C)




class MLMHead(nn.Module):
    """BERT's masked-LM head: dense → GELU → LayerNorm → decoder (tied) + bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.dim, config.dim)
        self.ln = nn.LayerNorm(config.dim)
        self.decoder = nn.Linear(config.dim, config.vocab_size)  # weight tied by the model

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.ln(F.gelu(self.dense(hidden)))  # (B, T, C)
        return self.decoder(h)  # (B, T, V)


class Transformer(LanguageModel):
    """Token embedding (+ learned positions) → blocks → final LayerNorm → head.

    causal: each position sees itself and the past, the head predicts the next token.
    masked: every position sees the whole sequence, the MLM head predicts each token.
    """

    left_padding = True  # the KV cache masks a left-padded batch's pads

    @property
    def max_positions(self) -> int:
        return self.config.context  # positions (learned or rotary tables) and cache

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        causal = config.objective == "causal"
        C, V = config.dim, config.vocab_size
        self.tok_emb = nn.Embedding(V, C)
        # Rotary positions live in the attention, learned ones are added to the input.
        self.pos_emb = nn.Embedding(config.context, C) if config.positions == "learned" else None
        if config.positions == "rotary":
            cos, sin = rotary_tables(C // config.heads, config.context)
            # Not persistent: derived from the config, so they stay out of the weights file.
            self.register_buffer("rope_cos", cos, persistent=False)  # (context, D)
            self.register_buffer("rope_sin", sin, persistent=False)  # (context, D)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, causal, i) for i in range(config.layers))
        self.ln_f = nn.LayerNorm(C)
        if causal:
            self.lm_head = nn.Linear(C, V, bias=False)
            head_weight = self.lm_head
        else:
            self.lm_head = MLMHead(config)
            head_weight = self.lm_head.decoder
        self.apply(self._init_weights)
        if config.tie_embeddings:
            # One tensor for both: safetensors' save_model/load_model keep it shared.
            head_weight.weight = self.tok_emb.weight
        # GPT-2: scale the projections that write into the residual stream by
        # 1/sqrt(2 * layers), so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def initial_state(
        self, batch_size: int, *, capacity: int | None = None,
        left_pad: torch.Tensor | None = None,
    ) -> KVCache:
        """An empty KV cache for `batch_size` rows. `capacity`: positions to allocate
        at first (it grows up to the context); `left_pad` (B,): pad positions at the
        start of each row of a left-padded batch (see models/state.py)."""
        if not self.blocks[0].attn.causal:
            self.refuse_state()
        c = self.config
        device = self.tok_emb.weight.device
        # On a CPU the cache, and so the attention, stays fp32 under bf16 weights: PyTorch's
        # CPU attention kernel is 3-5x slower in bf16 (one query over 100 keys, 6 heads
        # of 64: 36 vs 11 us at batch 1, 1,079 vs 191 us at batch 32; 2-core EPYC
        # without AMX, torch 2.13). Elsewhere it follows the keys' dtype.
        dtype = torch.float32 if device.type == "cpu" else None
        return KVCache(
            c.layers, batch_size, c.heads, c.dim // c.heads, c.context, device, capacity,
            left_pad, dtype,
        )

    def encode(
        self, idx: torch.Tensor, state: KVCache | None = None, *, real: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token ids (B, T) → final hidden states (B, T, C), after the last LayerNorm.
        With a KV cache, the tokens continue the cached ones and are appended to it.
        `real` (B, T) bool, False at padding: no query attends to a padding key (what a
        bidirectional model needs for padded batches; each row must start real)."""
        if state is not None:
            if real is not None:
                raise BadInput("a padding mask cannot be combined with a KV cache",
                               "use the cache's left_pad")
            return self._encode_cached(idx, state)
        self.check_length(idx)
        T = idx.size(1)
        mask = None
        if real is not None:
            mask = real[:, None, None, :]  # (B, 1, 1, T): keys each query may see
            if self.blocks[0].attn.causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb.weight[:T]  # (B, T, C) + (T, C)
        rope = (self.rope_cos[:T], self.rope_sin[:T]) if self.pos_emb is None else None
        x = self.drop(x)  # (B, T, C)
        for block in self.blocks:
            x = block(x, rope, mask)  # (B, T, C)
        return self.ln_f(x)  # (B, T, C)

    def _encode_cached(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """`encode` after the cache's positions: positions start at cache.length (per
        row minus its left padding), attention sees the cached keys too."""
        if not self.blocks[0].attn.causal:
            self.refuse_state()
        if not isinstance(cache, KVCache):
            raise BadInput(f"a Transformer carries a KVCache, not {type(cache).__name__}")
        if self.training:
            raise BadInput("a KV cache is for inference", "call model.eval() first")
        rows, T = idx.shape
        if rows != cache.batch_size:
            raise BadInput(f"{rows} rows of tokens for a state of {cache.batch_size} rows")
        if cache.room() < T:
            raise BadInput(
                f"{T} more tokens do not fit: the cache holds {cache.length} of the "
                f"model's context of {self.config.context}",
                "start a new state from the most recent tokens",
            )
        start = cache.length
        pos = cache.positions(T)  # (B, T), or None: start ... start + T - 1 for all rows
        x = F.embedding(idx, self.tok_emb.weight)  # (B, T, C)
        if self.pos_emb is not None:
            # (T, C) shared by every row, or (B, T, C) per row
            table = self.pos_emb.weight[start : start + T] if pos is None else self.pos_emb(pos)
            x = x + table  # (B, T, C)
            rope = None
        elif pos is None:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])  # (T, D)
        else:  # per row: (B, 1, T, D), broadcast over the heads
            rope = (self.rope_cos[pos][:, None], self.rope_sin[pos][:, None])
        if rope is not None and rope[0].dtype != self.tok_emb.weight.dtype:
            rope = tuple(t.to(self.tok_emb.weight.dtype) for t in rope)  # bf16 weights
        mask = cache.attention_mask(T)  # built once for every block
        for block in self.blocks:
            x = block.step(x, rope, cache, mask)  # (B, T, C)
        cache.advance(T)
        ln = self.ln_f
        return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)  # (B, T, C)

    def layer_groups(self) -> list[list[nn.Module]]:
        """[embeddings], [block 0], ..., [block L-1], [final LayerNorm + head]."""
        bottom = [self.tok_emb] + ([self.pos_emb] if self.pos_emb is not None else [])
        top = [self.ln_f, self.lm_head]  # a tied decoder weight belongs to `bottom`
        return [bottom, *([block] for block in self.blocks), top]
