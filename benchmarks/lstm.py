"""AWD-LSTM training speed: `lmtool pretrain --arch lstm` against fastai's own AWD-LSTM,
same model, same batches, one run.

Not a test. For each config (embedding / hidden / layers) it runs, one after the other
in this one run, each as a process of its own:

- fastai: benchmarks/lstm_fastai.py under the Python of a virtual environment that has
  fastai (--fastai-python, or $LMTOOL_FASTAI_PYTHON; skipped with a message if absent),
  `language_model_learner(..., drop_mult=1.0, pretrained=False)` + `fit_one_cycle`, in
  fp32 (its default) and, with --fastai-bf16, under `learn.to_bf16()`;
- lmtool: the `lmtool pretrain` command itself, once per --precisions (fp32, and auto:
  its default, what lmtool chooses on this machine), timed by the trainer's own tokens/s
  log row after every step, so everything the CLI does per step counts and the process
  start-up does not (benchmarks/cli_rows.py).

The header names the CPU's bf16 hardware (AMX, AVX512-BF16, or neither) and what
`--precision auto` chose from it.

Each row is timed over --steps steps after --warmup; the figure is the median step.
Ratios are lmtool's tokens/s over fastai's fp32 tokens/s (issue 9's goal: >= 2x) and,
with --fastai-bf16, over fastai's at the same precision. Compare ratios across runs,
not tokens/s: run it under the exclusive CPU lock for figures you report.

    python benchmarks/lstm.py                                # both configs, ~6 min on 2 cores
    python benchmarks/lstm.py --configs 200/512/3 --steps 4
    python benchmarks/lstm.py --fastai-python ~/venvs/fastai/bin/python --fastai-bf16

The same work on both sides: fastai's `awd_lstm_lm_config` dropouts at drop_mult 1
(lmtool's LSTM defaults at --dropout 1: embedding 0.02, input 0.25, hidden 0.15, weight
0.2, output 0.1), AR 2 / TAR 1, tied decoder with a bias, batch 64, BPTT 70, vocabulary
29,080 (the figures of issue 9), the same threads, the same token stream. The corpus is
synthetic: a random text over 29,073 distinct characters read by a char tokenizer, so
the vocabulary is exactly --vocab without any download; the cost of a step does not
depend on which words it reads. What still differs is printed under the table.
"""

from __future__ import annotations

import os
import sys

# Run as a script, Python puts benchmarks/ first on sys.path, where benchmarks/tokenize.py
# would shadow the standard `tokenize` module: put the repository root there instead.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.cli_rows import machine_line, run_command, run_lmtool, train_rows  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Where a fastai virtual environment usually sits beside the checkout (peers/ next to it).
FASTAI_CANDIDATES = [ROOT.parent / "peers/fastai-venv/bin/python",
                     ROOT.parent.parent / "peers/fastai-venv/bin/python"]

STILL_DIFFERS = [
    "optimiser: lmtool fused AdamW (weight decay 0.1, betas 0.9/0.99) and gradient "
    "clipping at 1.0; fastai its own Adam (wd 0.01, one-cycle momentum 0.8-0.7-0.8), "
    "no clipping",
    "batches: lmtool variable BPTT around 70 (Merity et al.; tokens/s counts the tokens "
    "read); fastai a fixed 70",
    "loss: lmtool computes the decoder and its cross-entropy in blocks of rows once the "
    "(B*T, V) logits pass 64 MiB (training/fused_loss.py; at 29,080 words they are 521 "
    "MB); fastai builds the logits, then CrossEntropyLossFlat",
    "fastai's embedding has a padding row (no gradient for token 1); lmtool's none",
]


def synthetic_shards(work: Path, vocab: int, tokens: int, seed: int = 0) -> Path:
    """Token shards over exactly `vocab` ids: a random text of `tokens` characters drawn
    from vocab - 7 distinct CJK / Hangul characters (every one at least once), read by
    an lmtool char tokenizer (7 special tokens + one id per character)."""
    from lmtool.text.encode import encode_corpus
    from lmtool.text.specials import SPECIAL_TOKENS
    from lmtool.text.tokenizer import save_tokenizer, train_tokenizer

    letters = [chr(c) for c in (*range(0x4E00, 0xA000), *range(0xAC00, 0xD7A4))]
    distinct = vocab - len(SPECIAL_TOKENS)
    if not 0 < distinct <= len(letters):
        raise SystemExit(f"--vocab must be in [8, {len(letters) + len(SPECIAL_TOKENS)}]")
    rng = np.random.default_rng(seed)
    # Zipf-like frequencies as in text, then every character once so none is missing.
    ranks = np.arange(1, distinct + 1)
    draws = rng.choice(distinct, size=max(tokens - distinct, 0), p=(1 / ranks) / (1 / ranks).sum())
    order = np.concatenate([np.arange(distinct), draws])
    rng.shuffle(order)
    source = work / "train.txt"
    source.write_text("".join(letters[i] for i in order), encoding="utf-8")
    tok = train_tokenizer([source], kind="char", vocab_size=vocab, min_frequency=1,
                          document="file")
    if tok.get_vocab_size() != vocab:
        raise SystemExit(f"the synthetic tokenizer has {tok.get_vocab_size()} ids, not {vocab}")
    save_tokenizer(tok, work / "tokenizer.json")
    encode_corpus([source], work / "tokenizer.json", work / "shards", val_fraction=0,
                  document="file")
    return work / "shards"


def find_fastai(given: str | None) -> Path | None:
    if given:
        return Path(given)
    if os.environ.get("LMTOOL_FASTAI_PYTHON"):
        return Path(os.environ["LMTOOL_FASTAI_PYTHON"])
    return next((p for p in FASTAI_CANDIDATES if p.exists()), None)


def time_fastai(python: Path, tokens_file: Path, shape, args, bf16: bool) -> dict:
    emb, hidden, layers = shape
    cmd = [str(python), str(HERE / "lstm_fastai.py"), "--tokens", str(tokens_file),
           "--vocab", str(args.vocab), "--emb", str(emb), "--hidden", str(hidden),
           "--layers", str(layers), "--batch", str(args.batch), "--bptt", str(args.bptt),
           "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--threads", str(args.threads)] + (["--bf16"] if bf16 else [])
    out = json.loads(run_command(cmd, threads=args.threads)[0].strip().splitlines()[-1])
    rates = [out["tokens_per_step"] / t for t in out["times"]]
    return {"rate": statistics.median(rates), "rates": rates,
            "precision": "bf16" if bf16 else "fp32", "threads": out["threads"],
            "version": f"fastai {out['fastai']}, torch {out['torch']}"}


def time_lmtool(shards: Path, work: Path, shape, args, precision: str) -> dict:
    """`lmtool pretrain` for warmup + steps steps, a log row after each: the trainer's
    tokens/s from one row to the next (the whole step: batch, forward, backward, clip,
    optimiser, callbacks)."""
    emb, hidden, layers = shape
    out = work / f"run-{emb}-{hidden}-{layers}-{precision}"
    argv = ["pretrain", str(shards), "-o", str(out),
           "--arch", "lstm", "--dim", str(emb), "--hidden", str(hidden),
           "--layers", str(layers), "--context", str(args.bptt), "--batch-size",
           str(args.batch), "--dropout", "1", "--optimizer", "adamw", "--precision",
           precision, "--max-steps", str(args.warmup + args.steps), "--epochs", "1000",
           "--log-every", "1",
           "--eval-every", "0", "--save-every", "0", "--force", "--quiet"]
    run_lmtool(argv, threads=args.threads)
    rates = [r["tokens_per_s"] for r in train_rows(out)][args.warmup :]
    if not rates:
        raise SystemExit(f"no timed steps in {out / 'metrics.jsonl'}")
    from lmtool.device import dtype_name, resolve_precision

    resolved = dtype_name(resolve_precision(precision, torch.device("cpu")))
    return {"rate": statistics.median(rates), "rates": rates, "precision": resolved}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="200/512/3,400/1152/3",
                   help="embedding/hidden/layers, comma-separated (issue 9's two)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--vocab", type=int, default=29080)
    p.add_argument("--warmup", type=int, default=2, help="steps not timed, per row")
    p.add_argument("--steps", type=int, default=6, help="timed steps per row")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="threads for every row (default: torch's, %(default)s here)")
    p.add_argument("--precisions", default="fp32,auto",
                   help="lmtool rows: --precision values (auto: lmtool's choice here)")
    p.add_argument("--fastai-python", help="Python of a venv with fastai "
                   "(default $LMTOOL_FASTAI_PYTHON, else ../peers/fastai-venv)")
    p.add_argument("--fastai-bf16", action="store_true",
                   help="also time fastai under learn.to_bf16()")
    args = p.parse_args()
    shapes = [tuple(int(x) for x in c.split("/")) for c in args.configs.split(",")]
    fastai = find_fastai(args.fastai_python)
    if fastai is None or not fastai.exists():
        where = fastai or " or ".join(map(str, FASTAI_CANDIDATES))
        print(f"fastai: skipped, no Python with fastai at {where} (give one with "
              "--fastai-python or $LMTOOL_FASTAI_PYTHON)", file=sys.stderr)
        fastai = None

    with tempfile.TemporaryDirectory(prefix="lmtool-bench-lstm-") as tmp:
        work = Path(tmp)
        # Enough for every row to read fresh tokens: 64 streams of (steps + 1) x ~80.
        need = args.batch * (args.warmup + args.steps + 2) * (args.bptt + 15)
        shards = synthetic_shards(work, args.vocab, max(need, 200_000))
        from lmtool.text.shards import open_shards

        tokens_file = work / "tokens.npy"
        np.save(tokens_file, np.asarray(open_shards(shards).train, dtype=np.int64))

        print(f"AWD-LSTM training, batch {args.batch}, BPTT {args.bptt}, vocabulary "
              f"{args.vocab:,}, {args.threads} threads; median of {args.steps} steps after "
              f"{args.warmup}; {machine_line()}")
        for shape in shapes:
            rows: list[tuple[str, dict]] = []
            if fastai is not None:
                rows.append(("fastai", time_fastai(fastai, tokens_file, shape, args, False)))
                if args.fastai_bf16:
                    rows.append(("fastai to_bf16()",
                                 time_fastai(fastai, tokens_file, shape, args, True)))
            for precision in args.precisions.split(","):
                rows.append((f"lmtool pretrain --precision {precision}",
                             time_lmtool(shards, work, shape, args, precision)))
            print_table(shape, rows)
        if fastai is not None:
            version = next(r for n, r in rows if n == "fastai")["version"]
            print(f"\nfastai: {version} ({fastai})")
        print("still differs:\n" + "\n".join(f"  - {d}" for d in STILL_DIFFERS))


def print_table(shape, rows: list[tuple[str, dict]]) -> None:
    emb, hidden, layers = shape
    ref = {r["precision"]: r["rate"] for name, r in rows if name.startswith("fastai")}
    print(f"\nemb {emb} / hidden {hidden} / {layers} layers")
    print(f"  {'row':34s} {'precision':9s} {'tokens/s':>9s} {'vs fastai fp32':>15s} "
          f"{'vs fastai same':>15s}   steps (tokens/s)")
    for name, r in rows:
        vs = f"{r['rate'] / ref['fp32']:.2f}x" if "fp32" in ref else "-"
        same = ref.get(r["precision"])
        vs_same = f"{r['rate'] / same:.2f}x" if same and not name.startswith("fastai") else "-"
        steps = " ".join(f"{x:.0f}" for x in r["rates"])
        print(f"  {name:34s} {r['precision']:9s} {r['rate']:9.0f} {vs:>15s} {vs_same:>15s}"
              f"   {steps}", flush=True)


if __name__ == "__main__":
    main()
