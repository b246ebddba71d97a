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
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # see pretrain.py

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
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


if __name__ == "__main__":
    main()
