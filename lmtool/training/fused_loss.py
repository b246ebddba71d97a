"""The output layer and its cross-entropy in one step, without the (N, V) logits.

`F.cross_entropy(F.linear(hidden, weight, bias), targets)` builds the (N, V) logits, their
log-probabilities, a zero-filled gradient of the same size and the gradient of the
logits: four N x V matrices (at batch 64, BPTT 70 and 29,080 words: 521 MB each in
fp32), freshly allocated every step and read and written about ten times. On a CPU that
took 40% of an AWD-LSTM training step beside the three matrix products that cannot be
avoided. `linear_cross_entropy` computes the same loss and gradients a block of rows at
a time, in two reused (rows, V) buffers (three under autocast):

1. logits = hidden[rows] @ weight.T + bias                      (the forward product)
2. log-probabilities = log_softmax(logits); each row's loss is -logp[target], or with
   label smoothing e (as F.cross_entropy's: the target is (1 - e) onehot + e / V)
   -(1 - e) logp[target] - (e / V) sum(logp)
3. G = softmax(logits) - (1 - e) onehot(target) - e / V: the gradient of each row's
   loss by its logits
4. grad hidden[rows] = G @ weight, grad weight += G.T @ hidden[rows], grad bias += sum(G)

All gradients are made in the forward pass (a scalar loss's backward only scales them
by its incoming gradient / N), so the block of logits is used while it is still in the
cache and never kept. The result is F.cross_entropy's to rounding (sums in another order;
tests/test_fused_loss.py checks loss and gradients). Under autocast the products run in
the autocast dtype and the softmax in fp32, as F.linear under autocast followed by
`.float()` and F.cross_entropy would.
"""

from __future__ import annotations

import torch

# Rows per block. Each block's three products have the block's rows as one dimension,
# so fewer than a few hundred rows make them slow; more make the buffers larger than any
# cache for nothing. On a 2-core Zen 4 at 29,080 words, 4,480 rows: 512 rows per block
# was the fastest (fp32 1.16 s, bf16 0.72 s; 256 rows 1.18 / 0.81, all 4,480 at once
# 1.41 / 1.05; F.cross_entropy 1.59 / 1.38). A huge vocabulary gets fewer rows, so that
# a block's fp32 logits stay under BLOCK_BYTES.
BLOCK_ROWS = 512
BLOCK_BYTES = 64 * 2**20


def pays(rows: int, vocab: int, label_smoothing: float = 0.0) -> bool:
    """Whether blocks save anything: the (rows, vocab) fp32 logits would not fit in one
    block. A small vocabulary's logits are cheap to build whole, and F.cross_entropy
    then does the work in fewer, larger kernels; but not with label smoothing, which
    makes F.cross_entropy pass over them twice more (forward+backward, 1 thread: blocks
    took 0.57-0.98 of its time in fp32 at rows x vocab from 256 x 8000 to 4096 x 500;
    under bf16 autocast 0.59-0.98 from 2048 to 512 rows of 8000, 1.10 at 256 rows)."""
    return label_smoothing > 0 or rows * vocab * 4 > BLOCK_BYTES


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy of softmax(hidden @ weight.T + bias) against `targets`:
    hidden (N, C), weight (V, C), bias (V,) or None, targets (N,) int64 in [0, V), every
    one scored (no ignore index: leave such rows out first), smoothed as
    F.cross_entropy's `label_smoothing`. A scalar fp32 loss, differentiable in the first
    three."""
    inputs = (hidden, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, label_smoothing)
    wanted = (False, False, False)
    return _blocks(hidden, weight, bias, targets, wanted, label_smoothing)[0] / hidden.size(0)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing):
        loss, *grads = _blocks(hidden, weight, bias, targets, ctx.needs_input_grad[:3],
                               label_smoothing)
        ctx.save_for_backward(*grads)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.count = hidden.size(0)
        return loss / ctx.count

    @staticmethod
    def backward(ctx, grad_loss):
        scale = grad_loss / ctx.count  # d(mean)/d(sum), times the incoming gradient
        out = [None if grad is None else (grad * scale).to(dtype)
               for grad, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True)]
        return (*out, None, None)


def _mm_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype F.linear would multiply in: the autocast dtype if autocast is on."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _blocks(hidden, weight, bias, targets, wanted: tuple[bool, bool, bool],
            label_smoothing: float = 0.0):
    """(summed loss, and for each of hidden, weight, bias its gradient of the summed loss
    in fp32, or None where `wanted` says no): the steps of the module docstring."""
    keep = 1.0 - label_smoothing  # the target's share of the smoothed distribution
    spread = label_smoothing / weight.size(0)  # every class's share, e / V
    dtype = _mm_dtype(hidden, weight)
    N, C = hidden.shape
    V = weight.size(0)
    fp32 = torch.float32
    with torch.autocast(hidden.device.type, enabled=False):  # every cast below is explicit
        w = weight.to(dtype)  # (V, C)
        b = bias.to(dtype) if bias is not None else None  # (V,)
        rows = max(1, min(N, BLOCK_ROWS, BLOCK_BYTES // (4 * V)))
        logits = hidden.new_empty(rows, V, dtype=dtype)  # the products' dtype
        # fp32 logits: the logits themselves in fp32, else a second buffer
        work = logits if dtype == fp32 else hidden.new_empty(rows, V, dtype=fp32)
        logp = hidden.new_empty(rows, V, dtype=fp32)
        loss = hidden.new_zeros((), dtype=fp32)
        grad_hidden = hidden.new_empty(N, C, dtype=fp32) if wanted[0] else None
        grad_weight = weight.new_zeros(V, C, dtype=fp32) if wanted[1] else None
        grad_bias = bias.new_zeros(V, dtype=fp32) if bias is not None and wanted[2] else None
        for start in range(0, N, rows):
            end = min(start + rows, N)
            x = hidden[start:end].to(dtype)  # (n, C)
            t = targets[start:end, None]  # (n, 1)
            # 1. the logits, in the products' dtype, then in fp32
            z = logits[: end - start]  # (n, V)
            if b is not None:
                torch.addmm(b, x, w.t(), out=z)
            else:
                torch.mm(x, w.t(), out=z)
            z32 = work[: end - start]  # (n, V)
            if z32.data_ptr() != z.data_ptr():
                z32.copy_(z)
            # 2. log-probabilities and the loss. One kernel into a reused buffer: torch's
            # log_softmax / logsumexp would allocate and fill (n, V) temporaries, and the
            # kernel that writes into `out` is the same one they call.
            lp = torch._log_softmax(z32, 1, False, out=logp[: end - start])  # (n, V)
            loss -= keep * lp.gather(1, t).sum()
            if spread:
                loss -= spread * lp.sum()
            if not any(wanted):
                continue
            # 3. G = softmax - (1 - e) onehot(target) - e / V, over the fp32 logits (no
            # longer needed)
            g = torch.exp(lp, out=z32)  # (n, V)
            if spread:
                g -= spread
            g.scatter_add_(1, t, g.new_full(t.shape, -keep))
            if grad_bias is not None:
                grad_bias += g.sum(0)  # (V,)
            # 4. the two products of the backward pass, in the products' dtype
            if dtype == fp32:
                if grad_hidden is not None:
                    torch.mm(g, w, out=grad_hidden[start:end])  # (n, C)
                if grad_weight is not None:
                    grad_weight.addmm_(g.t(), x)  # (V, C)
            else:
                g = z.copy_(g)  # (n, V) in the products' dtype
                if grad_hidden is not None:
                    grad_hidden[start:end] = torch.mm(g, w)  # (n, C)
                if grad_weight is not None:
                    grad_weight += torch.mm(g.t(), x)  # (V, C), summed over blocks in fp32
    return loss, grad_hidden, grad_weight, grad_bias
