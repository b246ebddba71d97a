"""Linear layers of a decoding step: F.linear against lmtool's two copies of a weight.

    python benchmarks/step_linear.py                  # torch's threads
    python benchmarks/step_linear.py --threads 1 --rows 1,2,4,8

For the output matrices of the tiny and small presets (vocabulary 8,000) and of
SmolLM2-135M (49,152 x 576), and SmolLM2's MLP matrices, fp32 and bf16, 1 to 8 rows:
the memory each way reads per second (the matrix's bytes / the time of one product, best
of 20, the matrix warm in the cache as far as it fits) through F.linear, the blocked
transposed copy and oneDNN's packed copy, and each copy's ratio to F.linear. A decoding
step (models/step_linear.py) measures the same for each shape it meets and keeps the
copy that gained most, where it was faster. Run it alone: it measures memory bandwidth.

Then two tables about the rest of a decoding step:
- a preset's 4 x layers block matrices read in turn, one row each, as one decoding step
  reads them (the tiny and small presets): what the weights alone cost a token when they
  do not all stay in the cache, fp32 and bf16, through F.linear and the packed copy;
- GELU on a step's few values, oneDNN's kernel (what F.gelu runs on a CPU for
  contiguous fp32/bf16) against ATen's own (oneDNN switched off for the call), by size:
  why models/transformer.py's `gelu_small` skips oneDNN below NATIVE_GELU_MAX values.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # see pretrain.py

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from lmtool.device import describe_cpu  # noqa: E402
from lmtool.models.step_linear import BlockedLinear, PackedLinear  # noqa: E402

MATRICES = {"tiny head": (8000, 128), "small head": (8000, 384), "SmolLM2 head": (49152, 576),
            "SmolLM2 gate+up": (3072, 576), "SmolLM2 down": (576, 1536)}


def best_time(fn, x, repeats: int = 20) -> float:
    fn(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


PRESETS = {"tiny": (4, 128), "small": (6, 384)}  # layers, width (models/config.py)


def stream_table() -> None:
    """A preset's block matrices, one row through each in turn, best of 20 passes."""
    print("\n| preset's block matrices in turn | dtype | MB | F.linear ms | GB/s | packed ms "
          "| GB/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for preset, (layers, C) in PRESETS.items():
        shapes = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)] * layers  # qkv, proj, fc, proj
        for dtype in (torch.float32, torch.bfloat16):
            linears = [nn.Linear(i, o, bias=False).to(dtype) for o, i in shapes]
            packed = [PackedLinear.of(layer) for layer in linears]
            inputs = [torch.randn(1, i, dtype=dtype) for _, i in shapes]
            size = sum(layer.weight.numel() * layer.weight.element_size() for layer in linears)

            def one_pass(fns, inputs=inputs):
                for fn, x in zip(fns, inputs, strict=True):
                    fn(x)

            plain = best_time(one_pass, linears)
            row = (f"| {preset} ({layers} x 4) | {str(dtype)[6:]} | {size / 1e6:.0f} "
                   f"| {plain * 1e3:.2f} | {size / plain / 1e9:.1f} |")
            if None in packed:
                row += " - | - |"
            else:
                ours = best_time(one_pass, packed)
                row += f" {ours * 1e3:.2f} | {size / ours / 1e9:.1f} |"
            print(row, flush=True)


def gelu_table() -> None:
    """F.gelu (exact) through oneDNN and through ATen's kernel, microseconds a call."""
    print("\n| GELU values | dtype | oneDNN us | ATen us | ATen's speed-up |")
    print("|---:|---|---:|---:|---:|")
    for size in (512, 1536, 4096, 8192, 16384, 65536):
        for dtype in (torch.float32, torch.bfloat16):
            h = torch.randn(1, size, dtype=dtype)
            onednn = best_time(lambda x: [F.gelu(x) for _ in range(100)], h) / 100
            torch.backends.mkldnn.enabled = False
            try:
                aten = best_time(lambda x: [F.gelu(x) for _ in range(100)], h) / 100
            finally:
                torch.backends.mkldnn.enabled = True
            print(f"| {size:,} | {str(dtype)[6:]} | {onednn * 1e6:.1f} | {aten * 1e6:.1f} "
                  f"| {onednn / aten:.2f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--rows", default="1,2,8")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{describe_cpu()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| matrix | dtype | rows | F.linear GB/s | blocked GB/s | ratio | packed GB/s | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for name, (V, C) in MATRICES.items():
            for dtype in (torch.float32, torch.bfloat16):
                head = nn.Linear(C, V, bias=False).to(dtype)
                blocked = BlockedLinear(head.weight, None, torch.get_num_threads())
                packed = PackedLinear.of(head)  # None where oneDNN cannot pack the dtype
                size = head.weight.numel() * head.weight.element_size() / 1e9
                for rows in map(int, args.rows.split(",")):
                    x = torch.randn(rows, C, dtype=dtype)
                    plain, ours = best_time(head, x), best_time(blocked, x)
                    row = (f"| {name} {V}x{C} | {str(dtype)[6:]} | {rows} | {size / plain:.1f} "
                           f"| {size / ours:.1f} | {plain / ours:.2f}x |")
                    if packed is None:
                        row += " - | - |"
                    else:
                        theirs = best_time(packed, x)
                        row += f" {size / theirs:.1f} | {plain / theirs:.2f}x |"
                    print(row, flush=True)
        stream_table()
        gelu_table()


if __name__ == "__main__":
    main()
