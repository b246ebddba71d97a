"""`lmtool generate`: text from a causal run, for one prompt or a file of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lmtool.cli.common import (
    Device,
    OutputFormat,
    Precision,
    Quiet,
    formats,
    stderr,
    warn,
)
from lmtool.errors import BadInput, SomeSkipped
from lmtool.wording import count

TextFormat = formats("text", "jsonl")
HELP_EXAMPLES = (
    'lmtool generate runs/lm "Once upon a time" --max-new-tokens 80 --top-p 0.9',
    'lmtool generate runs/lm "Once upon a time" --top-p 0.9 --seed 7   # the same text each run',
    'lmtool generate runs/lm "The river" --temperature 0 --stop "."',
    'lmtool generate runs/lm "The river" --beams 4 --num-return 2 --format jsonl',
    "lmtool generate runs/lm --file prompts.txt --format jsonl > out.jsonl",
    'lmtool generate runs/mt "Ein Mann fährt Fahrrad." --beams 5',
    "lmtool generate runs/mt --file test.de > test.hyp.en",
    'echo \'{"prompt": "Hello", "max_new_tokens": 5}\' | lmtool generate runs/lm -',
)
SUMMARY = (
    "Write text with a causal run. The prompt comes from the argument, --file, or stdin "
    "(-): one prompt per line, or JSONL objects with \"prompt\" and per-prompt options "
    "(max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, beams, "
    "length_penalty, num_return, num_samples, stop, seed). The first non-empty line "
    "decides which for the whole input (JSONL if it starts with {); a later line of the "
    "other kind is an error for that line. No prompt starts a new "
    "document. Prints the prompt followed by the text (a backward run: the text that "
    "comes before the prompt, then the prompt); jsonl gives prompt, text, tokens, "
    "stop_reason, for sampling the seed (give it as --seed to write the same text "
    "again) and, for beam search, score (log-probability / length ** "
    "length_penalty) and logprob. Sampling without --seed differs from run to run; "
    "greedy (--temperature 0) and beam search do not. "
    "One prompt to a terminal streams as it is written. "
    "A bad line of several is reported and skipped, and the exit code is then 3. "
    "--max-new-tokens 0 writes nothing and exits 0. "
    "A sequence-to-sequence run (pretrain --objective seq2seq) maps each source (the "
    "argument, or one per line of --file or -) to its output, in input order, batched, "
    "greedy unless --beams or a sampling option is given; it prints the output alone "
    "(jsonl: source, text, tokens, stop_reason)."
)


def _opt(flag: str, help: str, *aliases: str):
    return typer.Option(flag, *aliases, help=help, show_default=False)


def generate(
    run: Annotated[Path, typer.Argument(help="A causal run directory.")],
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt, or - to read prompts from stdin.")
    ] = None,
    file: Annotated[Path | None, _opt("--file", "Read prompts from this file.", "-f")] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", help="Tokens to write per text.")
    ] = 100,
    temperature: Annotated[
        float | None, _opt("--temperature", "Sampling temperature (default 0.8); 0 is greedy.")
    ] = None,
    top_k: Annotated[int | None, _opt("--top-k", "Sample among the k most likely.")] = None,
    top_p: Annotated[
        float | None, _opt("--top-p", "Sample among the most likely holding this mass, (0, 1].")
    ] = None,
    min_p: Annotated[
        float | None, _opt("--min-p", "Drop tokens less likely than min-p x the best one.")
    ] = None,
    repetition_penalty: Annotated[
        float, typer.Option("--repetition-penalty", help="> 1 discourages repeated tokens.")
    ] = 1.0,
    beams: Annotated[int, typer.Option("--beams", help="Beam search with N beams.")] = 1,
    length_penalty: Annotated[
        float | None, _opt("--length-penalty", "Beam score = log-prob / length ** this (1.0).")
    ] = None,
    num_return: Annotated[
        int | None, _opt("--num-return", "Beam search: return the N best (default 1).")
    ] = None,
    num_samples: Annotated[
        int, typer.Option("--num-samples", help="Independent samples per prompt.")
    ] = 1,
    stop: Annotated[
        list[str] | None, _opt("--stop", "Stop before this string (repeatable; not printed).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Texts generated together.")
    ] = 32,
    seed: Annotated[int | None, _opt(
        "--seed", "Seed for sampling (default: a fresh one each run; jsonl shows it).")
    ] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    quiet: Quiet = False,
    format: TextFormat = "text",
) -> None:
    from lmtool.inference.generation import GenerateOptions

    if prompt is not None and file is not None:
        raise BadInput("give a prompt or --file, not both")
    options = GenerateOptions(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        min_p=min_p, repetition_penalty=repetition_penalty, beams=beams,
        length_penalty=length_penalty, num_return=num_return, num_samples=num_samples,
        stop=tuple(stop or ()), seed=seed,
    )
    options.validate()
    if max_new_tokens == 0:
        return
    from lmtool.checkpoint import read_run_config, run_task

    if run_task(read_run_config(run)) == "seq2seq":
        failed = _translate(run, prompt, file, options, batch_size, device, precision, format)
        if failed:
            raise SomeSkipped(f"skipped {count(failed, 'source')}", "see the errors above")
        return
    from lmtool.inference.runs import load_lm

    lm = load_lm(run, device=device, precision=precision)
    many = file is not None or prompt == "-"
    if (not many and format == OutputFormat.text and sys.stdout.isatty()
            and beams == 1 and num_samples == 1 and not lm.config.backward):
        _stream(lm, prompt or "", options)
        return
    if not many:
        from lmtool.inference.generate import generate as run_generate

        _print(run_generate(lm, prompt or "", options, on_warning=warn), format, many)
        return
    failed = _generate_many(lm, _lines(file), options, batch_size, format)
    if failed:  # the others were written: exit 3, as for any input left out
        raise SomeSkipped(f"skipped {count(failed, 'prompt')}", "see the errors above")


def _translate(run: Path, source: str | None, file: Path | None, options, batch_size: int,
               device: str, precision: str, format) -> int:
    """Each source to its output, in input order (a source longer than the context is
    cut to it, with a warning); returns how many were skipped."""
    from lmtool.inference.translate import load_seq2seq, translate

    lm = load_seq2seq(run, device=device, precision=precision)
    if source is None and file is None:
        raise BadInput("give a source, --file, or - for stdin")
    if file is not None or source == "-":
        sources = [line.rstrip("\r\n") for line in _lines(file)]
    else:
        sources = [source]
    for g in translate(lm, sources, options, batch_size=batch_size, on_warning=warn):
        if format == OutputFormat.jsonl:
            row = {"source": g.prompt, **g.to_dict()}
            row.pop("prompt")
            typer.echo(json.dumps(row, ensure_ascii=False))
        else:
            typer.echo(g.text)
    return 0


def _stream(lm, prompt: str, options) -> None:
    """One prompt to a terminal: the text as it is written, whole characters only."""
    from lmtool.inference.generate import stream

    out = sys.stdout
    out.write(prompt)
    out.flush()
    for piece in stream(lm, prompt, options, on_warning=warn):
        out.write(piece)
        out.flush()
    out.write("\n")


def _lines(file: Path | None):
    if file is None:
        return sys.stdin
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {file}: {e}") from None


def _generate_many(lm, lines, options, batch_size: int, format) -> int:
    """Generate for every request, printing results in input order; returns how many
    requests failed."""
    from lmtool.inference.requests import generate_requests, parse_requests

    failed = 0
    first = True
    requests = parse_requests(lines, options)
    for item in generate_requests(lm, requests, batch_size=batch_size, on_warning=warn):
        if not isinstance(item, tuple):
            failed += 1
            hint = f" ({item.hint})" if item.hint else ""
            stderr.print(f"lmtool: error: {item.message}{hint}; skipped", markup=False)
            continue
        first = _print(item[1], format, True, first)
    return failed


def _print(generations, format, many: bool, first: bool = True) -> bool:
    """Write results to stdout (text: a blank line between texts); returns `first`."""
    for g in generations:
        if format == OutputFormat.jsonl:
            row = g.to_dict()
            if not many:
                row.pop("index")
            typer.echo(json.dumps(row, ensure_ascii=False))
        else:
            if not first:
                typer.echo("")
            typer.echo(g.full_text)
        first = False
    return first
