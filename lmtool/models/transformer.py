"""The transformer: a GPT-style decoder (causal) or a BERT-style encoder (masked).

Read top to bottom: rotary positions → norms → attention → MLP → block → heads → model.
One backbone serves both objectives; only the attention's causality and the head differ.
Its config's family fields (models/config.py) also make it GPT-2, Llama or BERT, so
published checkpoints load into this one class (lmtool/hub maps their tensor names).
Shapes: B batch, T time (tokens), C width (config.dim), H heads, D = C / H head size,
V vocabulary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmtool.errors import BadInput
from lmtool.models.attention_dtype import bf16_attention_pays
from lmtool.models.base import LanguageModel
from lmtool.models.config import ModelConfig
from lmtool.models.state import KVCache
from lmtool.models.step_linear import step_linear

# Blocks per layer group are merged so that a deep model has at most this many groups of
# blocks: with one group per block, a 30-layer checkpoint (SmolLM2) would get a 33-stage
# unfreezing plan and its bottom block a rate 2.6^-31 of the top's, i.e. never trained.
# Six keeps every preset up to `small` (and a 6-layer BERT) at one block per group.
MAX_BLOCK_GROUPS = 6
# oneDNN's GELU, which F.gelu runs on a CPU for contiguous fp32 or bf16 input, costs a
# fixed ~16 us a call; ATen's own kernel takes 2-7 us on a decoding step's 512-4,096
# values and falls behind oneDNN's only past ~16 k (2-core Xeon with AMX, torch 2.13;
# the last table of `python benchmarks/step_linear.py`). Up to this size a decoding
# step skips oneDNN.
NATIVE_GELU_MAX = 8192


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


def make_norm(config: ModelConfig) -> nn.Module:
    """The config's norm over the width: LayerNorm (weight + bias) or RMSNorm (weight)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.dim, eps=config.norm_eps)
    return nn.LayerNorm(config.dim, eps=config.norm_eps)


def norm(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """`module(x)` for a `make_norm` module (or an Identity), without the module call."""
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
    if isinstance(module, nn.RMSNorm):
        return F.rms_norm(x, module.normalized_shape, module.weight, module.eps)
    return x  # nn.Identity: a post-norm model's missing final norm


def gelu_approximation(config: ModelConfig) -> str:
    """F.gelu's `approximate` for the config: "none" (erf) or "tanh" (GPT-2's gelu_new)."""
    return "tanh" if config.gelu == "tanh" else "none"


def gelu_small(h: torch.Tensor, approximate: str) -> torch.Tensor:
    """F.gelu for a decoding step's few rows: on a CPU, ATen's kernel rather than
    oneDNN's, the same function without oneDNN's fixed cost (see NATIVE_GELU_MAX)."""
    if h.device.type != "cpu" or h.numel() > NATIVE_GELU_MAX or not torch.backends.mkldnn.enabled:
        return F.gelu(h, approximate=approximate)
    # A process-wide switch, so a thread that runs a oneDNN op in this instant takes
    # ATen's kernel for it: the same maths, only a different speed.
    torch.backends.mkldnn.enabled = False
    try:
        return F.gelu(h, approximate=approximate)
    finally:
        torch.backends.mkldnn.enabled = True


def attention(q, k, v, causal: bool, dropout: float, mask: torch.Tensor | None = None):
    """softmax(q k^T / sqrt(D)) v over (B, H, T, D) tensors, via PyTorch's fused kernels.

    q may have fewer positions than k and v (a KV cache: T new queries, L + T keys);
    `mask` (bool, True = may attend) then says which keys each query sees, and `causal`
    must be False (SDPA's is_causal aligns top-left, see models/state.py). k and v may
    have fewer heads than q (grouped-query attention, (B, KV, L, D)): each key/value
    head serves H / KV consecutive query heads.

    On the CPU under bf16 autocast the attention itself runs in fp32 unless bf16 was
    measured faster at this shape here (models/attention_dtype.py): PyTorch's
    CPU flash-attention backward is several times slower in bf16 than in fp32 at small
    shapes on some CPUs, faster at large ones on others. The upcast costs three copies.
    """
    # Grouped-query: query heads 0..H/KV-1 share kv head 0, ...; SDPA reads the shared
    # heads in place (enable_gqa) where repeating them would copy the cache every step.
    gqa = k.size(1) != q.size(1)
    if (q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu")
            and not bf16_attention_pays(q, k, causal, mask)):
        with torch.autocast("cpu", enabled=False):  # else autocast casts back to bf16
            return F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout,
                is_causal=causal, enable_gqa=gqa,
            )  # (B, H, T, D) in fp32; the next linear casts it back to bf16
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, enable_gqa=gqa
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

    One fused linear makes q, k and v (one matmul instead of three): H query heads, then
    KV key heads and KV value heads (KV = H unless grouped-query), each D wide. Causal
    attention passes is_causal=True and no mask tensor, so PyTorch can pick its flash
    kernels. With a KV cache, this call's k and v (after the rotary step) are appended
    to the cached ones and the queries attend over all of them: one new token with no
    mask (it may see everything), a chunk with the cache's bottom-right causal mask.
    """

    def __init__(self, config: ModelConfig, causal: bool, layer: int = 0):
        super().__init__()
        self.heads = config.heads
        self.kv_heads = config.n_kv_heads
        self.causal = causal
        self.layer = layer  # which of the KV cache's blocks is ours
        self.dropout = config.dropout
        D = config.dim // config.heads
        # bias=False by default: a little faster and no worse (nanoGPT's finding); norms
        # keep theirs. GPT-2 and BERT checkpoints have biases (config.bias).
        self.qkv = nn.Linear(config.dim, (self.heads + 2 * self.kv_heads) * D, bias=config.bias)
        self.proj = nn.Linear(config.dim, config.dim, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # Set by inference/attention.py for one forward: the weights are then computed
        # explicitly and kept in `weights` (B, H, T, T); training never pays for it.
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def _split(self, qkv: torch.Tensor, B: int, T: int, rope):
        """The fused projection (B, T, (H + 2KV) D) → q (B, H, T, D), k and v (B, KV, T, D),
        q and k rotated when `rope` is given."""
        H, KV = self.heads, self.kv_heads
        qkv = qkv.view(B, T, H + 2 * KV, -1).transpose(1, 2)  # (B, H + 2KV, T, D), no copy
        if rope is not None:
            qk = apply_rotary(qkv[:, : H + KV], *rope)  # (B, H + KV, T, D), q and k in one go
            return qk[:, :H], qk[:, H:], qkv[:, H + KV :]
        return qkv.split([H, KV, KV], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None = None,
    ):
        B, T, C = x.shape
        q, k, v = self._split(self.qkv(x), B, T, rope)  # (B, H, T, D), 2 x (B, KV, T, D)
        dropout = self.dropout if self.training else 0.0
        # A padding mask (from encode's `real`) already holds the causal rule.
        if self.keep_weights:
            if k.size(1) != q.size(1):  # grouped-query: each kv head for its query heads
                k, v = (t.repeat_interleave(q.size(1) // k.size(1), dim=1) for t in (k, v))
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
        q, k, v = self._split(step_linear(self.qkv)(x), B, T, rope)
        k, v = cache.update(self.layer, k, v)  # (B, KV, L + T, D) each
        q = q if q.dtype == k.dtype else q.to(k.dtype)  # an fp32 cache, bf16 weights
        # No mask: either one new token (sees all) or a first chunk (plain causal).
        y = attention(q, k, v, mask is None and T > 1, 0.0, mask)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C).to(x.dtype)  # (B, T, C): heads side by side
        return step_linear(self.proj)(y)  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward. "gelu": widen, GELU, project back. "swiglu" (Llama):
    one fused linear makes gate and up side by side, silu(gate) * up, project back."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = config.inner_width
        self.swiglu = config.mlp == "swiglu"
        self.fc = nn.Linear(config.dim, 2 * width if self.swiglu else width, bias=config.bias)
        self.proj = nn.Linear(width, config.dim, bias=config.bias)
        self.approximate = gelu_approximation(config)
        self.dropout = nn.Dropout(config.dropout)

    def inner(self, h: torch.Tensor, gelu: Callable[..., torch.Tensor] = F.gelu) -> torch.Tensor:
        """The activation on fc's output (B, T, width or 2 * width) → (B, T, width)."""
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)  # (B, T, width) each
            return F.silu(gate) * up
        return gelu(h, approximate=self.approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(self.fc(x))  # (B, T, width)
        return self.dropout(self.proj(h))  # (B, T, C)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` without module calls or dropout (inference)."""
        h = self.inner(step_linear(self.fc)(x), gelu_small)  # (B, T, width)
        return step_linear(self.proj)(h)  # (B, T, C)


class Block(nn.Module):
    """Residual block. Pre-norm (lmtool, GPT-2, Llama): x + attn(ln1(x)), then
    x + mlp(ln2(x)). Post-norm (BERT): ln1(x + attn(x)), then ln2(x + mlp(x))."""

    def __init__(self, config: ModelConfig, causal: bool, layer: int = 0):
        super().__init__()
        self.post_norm = config.norm_place == "post"
        self.ln1 = make_norm(config)
        self.attn = SelfAttention(config, causal, layer)
        self.ln2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None = None,
    ):
        if self.post_norm:
            x = self.ln1(x + self.attn(x, rope, mask))  # (B, T, C)
            return self.ln2(x + self.mlp(x))  # (B, T, C)
        x = x + self.attn(self.ln1(x), rope, mask)  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)

    def step(self, x: torch.Tensor, rope, cache: KVCache, mask: torch.Tensor | None):
        """`forward` with a KV cache, for inference, in as few PyTorch calls as it can."""
        if self.post_norm:
            x = norm(x + self.attn.step(x, rope, cache, mask), self.ln1)  # (B, T, C)
            return norm(x + self.mlp.step(x), self.ln2)  # (B, T, C)
        x = x + self.attn.step(norm(x, self.ln1), rope, cache, mask)  # (B, T, C)
        return x + self.mlp.step(norm(x, self.ln2))  # (B, T, C)


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense → GELU → norm → decoder (tied) + bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.dim, config.dim)
        self.approximate = gelu_approximation(config)
        self.ln = make_norm(config)
        self.decoder = nn.Linear(config.dim, config.vocab_size)  # weight tied by the model

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.ln(F.gelu(self.dense(hidden), approximate=self.approximate))  # (B, T, C)
        return self.decoder(h)  # (B, T, V)


class Transformer(LanguageModel):
    """Token embedding (+ learned positions, + segment 0, → norm) → blocks → final norm
    (pre-norm only) → head.

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
        # BERT: a segment embedding (row 0 for a single text) and a norm on the sum.
        self.type_emb = nn.Embedding(config.token_types, C) if config.token_types else None
        self.emb_norm = make_norm(config) if config.embed_norm else nn.Identity()
        if config.positions == "rotary":
            cos, sin = rotary_tables(C // config.heads, config.context, config.rope_theta)
            # Not persistent: derived from the config, so they stay out of the weights file.
            self.register_buffer("rope_cos", cos, persistent=False)  # (context, D)
            self.register_buffer("rope_sin", sin, persistent=False)  # (context, D)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, causal, i) for i in range(config.layers))
        # A post-norm block's output is already normed: no final norm.
        self.ln_f = make_norm(config) if config.norm_place == "pre" else nn.Identity()
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
            c.layers, batch_size, c.n_kv_heads, c.dim // c.heads, c.context, device, capacity,
            left_pad, dtype,
        )

    def encode(
        self, idx: torch.Tensor, state: KVCache | None = None, *, real: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token ids (B, T) → final hidden states (B, T, C), after the last norm.
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
        if self.type_emb is not None:
            x = x + self.type_emb.weight[0]  # (B, T, C) + (C,): segment 0
        rope = (self.rope_cos[:T], self.rope_sin[:T]) if self.pos_emb is None else None
        x = self.drop(self.emb_norm(x))  # (B, T, C)
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
        if self.type_emb is not None:
            x = x + self.type_emb.weight[0]  # (B, T, C): segment 0
        x = norm(x, self.emb_norm)  # (B, T, C)
        if rope is not None and rope[0].dtype != self.tok_emb.weight.dtype:
            rope = tuple(t.to(self.tok_emb.weight.dtype) for t in rope)  # bf16 weights
        mask = cache.attention_mask(T)  # built once for every block
        for block in self.blocks:
            x = block.step(x, rope, cache, mask)  # (B, T, C)
        cache.advance(T)
        return norm(x, self.ln_f)  # (B, T, C)

    def layer_groups(self) -> list[list[nn.Module]]:
        """[embeddings], [block 0], ..., [block L-1], [final norm + head]; past
        MAX_BLOCK_GROUPS blocks, contiguous runs of blocks share a group (12 blocks: 6
        groups of 2; 30: 6 of 5)."""
        extra = (self.pos_emb, self.type_emb, self.emb_norm)
        bottom = [self.tok_emb, *(m for m in extra if m is not None)]
        top = [self.ln_f, self.lm_head]  # a tied decoder weight belongs to `bottom`
        blocks = list(self.blocks)
        n = min(len(blocks), MAX_BLOCK_GROUPS)
        bounds = [round(i * len(blocks) / n) for i in range(n + 1)]  # as even as can be
        return [bottom, *(blocks[a:b] for a, b in itertools.pairwise(bounds)), top]
