"""Encoding speed and memory of `lmtool tokenize encode` against bare HF `tokenizers`.

Not a test. It trains a byte-level BPE tokenizer on the corpus, then in the same run:

1. times bare `Tokenizer.encode_batch` (and `encode_batch_fast`) over the corpus's
   documents, already in memory, and lmtool's `encode_corpus` (read + split + encode +
   write shards) over the same file, and prints MB/s and the ratio (goal: >= 0.9x);
2. runs the real CLI in a subprocess on 1x and on 10x the corpus (a directory of
   symlinks) and prints each run's peak RSS (os.wait4's ru_maxrss), and whether memory
   grew with the corpus (goal: it does not).

    .venv/bin/python benchmarks/tokenize.py [CORPUS] [--repeat 10] [--limit-mb N]

The header names the CPU and its bf16 hardware (AMX, AVX512-BF16, or neither), as every
benchmark's does; no model runs here, so no precision is chosen.
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard `tokenize` module: take its directory off the
# import path before anything (inspect, linecache, torch) imports the real one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(_HERE).parent
sys.path.insert(0, str(REPO))
DEFAULT_CORPUS = REPO / ".." / "shared" / "corpora" / "wikitext-2" / "train.txt"


def best_of(runs: int, fn) -> float:
    """The fastest of `runs` timings of fn(), in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_bare(tok, corpus: Path, runs: int) -> tuple[float, float]:
    """Seconds for bare encode_batch / encode_batch_fast over the corpus's documents,
    already in memory (the documents lmtool's paragraph mode finds)."""
    from lmtool.text.sources import iter_documents

    docs = list(iter_documents([corpus]))
    bare = best_of(runs, lambda: tok.encode_batch(docs, add_special_tokens=False))
    fast = best_of(runs, lambda: tok.encode_batch_fast(docs, add_special_tokens=False))
    return bare, fast


# Runs argv[1:] and prints its exit code and peak RSS (KB). Why a launcher: Linux keeps a
# forked child's pre-exec peak in ru_maxrss, so a command forked straight from this big
# benchmark process would report this process's memory; the launcher's child is forked
# from a small, freshly exec'd interpreter instead.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Run a command; return (its peak resident memory in MB, wall seconds)."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args], capture_output=True, text=True, cwd=REPO
    )
    seconds = time.perf_counter() - start
    code, max_rss_kb = (int(x) for x in out.stdout.split())
    if code != 0:
        sys.exit(f"command failed ({code}): {' '.join(args)}\n{out.stderr}")
    return max_rss_kb / 1024, seconds  # ru_maxrss is in KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=10, help="copies for the memory run")
    parser.add_argument("--runs", type=int, default=3, help="timings per side; best is kept")
    parser.add_argument("--limit-mb", type=float, default=0, help="use only the first N MB")
    args = parser.parse_args()

    from lmtool.device import describe_cpu
    from lmtool.text.encode import encode_corpus
    from lmtool.text.tokenizer import save_tokenizer, train_tokenizer

    corpus = args.corpus.resolve()
    if not corpus.is_file():
        sys.exit(f"no corpus at {corpus}")
    with tempfile.TemporaryDirectory(prefix="lmtool-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.limit_mb:
            cut = tmp / "corpus.txt"
            data = corpus.read_bytes()[: int(args.limit_mb * 1e6)]
            cut.write_bytes(data[: data.rfind(b"\n") + 1])
            corpus = cut
        size_mb = corpus.stat().st_size / 1e6
        print(f"corpus: {corpus} ({size_mb:.1f} MB), cores: {os.cpu_count()}, CPU "
              f"{describe_cpu()}")

        start = time.perf_counter()
        tok = train_tokenizer([corpus], kind="bpe", vocab_size=args.vocab_size)
        tok_path = tmp / "tok.json"
        save_tokenizer(tok, tok_path)
        seconds = time.perf_counter() - start
        print(f"trained bpe tokenizer (vocab {args.vocab_size}) in {seconds:.1f} s")

        # 1. Throughput, both sides in this process, on the same documents.
        bare, bare_fast = time_bare(tok, corpus, args.runs)
        out = tmp / "shards"
        ours = best_of(args.runs, lambda: encode_corpus([corpus], tok_path, out, force=True))
        print(f"bare tokenizers encode_batch      : {size_mb / bare:6.2f} MB/s")
        print(f"bare tokenizers encode_batch_fast : {size_mb / bare_fast:6.2f} MB/s")
        print(f"lmtool encode (file -> shards)    : {size_mb / ours:6.2f} MB/s")
        print(f"ratio lmtool / encode_batch       : {bare / ours:.2f}x (goal >= 0.9x)")
        print(f"ratio lmtool / encode_batch_fast  : {bare_fast / ours:.2f}x")

        # 2. Peak memory of the CLI on 1x and Nx the corpus, one subprocess per run.
        copies = tmp / "copies"
        copies.mkdir()
        for i in range(args.repeat):
            (copies / f"part{i:02d}.txt").symlink_to(corpus)
        lmtool = [sys.executable, "-m", "lmtool", "tokenize", "encode", "-t", str(tok_path)]
        results = {}
        for label, source in (("1x", corpus), (f"{args.repeat}x", copies)):
            target = tmp / f"out-{label}"
            rss, seconds = peak_rss_mb([*lmtool, str(source), "-o", str(target), "--quiet"])
            mb = size_mb * (1 if label == "1x" else args.repeat)
            results[label] = rss
            print(
                f"lmtool CLI {label:>4}: {mb:7.1f} MB in {seconds:6.1f} s, peak RSS {rss:7.1f} MB"
            )
            shutil.rmtree(target, ignore_errors=True)
        one, many = results["1x"], results[f"{args.repeat}x"]
        grew = many > one * 1.1 + 20  # allow a little allocator noise
        print(
            f"peak RSS {args.repeat}x / 1x: {many / one:.2f} "
            f"({'GREW with the corpus' if grew else 'did not grow with the corpus'})"
        )


if __name__ == "__main__":
    main()
