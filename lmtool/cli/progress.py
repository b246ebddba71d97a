"""Training progress on stderr, shared by `pretrain` and `finetune`, and how any
objective's metrics read in a line of text (the objective names them; nothing here
knows which objective produced them)."""

from __future__ import annotations

import time

from lmtool.cli.common import stderr

# Counts and duplicates left out of one-line summaries (still in JSON and metrics.jsonl).
_UNSHOWN = {"tokens", "bits_per_token"}


def describe(metrics: dict) -> str:
    """"loss 1.2345, perplexity 3.44" from {"loss": ..., "perplexity": ..., "tokens": ...}."""
    parts = [f"{name.replace('_', ' ')} {value:.4f}" if isinstance(value, float)
             else f"{name.replace('_', ' ')} {value}"
             for name, value in metrics.items() if name not in _UNSHOWN]
    return ", ".join(parts)


class Reporter:
    """Training progress on stderr: plain log lines every --log-every steps (and a rich
    progress bar above them when stderr is a terminal); nothing with --quiet."""

    def __init__(self, quiet: bool):
        from lmtool.cli.common import show_progress

        self.quiet = quiet
        self.bar = None
        self.task = None
        self._show_bar = show_progress(quiet)
        self._start = time.perf_counter()
        self._start_step: int | None = None

    # The trainer calls these (duck-typed Callback).
    def on_start(self, trainer) -> None:
        pass

    def on_step(self, trainer) -> None:
        if self._start_step is None:
            self._start_step = trainer.state.step - 1
        if not self._show_bar:
            return
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("step {task.completed}"), BarColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                console=stderr, transient=True,
            )
            self.bar.start()
            total = trainer.limits.max_steps
            self.task = self.bar.add_task("train", total=total, status="")
        self.bar.update(self.task, completed=trainer.state.step)

    def _eta(self, trainer) -> str:
        s, lim = trainer.state, trainer.limits
        done = s.step - (self._start_step or 0)
        spent = time.perf_counter() - self._start
        left = []
        if lim.max_steps and done > 0:
            left.append((lim.max_steps - s.step) * spent / done)
        if lim.max_time:
            left.append(max(0.0, lim.max_time - s.elapsed_s))
        return f"ETA {min(left):.0f}s" if left else ""

    def on_train_row(self, trainer, row: dict) -> None:
        line = (
            f"step {row['step']}: loss {row['loss']:.4f}, lr {row['lr']:.2e}, "
            f"{row['tokens_per_s']:,.0f} tok/s, {row['elapsed_s']:.0f}s {self._eta(trainer)}"
        )
        if self.bar is not None:
            self.bar.update(self.task, status=f"loss {row['loss']:.3f} "
                                              f"{row['tokens_per_s']:,.0f} tok/s")
        self._print(line.rstrip())

    def on_eval(self, trainer, row: dict) -> None:
        held_out = {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}
        self._print(f"eval step {row['step']}: val {describe(held_out)}")

    def on_save(self, trainer, state) -> None:
        pass

    def on_end(self, trainer, reason: str) -> None:
        self.close()

    def _print(self, line: str) -> None:
        if self.quiet:
            return
        console = self.bar.console if self.bar is not None else stderr
        console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    # `with Reporter(quiet) as reporter:` closes the bar whatever the run does.
    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

