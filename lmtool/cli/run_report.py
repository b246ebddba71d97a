"""How a training command reports its run: the end-of-run lines on stderr and the
figures `--format json` prints, the same for every kind of run."""

from __future__ import annotations

import typer

from lmtool.cli.common import info
from lmtool.cli.progress import describe
from lmtool.wording import count


def result_line(line: str, format: str, quiet: bool) -> None:
    """A line of a run's result: on stdout with --format text (--quiet or not); beside
    the log on stderr with --format json, whose object is the result."""
    if format == "json":
        info(line, quiet)
    else:
        typer.echo(line)


def run_summary(result) -> dict:
    """What `--format json` prints of any run: where it is, how far it went, how it did."""
    return {"run": str(result.run_dir), "steps": result.step,
            "tokens_seen": result.tokens_seen, "elapsed_s": round(result.elapsed_s, 3),
            "stop_reason": result.stop_reason, "resumed_from": result.resumed_from,
            "parameters": result.num_parameters, "last_loss": result.last_loss,
            "last_eval": result.last_eval, "precision": result.precision}


def report_run(result, quiet: bool) -> bool:
    """The end-of-run lines on stderr (rank 0 only); False when there was nothing to do."""
    if not result.is_main:
        return False  # under torchrun only rank 0 reports
    if result.stop_reason == "done":
        info(f"{result.run_dir} has already reached its limits ({result.limits}) at step "
             f"{result.step}: nothing to do (give a larger --epochs to train on; "
             "--max-steps and --max-time only cut the epochs short)", quiet)
        return False
    summary = f"{result.run_dir}: {count(result.step, 'step')}, {result.tokens_seen:,} tokens"
    summary += f", {result.elapsed_s:.0f}s, {result.precision}"
    held_out = {k.removeprefix("val_"): v for k, v in (result.last_eval or {}).items()
                if k.startswith("val_")}
    if held_out:
        summary += f", val {describe(held_out)}"
    info(summary, quiet)
    if result.sample:
        info("sample:\n" + result.sample, quiet)
    return True
