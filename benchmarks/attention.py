"""The CPU attention's precision under bf16 autocast: bf16 against fp32, by shape.

    python benchmarks/attention.py                   # the shapes of lmtool's presets
    python benchmarks/attention.py --threads 2 --shapes 4x64x64x32,6x256x256x64
    python benchmarks/attention.py --forward --masked    # a classifier's batches

Prints, for each (heads x query length x key length x head size) shape, the ratio
`models/attention_dtype.py` measures before lmtool first runs that shape under bf16
autocast: fp32 time / bf16 time of F.scaled_dot_product_attention, forward and backward
(a training step; --forward: forward alone, as evaluation and classification), causal
(--masked: with a padding mask instead), best of its repeats, the two taking turns.
Above 1.1 lmtool runs that shape's attention in bf16, else in fp32. The answer depends
on the CPU (printed with its bf16 hardware and what `--precision auto` chose from it),
the threads and torch: compare ratios, and run it alone.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # see pretrain.py

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from benchmarks.cli_rows import machine_line  # noqa: E402
from lmtool.models.attention_dtype import MIN_SPEEDUP, measure  # noqa: E402

# heads x T x L x head size: the tiny, small preset and nanoGPT shakespeare shapes, a
# classifier's short batches, and a 512-token context.
SHAPES = "4x64x64x32,4x128x128x32,6x256x256x64,8x256x256x32,12x512x512x64"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="comma-separated HxTxLxD")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--forward", action="store_true", help="forward alone (no backward)")
    ap.add_argument("--masked", action="store_true", help="a padding mask, not causal")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {machine_line()}")
    print("| heads x T x L x D | fp32 / bf16 time | attention runs in |")
    print("|---|---:|---|")
    for shape in args.shapes.split(","):
        start = time.perf_counter()
        key = " ".join([shape, "masked" if args.masked else "causal"]
                       + ["forward"] * args.forward)
        ratio = measure(key)
        took = time.perf_counter() - start
        chosen = "bf16" if ratio >= MIN_SPEEDUP else "fp32"
        print(f"| {shape} | {ratio:.2f}x | {chosen} (measured in {took:.2f} s) |", flush=True)


if __name__ == "__main__":
    main()
