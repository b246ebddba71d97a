"""`lmtool complete`: an interactive prompt that completes what you type, or the top-k
completions of --prefix for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import Device, OutputFormat, Precision, Quiet, formats, info
from lmtool.errors import BadInput

TextFormat = formats("text", "jsonl")
HELP_EXAMPLES = (
    "lmtool complete runs/lm",
    'lmtool complete runs/lm --prefix "The cat sat on" -k 5',
    'lmtool complete runs/lm --prefix "Dear" --format jsonl | jq .completion',
    "lmtool complete runs/lm > lines.txt        # the lines you accept, one per Enter",
)
SUMMARY = (
    "Complete text as you type. The model's most likely continuation (up to --max-words "
    "words or the end of the sentence) appears after the cursor in grey: Tab or → "
    "accepts it, typing over it refines it, Ctrl-Space opens a menu of -k choices: "
    "the grey text first, then the best alternatives. A word typed in part is "
    "finished first (\"The ri\" → \"ver bank\"). "
    "Enter prints the line on stdout (so the prompt can feed a pipe) and starts a new "
    "one; ↑ recalls history; Ctrl-C clears the line; Ctrl-D quits. "
    "With --prefix, prints the top -k completions and their scores instead "
    "(text: completion<TAB>score; jsonl: prefix, completion, score, rank)."
)


def complete(
    run: Annotated[Path, typer.Argument(help="A causal run directory (forward).")],
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Complete this text and exit.")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="How many alternatives.")] = 5,
    max_words: Annotated[
        int, typer.Option("--max-words", help="Longest suggestion, in words.")
    ] = 5,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Longest suggestion, in tokens.")
    ] = 8,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
    format: TextFormat = "text",
) -> None:
    if k < 1:
        raise BadInput("-k must be >= 1")
    interactive = prefix is None
    if interactive and not (sys.stdin.isatty() and (sys.stderr.isatty() or sys.stdout.isatty())):
        raise BadInput("the interactive prompt needs a terminal",
                       'use --prefix "TEXT" to complete text from a script')
    from lmtool.inference.complete import CompletionEngine
    from lmtool.inference.runs import load_lm

    engine = CompletionEngine(load_lm(run, device=device, precision=precision),
                              max_words=max_words, max_tokens=max_tokens)
    if not interactive:
        for rank, c in enumerate(engine.alternatives(prefix, k)):
            if format == OutputFormat.jsonl:
                typer.echo(json.dumps({"prefix": prefix, "completion": c.text,
                                       "score": round(c.score, 6), "rank": rank},
                                      ensure_ascii=False))
            else:
                typer.echo(f"{c.text}\t{c.score:.4f}")
        return
    _interactive(engine, k, quiet)


def _interactive(engine, k: int, quiet: bool) -> None:
    from prompt_toolkit.output import create_output

    from lmtool.cli.complete_ui import build_session, run_prompt

    # The prompt is drawn on stderr when it is a terminal, so stdout carries only the
    # accepted lines (`lmtool complete runs/lm > notes.txt` works).
    screen = sys.stderr if sys.stderr.isatty() else sys.stdout
    session = build_session(engine, k, output=create_output(stdout=screen))
    info("Tab/→ accepts, Ctrl-Space shows alternatives, Ctrl-D quits.", quiet)

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    run_prompt(session, write)
