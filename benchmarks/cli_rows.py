"""CLI rows: the real `lmtool` command, in a process of its own, timed beside its peer;
and the machine line every benchmark prints first.

Shared by benchmarks/pretrain.py, lstm.py, classify.py and generate.py. A CLI row runs
`python -m lmtool ...` with the command's defaults. Where the command logs its own timing
(the trainer's tokens/s in RUN/metrics.jsonl, with --log-every 1) the row is timed from
that log, so process start-up, imports and the saves around the run do not count. Where
it logs none (classify, generate), the whole command is timed, and so is its start-up
(the same command doing next to no work), which the scripts print beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def machine_line(device: str = "cpu") -> str:
    """The CPU's bf16 hardware and what `--precision auto` trains in on `device`, e.g.
    "CPU AMD EPYC 9R14: AVX512-BF16 (no AMX); --precision auto here: fp32 (auto: ...)"."""
    from lmtool.device import describe_cpu, describe_precision, resolve_device

    return (f"CPU {describe_cpu()}; --precision auto here: "
            f"{describe_precision('auto', resolve_device(device))}")


def lmtool_command(argv: list[str]) -> list[str]:
    """`lmtool ARGV` as this Python runs it (the entry point needs no PATH)."""
    return [sys.executable, "-m", "lmtool", *argv]


def run_command(command: list[str], *, threads: int | None = None,
                stdin: str | None = None) -> tuple[str, float]:
    """Run `command` with `threads` OMP threads (default: as this process's environment
    says); returns (its stdout, wall seconds). Exits with the tail of its stderr when it
    fails."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(command, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{tail}")
    return done.stdout, seconds


def run_lmtool(argv: list[str], **kwargs) -> tuple[str, float]:
    """`lmtool ARGV` through run_command: (stdout, wall seconds)."""
    return run_command(lmtool_command(argv), **kwargs)


def train_rows(run: Path) -> list[dict]:
    """The training rows of RUN/metrics.jsonl (those with tokens/s), in step order."""
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [r for r in rows if "tokens_per_s" in r]


def step_seconds(run: Path, skip: int) -> list[float]:
    """Seconds per step of a run logged every step (--log-every 1), after its first
    `skip` steps: the trainer's own clock from one row to the next (tokens between two
    rows / the row's tokens/s), i.e. the whole step (batch, forward, backward,
    optimiser, callbacks); start-up, imports and the saves before the first step and
    after the last do not count."""
    rows = train_rows(run)
    times = [(b["tokens"] - a["tokens"]) / b["tokens_per_s"]
             for a, b in zip(rows, rows[1:], strict=False) if b["step"] > skip]
    if not times:
        raise SystemExit(f"no timed steps in {run / 'metrics.jsonl'} after step {skip}")
    return times
