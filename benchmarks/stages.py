"""Resumable benchmark stages: each one `lmtool` command in a process of its own.

Shared by benchmarks/ulmfit.py and benchmarks/translate.py. A stage whose output has a
`.done.json` beside it is skipped (a different command for the same output is refused);
one cut short is continued with `--resume` (or replaced with `--force` when it never
wrote a run). Each stage's stderr is appended to OUT/logs/NAME.log.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


class StageFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)


def threads_used(threads: int | None) -> int:
    """The OMP threads a stage runs with: --threads, else $OMP_NUM_THREADS, else the CPUs."""
    return threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1


class Stages:
    """Runs `lmtool` stages writing under `out`, each with `threads` OMP threads."""

    def __init__(self, out: Path, threads: int | None):
        self.out = out
        self.threads = threads
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, output: Path, argv: list[str], *, resumable: bool = True) -> dict:
        """Run `lmtool ARGV` unless `output` is done; return its record (with stdout)."""
        done = output.with_name(output.name + ".done.json")
        if done.exists():
            record = json.loads(done.read_text())
            if record["argv"] != argv:
                raise StageFailed(f"{output} was made by another command:\n  "
                                  f"{' '.join(record['argv'])}\nremove it (and what was "
                                  f"made from it) or pass another --out")
            return record
        again = output.exists() and (output / "config.json").exists()
        extra = ["--resume"] if resumable and again else (["--force"] if output.exists() else [])
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        command = [sys.executable, "-m", "lmtool", *argv, *extra]
        log(f"{'resuming' if '--resume' in extra else 'running'}: lmtool {' '.join(argv)}")
        start, used = time.time(), _children_cpu_s()
        logfile = self.out / "logs" / ("-".join(output.relative_to(self.out).parts) + ".log")
        with open(logfile, "a") as err:
            err.write(f"$ lmtool {' '.join(argv + extra)}\n")
            err.flush()
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                  env=env)
        if proc.returncode != 0:
            raise StageFailed(f"lmtool {argv[0]} exited {proc.returncode}; see {logfile}")
        # CPU seconds besides wall seconds: a stage sharing the CPU (or paused) takes
        # longer on the clock, not in CPU time (for a run resumed, this part only).
        record = {"argv": argv, "stdout": proc.stdout, "wall_s": round(time.time() - start),
                  "cpu_s": round(_children_cpu_s() - used), "threads": threads_used(self.threads),
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_atomic(done, json.dumps(record, indent=1))
        return record


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pick(text: str, known, what: str, script: str) -> list[str]:
    """The comma-separated items of `text`, each one of `known`, or exit naming the rest."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in items if x not in known]
    if unknown:
        raise SystemExit(f"{script}: unknown {what} {', '.join(unknown)} "
                         f"(choose from {', '.join(known)})")
    return items
