"""Model speed: lmtool's transformer against Hugging Face transformers, same config, same loop.

Not a test. Every figure is measured in this one run: the models take turns (round
robin, a few steps each), so a busy neighbour slows all of them alike and the ratios
stay meaningful. Needs `transformers` (pip install -e '.[bench]'); without it only
lmtool's rows are printed.

    python benchmarks/pretrain.py                          # both configs, causal + masked
    python benchmarks/pretrain.py --configs baby --rounds 3 --steps 5   # a quick look
    python benchmarks/pretrain.py --data ../shared/corpora/tinyshakespeare/input.txt

Rows: lmtool and HF in fp32; lmtool and HF under the precision lmtool picks by default
on this device (bf16 autocast on CPUs with native bf16); lmtool with fused AdamW.
Ratios are tokens/s against HF fp32 of the same objective and config. MFU is model
FLOPs/s (6N + 12LCT per token, the PaLM estimate, from the config, so identical for
both libraries) against a matmul peak measured here in the row's precision.
With --data, batches are drawn from that text (char vocabulary) instead of random ids
and the loss column is comparable across rows (same batches, same seed).
"""

from __future__ import annotations

import os
import sys

# Run as a script, Python puts benchmarks/ first on sys.path, where benchmarks/tokenize.py
# would shadow the standard `tokenize` module (imported by `inspect`, `dataclasses`...):
# put the repository root there instead, before anything else is imported.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lmtool.device import autocast, resolve_device, resolve_precision  # noqa: E402
from lmtool.models import ModelConfig, build_model  # noqa: E402
from lmtool.training.objectives import Batch, make_objective  # noqa: E402

# name: (layers, heads, dim, context, batch); vocabulary from --vocab or the data.
CONFIGS = {
    "baby": (4, 4, 128, 64, 12),  # nanoGPT's CPU "baby" shakespeare_char run
    "shakespeare": (6, 6, 384, 256, 12),  # nanoGPT's train_shakespeare_char
}


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 1024, secs: float = 1.0):
    """Best GFLOP/s of an n x n matrix product in `dtype`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = 0.0
    deadline = time.perf_counter() + secs
    while time.perf_counter() < deadline:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_step(layers: int, dim: int, context: int, batch: int, vocab: int) -> float:
    """Training FLOPs of one step: (6N + 12 L C T) per token, N = blocks + output matmul."""
    n = 12 * layers * dim * dim + dim * vocab
    return (6 * n + 12 * layers * dim * context) * context * batch


class Batches:
    """Deterministic batches: random ids, or windows of a char-encoded text."""

    def __init__(self, objective: str, vocab: int, context: int, batch: int, data=None):
        self.objective, self.vocab, self.context, self.batch = objective, vocab, context, batch
        self.data = data  # 1-D LongTensor of char ids, or None
        self.gen = torch.Generator().manual_seed(1337)

    def next(self, device: torch.device):
        B, T, V = self.batch, self.context, self.vocab
        if self.data is None:
            seq = torch.randint(0, V, (B, T + 1), generator=self.gen)  # (B, T+1)
        else:
            starts = torch.randint(0, len(self.data) - T - 1, (B,), generator=self.gen)
            seq = torch.stack([self.data[s : s + T + 1] for s in starts.tolist()])  # (B, T+1)
        if self.objective == "causal":
            return seq[:, :-1].to(device), seq[:, 1:].to(device)  # inputs, next tokens
        # Masked: 15% of positions become the last id (our stand-in [MASK]); only they
        # carry a label.
        x, labels = seq[:, :-1].clone(), seq[:, :-1].clone()  # (B, T)
        chosen = torch.rand(B, T, generator=self.gen) < 0.15
        x[chosen] = V - 1
        labels[~chosen] = -100
        return x.to(device), labels.to(device)


@dataclass
class Row:
    name: str
    model: torch.nn.Module
    loss: object  # model, Batch -> mean loss over the scored tokens
    optimizer: torch.optim.Optimizer
    batches: Batches
    dtype: torch.dtype | None
    times: list
    losses: list


def lmtool_model(objective, layers, heads, dim, context, vocab):
    cfg = ModelConfig(
        objective=objective, layers=layers, heads=heads, dim=dim, context=context,
        vocab_size=vocab, dropout=0.0, positions="learned",  # as GPT-2 and BERT
    )
    return build_model(cfg)


def lmtool_loss(model) -> object:
    """lmtool's own training loss: what `lmtool pretrain` runs (the masked objective
    runs the MLM head on the scored positions only)."""
    loss = make_objective(model.config).loss
    return lambda model, batch: loss(model, batch)[0]


def hf_loss(model, batch: Batch) -> torch.Tensor:
    """The plain loop's loss over every position's logits (-100: no target)."""
    logits = model(input_ids=batch.inputs).logits  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten())


def hf_model(objective, layers, heads, dim, context, vocab):
    import transformers

    if objective == "causal":
        cfg = transformers.GPT2Config(
            vocab_size=vocab, n_positions=context, n_embd=dim, n_layer=layers, n_head=heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.BertConfig(
        vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * dim, max_position_embeddings=context,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForMaskedLM(cfg)


def step(row: Row, device: torch.device) -> float:
    """One training step; returns its wall time in seconds."""
    x, y = row.batches.next(device)
    sync(device)
    t0 = time.perf_counter()
    with autocast(device, row.dtype):
        loss = row.loss(row.model, Batch(x, y))
    loss.backward()
    row.optimizer.step()
    row.optimizer.zero_grad(set_to_none=True)
    sync(device)
    row.losses.append(loss.item())
    return time.perf_counter() - t0


@torch.no_grad()
def val_loss(row: Row, batches: Batches, device: torch.device, count: int = 20) -> float:
    """Mean loss over `count` fixed validation batches, in the row's own precision."""
    row.model.eval()
    losses = []
    for _ in range(count):
        x, y = batches.next(device)
        with autocast(device, row.dtype):
            losses.append(row.loss(row.model, Batch(x, y)).item())
    row.model.train()
    return statistics.mean(losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="baby,shakespeare")
    ap.add_argument("--objectives", default="causal,masked")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--vocab", type=int, default=65, help="vocabulary without --data")
    ap.add_argument("--data", type=Path, help="a text file: char-level batches from it")
    ap.add_argument("--rounds", type=int, default=5, help="round-robin rounds")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--no-hf", action="store_true", help="lmtool rows only")
    ap.add_argument("--no-bf16", action="store_true", help="skip the reduced-precision rows")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused AdamW rows")
    args = ap.parse_args()

    device = resolve_device(args.device)
    default_dtype = resolve_precision("auto", device)
    try:
        import transformers  # noqa: F401

        have_hf = not args.no_hf
    except ImportError:
        have_hf = False
        print("transformers is not installed: lmtool rows only", file=sys.stderr)

    data, vocab = None, args.vocab
    if args.data:
        text = args.data.read_text(encoding="utf-8")
        chars = sorted(set(text))
        lookup = {c: i for i, c in enumerate(chars)}
        ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
        split = int(0.9 * len(ids))  # nanoGPT's split: first 90% train, last 10% validation
        data = (ids[:split], ids[split:])
        vocab = len(chars) + 1  # + one id for the masked objective's [MASK]

    low = default_dtype or torch.bfloat16
    peaks = {d: max(matmul_peak(d, device, n) for n in (1024, 2048)) for d in (torch.float32, low)}
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"lmtool default precision {dtype_name(default_dtype)}; matmul peak "
        + ", ".join(f"{dtype_name(d)} {g:.0f} GFLOP/s" for d, g in peaks.items())
    )

    for cname in args.configs.split(","):
        layers, heads, dim, context, batch = CONFIGS[cname]
        for objective in args.objectives.split(","):
            run_one(args, device, default_dtype, have_hf, peaks, data, vocab,
                    cname, objective, layers, heads, dim, context, batch)


def run_one(args, device, default_dtype, have_hf, peaks, data, vocab,
            cname, objective, layers, heads, dim, context, batch) -> None:
    shape = (objective, layers, heads, dim, context, vocab)
    hf_name = "HF GPT2LMHeadModel" if objective == "causal" else "HF BertForMaskedLM"
    specs = [("lmtool", "lmtool", None, False)]
    if have_hf:
        specs.append((hf_name, "hf", None, False))
    if not args.no_bf16:
        low = default_dtype or torch.bfloat16
        specs.append((f"lmtool {dtype_name(low)}", "lmtool", low, False))
        if have_hf:
            specs.append((f"{hf_name} {dtype_name(low)}", "hf", low, False))
    if not args.no_fused:
        specs.append(("lmtool fused AdamW", "lmtool", None, True))
    if default_dtype is not None and not args.no_bf16 and not args.no_fused:
        specs.append((f"lmtool {dtype_name(default_dtype)} fused AdamW", "lmtool",
                      default_dtype, True))

    rows = []
    for name, lib, dtype, fused in specs:
        torch.manual_seed(0)
        model = (lmtool_model if lib == "lmtool" else hf_model)(*shape).to(device).train()
        loss = lmtool_loss(model) if lib == "lmtool" else hf_loss
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=fused or None)
        batches = Batches(objective, vocab, context, batch, data and data[0])
        rows.append(Row(name, model, loss, opt, batches, dtype, [], []))

    for row in rows:
        for _ in range(args.warmup):
            step(row, device)
    for _ in range(args.rounds):
        for row in rows:
            row.times.extend(step(row, device) for _ in range(args.steps))

    flops = flops_per_step(layers, dim, context, batch, vocab)
    tokens = batch * context
    base = next((r for r in rows if r.name == hf_name), rows[0])
    base_ms = statistics.median(base.times) * 1e3
    print(f"\n{cname} ({layers} layers, {heads} heads, width {dim}, context {context}, "
          f"batch {batch}, vocab {vocab}), {objective}: "
          f"{args.rounds} x {args.steps} timed steps per row, ratios vs {base.name}")
    loss_name = "val loss" if data else "loss"
    print(f"{'':38} {'ms/step':>8} {'tokens/s':>9} {'ratio':>6} {'MFU':>5} {loss_name:>8}")
    for r in rows:
        ms = statistics.median(r.times) * 1e3
        peak = peaks.get(r.dtype or torch.float32, peaks[torch.float32])
        mfu = flops / (ms / 1e3) / (peak * 1e9)
        if data:
            loss = val_loss(r, Batches(objective, vocab, context, batch, data[1]), device)
        else:  # random ids: the last train losses only show that nothing diverged
            loss = statistics.mean(r.losses[-args.steps :])
        print(f"{r.name:38} {ms:8.1f} {tokens / ms * 1e3:9.0f} {base_ms / ms:6.2f} "
              f"{mfu:5.0%} {loss:8.4f}")


def dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16",
            torch.float16: "fp16"}[dtype]


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
